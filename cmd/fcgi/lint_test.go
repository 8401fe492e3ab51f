package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

// lintJSON runs fcgi lint --json and returns the results by check.
func lintJSON(t *testing.T, args ...string) (map[string]lintResult, int) {
	t.Helper()
	res := runFcgi(t, nil, append([]string{"lint", "--json"}, args...)...)
	var rs []lintResult
	if err := json.Unmarshal([]byte(res.stdout), &rs); err != nil {
		t.Fatalf("lint --json output: %v", err)
	}
	m := make(map[string]lintResult)
	for _, r := range rs {
		m[r.Check] = r
	}
	return m, res.code
}

func TestLintFcgikit(t *testing.T) {
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello"))
	}))
	res := runFcgi(t, nil, "lint", addr)
	if res.code != 0 {
		t.Fatalf("exit %d: fcgikit's server should pass every check", res.code)
	}
	if strings.Contains(res.stdout, "FAIL") || strings.Contains(res.stdout, "WARN") || !strings.Contains(res.stdout, "0 failed") {
		t.Errorf("output:\n%s", res.stdout)
	}
	if !strings.Contains(res.stdout, "PASS  §5.6") {
		t.Errorf("multiplexing not checked although fcgikit reports FCGI_MPXS_CONNS=1")
	}
}

func TestLintPHPFPM(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	rs, code := lintJSON(t, fpm.Addr(), "--path", "/ping")
	for check, r := range rs {
		if r.Level == lintFail {
			t.Errorf("FAIL %s: %s", check, r.Detail)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
	// PHP-FPM ends its ping page's STDOUT with END_REQUEST alone, and
	// resets the connection on an unknown management record.
	for _, c := range []string{"STDOUT ended by an empty record before END_REQUEST", "UNKNOWN_TYPE answers an unknown management record"} {
		if r := rs[c]; r.Level != lintWarn {
			t.Logf("PHP-FPM now passes %q (%s): update the documented quirks", c, r.Level)
		}
	}
	if r := rs["two interleaved requests on one connection both answered"]; r.Level != lintSkip {
		t.Errorf("multiplex check %s; PHP-FPM says FCGI_MPXS_CONNS=0", r.Level)
	}
}

// TestLintBroken: an application with the classic mistakes fails the
// matching checks and only those, and lint exits 1.
func TestLintBroken(t *testing.T) {
	sock := rawServer(t, serveBroken)
	rs, code := lintJSON(t, "--timeout", "500ms", sock)
	if code != exitFail {
		t.Errorf("exit %d, want 1", code)
	}
	if r := rs["STDOUT ended by an empty record before END_REQUEST"]; r.Level != lintWarn {
		t.Errorf("missing empty STDOUT: %+v, want WARN", r)
	}
	wantFail := []string{
		"exactly one END_REQUEST, no record after it",
		"request ID 258 (two bytes) echoed",
		"GET_VALUES answered with one GET_VALUES_RESULT record",
	}
	for _, c := range wantFail {
		if r, ok := rs[c]; !ok || r.Level != lintFail {
			t.Errorf("check %q: %+v, want FAIL", c, r)
		}
	}
	for _, c := range []string{"END_REQUEST received", "STDOUT starts with a CGI header block"} {
		if r := rs[c]; r.Level != lintPass {
			t.Errorf("check %q: %+v, want PASS", c, r)
		}
	}
}

// serveBroken answers every request with ID 1, no empty STDOUT record and
// two END_REQUESTs, and ignores management records, closing the
// connection only when the peer does.
func serveBroken(nc net.Conn) {
	defer nc.Close()
	r, w := wire.NewReader(nc), wire.NewWriter(nc)
	for {
		rec, err := r.Next()
		if err != nil {
			return
		}
		if rec.Type == wire.TypeStdin && len(rec.Content) == 0 {
			w.WriteRecord(wire.TypeStdout, 1, []byte("Content-Type: text/plain\r\n\r\nhi"))
			w.WriteEndRequest(1, 0, wire.StatusRequestComplete)
			w.WriteEndRequest(1, 0, wire.StatusRequestComplete)
			if w.Flush() != nil {
				return
			}
		}
	}
}

// pageCheck is the check on the status of the page lint tested.
const pageCheck = "the page tested is found (not 404)"

// TestLintPageStatus: lint shows the HTTP status of the page it tested
// and warns when it is a 404, as PHP-FPM answers for a script it cannot
// find ("Primary script unknown"): every check then tested an error page.
func TestLintPageStatus(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})

	res := runFcgi(t, nil, "lint", fpm.Addr(), "--path", "/ping")
	if first, _, _ := strings.Cut(res.stdout, "\n"); first != "page GET /ping: 200 OK" {
		t.Errorf("first line %q, want the page and its status", first)
	}
	rs, code := lintJSON(t, fpm.Addr(), "--path", "/ping")
	if r := rs[pageCheck]; r.Level != lintPass || r.Status != 200 {
		t.Errorf("/ping: %+v, want PASS with status 200", r)
	}
	if code != 0 {
		t.Errorf("/ping: exit %d", code)
	}

	res = runFcgi(t, nil, "lint", fpm.Addr(), "--root", fpm.Root(), "--path", "/missing.php")
	if first, _, _ := strings.Cut(res.stdout, "\n"); first != "page GET /missing.php: 404 Not Found" {
		t.Errorf("first line %q, want the page and its status", first)
	}
	if !strings.Contains(res.stdout, "WARN  §6.2  "+pageCheck) || !strings.Contains(res.stdout, `"Primary script unknown"`) {
		t.Errorf("no WARN naming PHP-FPM's stderr for a 404:\n%s", res.stdout)
	}
	if res.code != 0 {
		t.Errorf("404 without --strict: exit %d, want 0 (a warning)", res.code)
	}
	rs, code = lintJSON(t, "--strict", fpm.Addr(), "--root", fpm.Root(), "--path", "/missing.php")
	if r := rs[pageCheck]; r.Level != lintWarn || r.Status != 404 || !strings.Contains(r.Detail, "prove little") {
		t.Errorf("/missing.php: %+v, want WARN with status 404", r)
	}
	if code != exitFail {
		t.Errorf("404 with --strict: exit %d, want 1", code)
	}
}

// TestLintBusy: an application that accepts but does not answer the first
// request in time, a PHP-FPM pool whose every worker is busy, is exit 5,
// busy, said in one line, not a page of FAILs saying web servers will
// break.
func TestLintBusy(t *testing.T) {
	addr := startSilentServer(t)
	res := runFcgi(t, nil, "lint", "--timeout", "300ms", addr)
	if res.code != exitBusy || !strings.Contains(res.stderr, "busy or stuck") || strings.Contains(res.stdout, "FAIL") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 5, busy, and no FAIL", res.code, res.stdout, res.stderr)
	}
}

package fcgi_test

import (
	"net/http"
	"strings"
	"testing"
)

// An application that floods STDERR, as a PHP script warning in a loop
// does, costs a bounded log: the first 64 KiB of a request's stderr are
// logged, then one line says the rest was dropped.
func TestGatewayStderrFloodBounded(t *testing.T) {
	checkLeaks(t)
	line := strings.Repeat("PHP Warning: again ", 800) + "\n" // ~15 KiB
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_URI"] == "/flood" {
				for range 300 { // ~4.5 MiB
					r.WriteErr(line)
				}
			}
			r.Write("Content-Type: text/plain\r\n\r\nhello")
		}
	})
	g, logs := newGateway(t, app.Addr, docRoot(t))
	if w := serveGW(g, "GET", "/flood", nil); w.Code != http.StatusOK || w.Body.String() != "hello" {
		t.Fatalf("flood: %d %q", w.Code, w.Body.String())
	}
	if n := len(logs.String()); n > 256<<10 {
		t.Fatalf("%d bytes logged for one request's stderr", n)
	}
	if !strings.Contains(logs.String(), "PHP Warning: again") || !strings.Contains(logs.String(), "stderr truncated") {
		t.Fatalf("log lacks the stderr or the truncation note: %q", clipLog(logs.String()))
	}
	// The bound is per request: the next one's stderr is logged again.
	before := strings.Count(logs.String(), "PHP Warning")
	if w := serveGW(g, "GET", "/flood", nil); w.Code != http.StatusOK {
		t.Fatalf("second flood: %d", w.Code)
	}
	if strings.Count(logs.String(), "PHP Warning") <= before {
		t.Fatal("the second request's stderr was not logged")
	}
}

func clipLog(s string) string {
	if len(s) > 2000 {
		return s[:1000] + " ... " + s[len(s)-1000:]
	}
	return s
}

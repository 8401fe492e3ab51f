package peer_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

// checkReaped registers a cleanup that, because it is registered before
// the peers start, runs after their own cleanups, and fails the test if
// any process of theirs (workers included) is still alive. Call it first
// and pass it each peer as it starts.
func checkReaped(t *testing.T) (watch func(...*peer.Process)) {
	var procs []*peer.Process
	t.Cleanup(func() {
		for _, p := range procs {
			if peer.Running(p.PID()) {
				t.Errorf("process group %d (%s) still running after cleanup", p.PID(), p.Dir())
			}
		}
	})
	return func(ps ...*peer.Process) { procs = append(procs, ps...) }
}

// get fetches url with the given request headers and returns the status
// code and body.
func get(t testing.TB, url string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// wantGet checks that GET url answers status with a body containing want.
func wantGet(t testing.TB, url string, header map[string]string, status int, want string) {
	t.Helper()
	code, body := get(t, url, header)
	if code != status || !strings.Contains(body, want) {
		t.Errorf("GET %s: got %d %q, want %d with %q", url, code, body, status, want)
	}
}

// echoURI is a PHP script that prints the request URI and the FastCGI
// role it was run in.
const echoURI = `<?php
header('Content-Type: text/plain');
echo 'uri=', $_SERVER['REQUEST_URI'], ' role=', $_SERVER['FCGI_ROLE'] ?? '', "\n";
`

// startPHP starts PHP-FPM with echo.php in its document root.
func startPHP(t *testing.T, cfg peer.PHPFPMConfig) *peer.PHPFPM {
	fpm := peer.StartPHPFPM(t, cfg)
	fpm.WriteFile("echo.php", echoURI)
	return fpm
}

func TestNginxStatic(t *testing.T) {
	t.Parallel()
	watch := checkReaped(t)
	n := peer.StartNginx(t, peer.NginxConfig{})
	watch(n.Process)
	writeFile(t, n.Root()+"/hello.txt", "hello from nginx\n")
	wantGet(t, n.URL()+"/hello.txt", nil, 200, "hello from nginx")
	wantGet(t, n.URL()+"/missing.txt", nil, 404, "")
	if log := n.ErrorLog(); !strings.Contains(log, "missing.txt") {
		t.Errorf("error log does not mention the 404:\n%s", log)
	}
}

func TestNginxPHPFPM(t *testing.T) {
	t.Parallel()
	watch := checkReaped(t)
	fpm := startPHP(t, peer.PHPFPMConfig{MaxChildren: 2})
	n := peer.StartNginx(t, peer.NginxConfig{
		FastCGI:   fpm.Addr(),
		Keepalive: 1,
		Root:      fpm.Root(),
	})
	watch(fpm.Process, n.Process)
	for range 3 {
		wantGet(t, n.URL()+"/echo.php?a=1", nil, 200, "uri=/echo.php?a=1 role=RESPONDER")
	}
}

func TestPHPFPMPing(t *testing.T) {
	t.Parallel()
	watch := checkReaped(t)
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	watch(fpm.Process)
	out, err := peer.CGIFCGI(t, fpm.Addr(), map[string]string{
		"REQUEST_METHOD":  "GET",
		"SCRIPT_NAME":     "/ping",
		"SCRIPT_FILENAME": "/ping",
		"SERVER_PROTOCOL": "HTTP/1.1",
		"REQUEST_URI":     "/ping",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(out), "\r\n\r\npong") {
		t.Errorf("ping response %q, want headers then pong", out)
	}
}

// writeFile writes content to path or fails the test.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startAuthorizer starts a PHP-FPM pool whose every script of a PHP-FPM pool run authorize.php
// first (auto_prepend_file), which always exits: web servers send an
// Authorizer the path the URL maps to as SCRIPT_FILENAME, here a .txt
// file, which the pool is allowed to "run" so that the prepended script
// gets control. It answers 200 if the request has "X-Allow: yes" and 403
// otherwise.
func startAuthorizer(t *testing.T, tcp bool) *peer.PHPFPM {
	dir := peer.TempDir(t)
	writeFile(t, dir+"/authorize.php", `<?php
if (($_SERVER['FCGI_ROLE'] ?? '') !== 'AUTHORIZER') {
    http_response_code(500);
    exit("not called as an authorizer\n");
}
if (($_SERVER['HTTP_X_ALLOW'] ?? '') === 'yes') {
    header('Variable-REMOTE_USER: alice');
    exit;
}
http_response_code(403);
exit("denied by authorizer\n");
`)
	return peer.StartPHPFPM(t, peer.PHPFPMConfig{
		Dir:         dir,
		TCP:         tcp,
		MaxChildren: 2,
		Pool: "security.limit_extensions = .txt .php\n" +
			"php_admin_value[auto_prepend_file] = " + dir + "/authorize.php\n",
	})
}

func TestHAProxyPHPFPM(t *testing.T) {
	t.Parallel()
	watch := checkReaped(t)
	fpm := startPHP(t, peer.PHPFPMConfig{MaxChildren: 2})
	h := peer.StartHAProxy(t, peer.HAProxyConfig{
		FastCGI:   fpm.Addr(),
		Root:      fpm.Root(),
		MaxConn:   2,
		GetValues: true,
	})
	watch(fpm.Process, h.Process)
	for range 3 {
		wantGet(t, h.URL()+"/echo.php?b=2", nil, 200, "uri=/echo.php?b=2 role=RESPONDER")
	}
}

func TestLighttpdPHPFPM(t *testing.T) {
	t.Parallel()
	watch := checkReaped(t)
	fpm := startPHP(t, peer.PHPFPMConfig{MaxChildren: 2})
	l := peer.StartLighttpd(t, peer.LighttpdConfig{FastCGI: fpm.Addr(), Root: fpm.Root()})
	watch(fpm.Process, l.Process)
	wantGet(t, l.URL()+"/echo.php?c=3", nil, 200, "uri=/echo.php?c=3 role=RESPONDER")
}

func TestLighttpdAuthorizer(t *testing.T) {
	t.Parallel()
	watch := checkReaped(t)
	auth := startAuthorizer(t, false)
	fpm := startPHP(t, peer.PHPFPMConfig{MaxChildren: 1})
	l := peer.StartLighttpd(t, peer.LighttpdConfig{
		Root:             fpm.Root(),
		Authorizer:       auth.Addr(),
		AuthorizerPrefix: "/private/",
		// An extension key: PHP under /private/ is authorized first.
		FastCGI:       fpm.Addr(),
		FastCGIPrefix: ".php",
	})
	watch(auth.Process, fpm.Process, l.Process)
	fpm.WriteFile("private/secret.txt", "static secret\n")
	fpm.WriteFile("private/echo.php", echoURI)
	fpm.WriteFile("public.txt", "static public\n")
	allow := map[string]string{"X-Allow": "yes"}
	wantGet(t, l.URL()+"/private/secret.txt", allow, 200, "static secret")
	wantGet(t, l.URL()+"/private/secret.txt", nil, 403, "denied by authorizer")
	wantGet(t, l.URL()+"/private/echo.php", allow, 200, "uri=/private/echo.php role=RESPONDER")
	wantGet(t, l.URL()+"/private/echo.php", nil, 403, "denied by authorizer")
	wantGet(t, l.URL()+"/public.txt", nil, 200, "static public")
}

func TestApacheProxyFCGI(t *testing.T) {
	t.Parallel()
	for _, reuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "enablereuse"}[reuse], func(t *testing.T) {
			t.Parallel()
			watch := checkReaped(t)
			fpm := startPHP(t, peer.PHPFPMConfig{MaxChildren: 2})
			a := peer.StartApache(t, peer.ApacheConfig{
				FastCGI:     fpm.Addr(),
				EnableReuse: reuse,
				Root:        fpm.Root(),
			})
			watch(fpm.Process, a.Process)
			for range 3 {
				wantGet(t, a.URL()+"/echo.php?d=4", nil, 200, "uri=/echo.php?d=4 role=RESPONDER")
			}
		})
	}
}

func TestApacheAuthnzFCGI(t *testing.T) {
	t.Parallel()
	watch := checkReaped(t)
	fpm := startAuthorizer(t, true)
	a := peer.StartApache(t, peer.ApacheConfig{Authorizer: fpm.Addr(), AuthorizerPrefix: "/private/"})
	watch(fpm.Process, a.Process)
	mkdir(t, a.Root()+"/private")
	writeFile(t, a.Root()+"/private/secret.txt", "static secret\n")
	writeFile(t, a.Root()+"/public.txt", "static public\n")
	wantGet(t, a.URL()+"/private/secret.txt", map[string]string{"X-Allow": "yes"}, 200, "static secret")
	wantGet(t, a.URL()+"/private/secret.txt", nil, 403, "denied by authorizer")
	wantGet(t, a.URL()+"/public.txt", nil, 200, "static public")
	if log := readFile(t, a.Dir()+"/access.log"); !strings.Contains(log, " alice ") {
		t.Errorf("access log does not name the user the authorizer returned:\n%s", log)
	}
}

// mkdir creates dir, world-readable, or fails the test.
func mkdir(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// readFile returns the contents of path or fails the test.
func readFile(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// fakeTB records what Require asks of its test instead of stopping it.
type fakeTB struct {
	testing.TB
	skip, fatal string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skipf(format string, args ...any) {
	if f.skip == "" {
		f.skip = fmt.Sprintf(format, args...)
	}
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	if f.fatal == "" {
		f.fatal = fmt.Sprintf(format, args...)
	}
}

func TestRequire(t *testing.T) {
	if testing.Short() {
		t.Skip("Require skips everything in -short mode")
	}
	const missing = "fcgikit-no-such-binary"
	for _, tc := range []struct {
		ci          string
		skip, fatal bool
	}{
		{ci: "", skip: true},
		{ci: "false", skip: true},
		{ci: "true", fatal: true},
		{ci: "1", fatal: true}, // not a documented value
	} {
		t.Setenv("CI", tc.ci)
		f := &fakeTB{TB: t}
		if path := peer.Require(f, missing, "fcgikit-pkg"); path != "" {
			t.Errorf("CI=%q: Require returned %q for a missing binary", tc.ci, path)
		}
		if tc.fatal != (f.fatal != "") || (!tc.fatal && tc.skip != (f.skip != "")) {
			t.Errorf("CI=%q: skip %q, fatal %q; want skip %v, fatal %v", tc.ci, f.skip, f.fatal, tc.skip, tc.fatal)
		}
		if msg := f.skip + f.fatal; !strings.Contains(msg, "apt-get install fcgikit-pkg") {
			t.Errorf("CI=%q: message %q does not name the package", tc.ci, msg)
		}
	}
	f := &fakeTB{TB: t}
	if path := peer.Require(f, "sh", "dash"); path == "" || f.skip != "" || f.fatal != "" {
		t.Errorf("Require(sh) = %q, skip %q, fatal %q", path, f.skip, f.fatal)
	}
}

// TestPrometheusScrape serves a counter that rises with each scrape and
// checks that Prometheus scrapes it and answers queries with its value,
// and that CheckMetrics accepts a clean exposition and rejects a bad one.
func TestPrometheusScrape(t *testing.T) {
	watch := checkReaped(t)
	var scrapes atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := scrapes.Add(1)
		fmt.Fprintf(w, "# HELP peer_test_scrapes_total Scrapes so far.\n# TYPE peer_test_scrapes_total counter\npeer_test_scrapes_total %d\n", n)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	p := peer.StartPrometheus(t, peer.PrometheusConfig{Targets: []string{l.Addr().String()}, Job: "peertest"})
	watch(p.Process)
	p.WaitScraped(t, 20*time.Second)
	got := p.Query(t, `peer_test_scrapes_total{job="peertest"}`)
	if len(got) != 1 || got[0].Value < 1 || got[0].Value > float64(scrapes.Load()) {
		t.Fatalf("query = %v, want one sample in [1, %d]", got, scrapes.Load())
	}
	if got[0].Labels["instance"] != l.Addr().String() {
		t.Errorf("instance = %q, want %q", got[0].Labels["instance"], l.Addr().String())
	}

	peer.CheckMetrics(t, []byte("# HELP ok_total Fine.\n# TYPE ok_total counter\nok_total 1\n"))
	ft := &fakeTB{TB: t}
	peer.CheckMetrics(ft, []byte("# TYPE bad counter\nbad{ 1\n"))
	if ft.fatal == "" {
		t.Error("CheckMetrics accepted a malformed exposition")
	}
}

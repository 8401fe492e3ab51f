package fcgi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// The Gateway's own errors get the configured pages, keeping their status,
// whether the page is a file or a handler that writes 200; the
// application's error responses pass through untouched.
func TestGatewayErrorPagesPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("slow.php", `<?php sleep(3); echo "late";`)
	fpm.WriteFile("api.php", `<?php http_response_code((int)$_GET['s']); header('Content-Type: application/json'); echo '{"error":"app"}';`)
	pages := peer.TempDir(t)
	page := func(name, body string) http.Handler {
		p := filepath.Join(pages, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		h, err := fcgi.ErrorPageFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	g, _ := newGateway(t, fpm.Addr(), fpm.Root())
	g.Client.ResponseHeaderTimeout = time.Second
	g.MaxBodyBytes = 10
	g.ErrorPages = map[int]http.Handler{
		504: page("504.html", "<h1>too slow</h1>"),
		413: page("413.json", `{"error":"too large"}`),
		431: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("fields too large"))
		}),
		502: page("502.html", "<h1>down</h1>"),
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)

	check := func(what string, resp *http.Response, body []byte, code int, ctype, want string) {
		t.Helper()
		if resp.StatusCode != code || resp.Header.Get("Content-Type") != ctype || string(body) != want {
			t.Errorf("%s: %d %q %q; want %d %q %q", what, resp.StatusCode, resp.Header.Get("Content-Type"), body, code, ctype, want)
		}
	}
	resp, body := sfGet(t, "GET", srv.URL+"/slow.php")
	check("timeout", resp, body, 504, "text/html; charset=utf-8", "<h1>too slow</h1>")

	req, _ := http.NewRequest("POST", srv.URL+"/api.php", strings.NewReader(strings.Repeat("x", 100)))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b2 := readAllClose(t, r2)
	check("large body", r2, b2, 413, "application/json", `{"error":"too large"}`)

	resp, body = sfGet(t, "GET", srv.URL+"/api.php", "X-Big", strings.Repeat("v", 70000))
	check("large field", resp, body, 431, "text/plain; charset=utf-8", "fields too large")

	for _, s := range []string{"404", "502", "503"} {
		resp, body = sfGet(t, "GET", srv.URL+"/api.php?s="+s)
		if resp.StatusCode != atoi(s) || string(body) != `{"error":"app"}` || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("the application's %s: %d %q %q; want it untouched", s, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}

	fpm.Stop()
	resp, body = sfGet(t, "GET", srv.URL+"/api.php?s=200")
	check("backend down", resp, body, 502, "text/html; charset=utf-8", "<h1>down</h1>")
	resp, body = sfGet(t, "HEAD", srv.URL+"/api.php?s=200")
	check("backend down, HEAD", resp, body, 502, "text/html; charset=utf-8", "")
}

func readAllClose(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// The classic PHP-FPM failures, provoked for real, are logged with the
// request and a hint of what to check.
func TestGatewayPHPFPMHints(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name   string
		pool   string
		setup  func(t *testing.T, fpm *peer.PHPFPM, g *fcgi.Gateway) string // returns the path to request
		status int
		hint   string
	}{
		{
			name: "primary script unknown",
			setup: func(t *testing.T, fpm *peer.PHPFPM, g *fcgi.Gateway) string {
				// The gateway forwards every path; PHP-FPM does not have
				// the gateway's root (another container's mount).
				g.PassThrough = true
				g.Root = filepath.Join(peer.TempDir(t), "public")
				return "/index.php"
			},
			status: 404,
			hint:   "same path as the gateway",
		},
		{
			name: "security.limit_extensions",
			setup: func(t *testing.T, fpm *peer.PHPFPM, g *fcgi.Gateway) string {
				g.ScriptExt = ".phtml"
				fpm.WriteFile("page.phtml", `<?php echo "ran";`)
				return "/page.phtml"
			},
			status: 403,
			hint:   "security.limit_extensions",
		},
		{
			name: "open_basedir",
			pool: "php_admin_value[open_basedir] = /nonexistent\n",
			setup: func(t *testing.T, fpm *peer.PHPFPM, g *fcgi.Gateway) string {
				fpm.WriteFile("page.php", `<?php echo "ran";`)
				return "/page.php"
			},
			status: 404,
			hint:   "open_basedir",
		},
		{
			name: "access denied",
			pool: "user = nobody\ngroup = nogroup\n",
			setup: func(t *testing.T, fpm *peer.PHPFPM, g *fcgi.Gateway) string {
				p := fpm.WriteFile("page.php", `<?php echo "ran";`)
				if err := os.Chmod(p, 0o600); err != nil {
					t.Fatal(err)
				}
				return "/page.php"
			},
			status: 403,
			hint:   "cannot read the script",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 1, StderrToFastCGI: true, Pool: tc.pool})
			g, logs := newGateway(t, fpm.Addr(), fpm.Root())
			path := tc.setup(t, fpm, g)
			srv := httptest.NewServer(g)
			t.Cleanup(srv.Close)
			resp, body := sfGet(t, "GET", srv.URL+path)
			if resp.StatusCode != tc.status {
				t.Errorf("%s: %d %q, want %d", path, resp.StatusCode, body, tc.status)
			}
			var line string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "hint=") {
					line = l
				}
			}
			if !strings.Contains(line, tc.hint) || !strings.Contains(line, "uri="+path) {
				t.Errorf("no hint %q with the request in the log:\n%s\nPHP-FPM:\n%s", tc.hint, logs, fpm.ErrorLog())
			}
		})
	}
}

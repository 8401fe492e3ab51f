package fcgi_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/peer"
)

// hintsPHP returns docs/early-hints.md's PHP page: PHP sends its header
// block, with Status: 103, on flush(); the page echoes its final header block
// after it.
func hintsPHP(t *testing.T) string {
	doc, err := os.ReadFile("docs/early-hints.md")
	if err != nil {
		t.Fatal(err)
	}
	_, code, ok := strings.Cut(string(doc), "```php\n")
	code, _, ok2 := strings.Cut(code, "\n```")
	if !ok || !ok2 {
		t.Fatal("docs/early-hints.md: no php block")
	}
	return code
}

const hintsPHPPage = "<!doctype html><link rel=stylesheet href=/s.css>"

// A PHP-FPM page sends a 103 block then its page when the web server
// announces the convention: the Gateway passes the 103 on, with its Link
// alone, to net/http's client (seen through httptrace) over HTTP/1.1 and
// HTTP/2, and to curl; behind nginx the page sends none.
func TestEarlyHintsPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("hints.php", hintsPHP(t))
	g, h1, _ := phpGateway(t, fpm, 2)
	h2 := httptest.NewUnstartedServer(g)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	defer h2.Close()
	for _, s := range []*httptest.Server{h1, h2} {
		seen, resp, body := traceGet(t, s.Client(), s.URL+"/hints.php")
		seen.check(t, http.StatusEarlyHints)
		// PHP puts its default Content-Type in the 103 block too; only the
		// Link reaches the client.
		if h := seen.hdrs[0]; len(h) != 1 {
			t.Errorf("%s: 103 fields %v", resp.Proto, h)
		}
		if resp.StatusCode != 200 || body != hintsPHPPage || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get("Link") != "" {
			t.Fatalf("%s: %d %v %q", resp.Proto, resp.StatusCode, resp.Header, body)
		}
	}

	curl := peer.Require(t, "curl", "curl")
	out, err := exec.Command(curl, "-sv", h1.URL+"/hints.php").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if s := string(out); !strings.Contains(s, "< HTTP/1.1 103 Early Hints") || !strings.Contains(s, "< Link: </s.css>; rel=preload; as=style") || !strings.HasSuffix(s, hintsPHPPage) {
		t.Fatalf("curl -v:\n%s", s)
	}

	// nginx does not announce the convention: the same page sends no 103
	// block, and arrives whole with its Content-Type.
	ngx := nginxPHP(t, fpm)
	seen, resp, body := traceGet(t, httpClient(t), ngx.URL()+"/hints.php")
	seen.check(t)
	if resp.StatusCode != 200 || body != hintsPHPPage || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("nginx: %d %v %q", resp.StatusCode, resp.Header, body)
	}
}

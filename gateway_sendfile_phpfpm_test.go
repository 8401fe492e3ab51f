package fcgi_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
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

// accelApp answers as Symfony's BinaryFileResponse does behind a server
// that serves files: its own fields, a Content-Length for the file and no
// body, and the field naming the file (?h= which field, ?p= its value).
const accelApp = `<?php
header('Content-Type: application/pdf');
header('Content-Disposition: attachment; filename="report.pdf"');
header('Cache-Control: private, max-age=60');
header('Set-Cookie: dl=1; path=/');
header('X-Custom: app');
header('Content-Length: 999');
header($_GET['h'] . ': ' . $_GET['p']);
`

// sendfileSetup starts PHP-FPM with accelApp and a private directory outside
// the document root holding f.txt, a secret beside it and a symbolic link
// from inside to the secret.
func sendfileSetup(t *testing.T, children int) (fpm *peer.PHPFPM, private string, content []byte) {
	fpm = startFPM(t, peer.PHPFPMConfig{MaxChildren: children})
	fpm.WriteFile("dl.php", accelApp)
	fpm.WriteFile("env.php", dumpServer)
	fpm.WriteFile("hello.php", `<?php echo "hello";`)
	base := peer.TempDir(t)
	private = filepath.Join(base, "private")
	if err := os.MkdirAll(private, 0o755); err != nil {
		t.Fatal(err)
	}
	content = make([]byte, 10000)
	rand.Read(content)
	writeSendfileTestFile(t, filepath.Join(private, "f.txt"), content)
	writeSendfileTestFile(t, filepath.Join(base, "secret.txt"), []byte("secret"))
	if err := os.Symlink(filepath.Join(base, "secret.txt"), filepath.Join(private, "link.txt")); err != nil {
		t.Fatal(err)
	}
	return fpm, private, content
}

func writeSendfileTestFile(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sendfileGateway(t *testing.T, fpm *peer.PHPFPM, private string, children int) (*httptest.Server, *logBuffer) {
	g, logs := newGateway(t, fpm.Addr(), fpm.Root())
	g.Client.MaxConnsPerBackend = children
	g.Client.ResponseHeaderTimeout = 10 * time.Second
	g.ServeStatic = true
	g.Sendfile = &fcgi.Sendfile{Locations: []fcgi.SendfileLocation{{Prefix: "/protected/", Dir: private}}}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv, logs
}

func sfGet(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// An X-Accel-Redirect or X-Sendfile answer from PHP is replaced by the file,
// served with Range, conditional requests and HEAD, with the application's
// fields that nginx keeps and none of the others, and never the field.
func TestGatewaySendfilePHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm, private, content := sendfileSetup(t, 2)
	srv, logs := sendfileGateway(t, fpm, private, 2)
	accel := srv.URL + "/dl.php?h=X-Accel-Redirect&p=/protected/f.txt"

	resp, body := sfGet(t, "GET", accel)
	if resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("X-Accel-Redirect: %d, %d bytes; want 200 and the file's %d", resp.StatusCode, len(body), len(content))
	}
	for k, want := range map[string]string{
		"Content-Type":        "application/pdf",
		"Content-Disposition": `attachment; filename="report.pdf"`,
		"Cache-Control":       "private, max-age=60",
		"Set-Cookie":          "dl=1; path=/",
		"Content-Length":      fmt.Sprint(len(content)),
		"Accept-Ranges":       "bytes",
		"X-Custom":            "",
		"X-Accel-Redirect":    "",
		"X-Powered-By":        "",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	lastMod, etag := resp.Header.Get("Last-Modified"), resp.Header.Get("Etag")
	if lastMod == "" || etag == "" {
		t.Errorf("Last-Modified %q, ETag %q: want both", lastMod, etag)
	}

	resp, body = sfGet(t, "GET", accel, "Range", "bytes=10-19")
	if resp.StatusCode != 206 || !bytes.Equal(body, content[10:20]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(content)) {
		t.Errorf("Range: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Range"), body)
	}
	resp, body = sfGet(t, "GET", accel, "Range", "bytes=10-19", "If-Range", etag)
	if resp.StatusCode != 206 || len(body) != 10 {
		t.Errorf("If-Range with the ETag: %d, %d bytes; want 206, 10", resp.StatusCode, len(body))
	}
	resp, body = sfGet(t, "GET", accel, "Range", "bytes=10-19", "If-Range", `"stale"`)
	if resp.StatusCode != 200 || len(body) != len(content) {
		t.Errorf("If-Range with a stale ETag: %d, %d bytes; want 200 and the whole file", resp.StatusCode, len(body))
	}
	if resp, _ = sfGet(t, "GET", accel, "If-None-Match", etag); resp.StatusCode != 304 {
		t.Errorf("If-None-Match: %d, want 304", resp.StatusCode)
	}
	if resp, _ = sfGet(t, "GET", accel, "If-Modified-Since", lastMod); resp.StatusCode != 304 {
		t.Errorf("If-Modified-Since: %d, want 304", resp.StatusCode)
	}
	resp, body = sfGet(t, "HEAD", accel)
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(content)) {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
	resp, body = sfGet(t, "POST", accel)
	if resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Errorf("POST: %d, %d bytes; want the file, as for a GET", resp.StatusCode, len(body))
	}
	resp, body = sfGet(t, "GET", srv.URL+"/dl.php?h=X-Sendfile&p="+filepath.Join(private, "f.txt"))
	if resp.StatusCode != 200 || !bytes.Equal(body, content) || resp.Header.Get("X-Sendfile") != "" {
		t.Errorf("X-Sendfile: %d, %d bytes, X-Sendfile %q", resp.StatusCode, len(body), resp.Header.Get("X-Sendfile"))
	}

	// Outside the locations, escaping them, or no file: 404, logged, and
	// nothing of the application's.
	for _, q := range []string{
		"h=X-Accel-Redirect&p=/elsewhere/f.txt",
		"h=X-Accel-Redirect&p=/protected/../secret.txt",
		"h=X-Accel-Redirect&p=/protected/%252e%252e/secret.txt",
		"h=X-Accel-Redirect&p=/protected/link.txt",
		"h=X-Accel-Redirect&p=/protected/missing.txt",
		"h=X-Sendfile&p=/etc/passwd",
		"h=X-Sendfile&p=" + filepath.Join(private, "..", "secret.txt"),
		"h=X-Sendfile&p=" + filepath.Join(private, "link.txt"),
		"h=X-Sendfile&p=f.txt",
	} {
		before := len(logs.String())
		resp, body := sfGet(t, "GET", srv.URL+"/dl.php?"+q)
		if resp.StatusCode != 404 || bytes.Contains(body, []byte("secret")) || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("%s: %d %q, Set-Cookie %q; want a bare 404", q, resp.StatusCode, body, resp.Header.Get("Set-Cookie"))
		}
		if l := logs.String()[before:]; !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "status=404") {
			t.Errorf("%s: not logged: %s", q, l)
		}
	}
}

// The application learns, from X-Sendfile-Type and X-Accel-Mapping, that
// the Gateway serves its files, whatever the client claims; Symfony's
// BinaryFileResponse reads these two.
func TestGatewaySendfileParamsPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm, private, _ := sendfileSetup(t, 1)
	srv, _ := sendfileGateway(t, fpm, private, 1)
	_, body := sfGet(t, "GET", srv.URL+"/env.php", "X-Sendfile-Type", "X-Sendfile", "X-Accel-Mapping", "/=/")
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if got := env["HTTP_X_SENDFILE_TYPE"]; got != "X-Accel-Redirect" {
		t.Errorf("HTTP_X_SENDFILE_TYPE = %q", got)
	}
	if got, want := env["HTTP_X_ACCEL_MAPPING"], private+"/=/protected/"; got != want {
		t.Errorf("HTTP_X_ACCEL_MAPPING = %q, want %q", got, want)
	}
}

// The PHP worker is free as soon as the application's header has arrived:
// with one worker, a page is served while a client slowly downloads a
// 50 MB file the application handed over.
func TestGatewaySendfileFreesWorkerPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm, private, _ := sendfileSetup(t, 1)
	big := make([]byte, 50<<20)
	rand.Read(big)
	writeSendfileTestFile(t, filepath.Join(private, "big.bin"), big)
	srv, _ := sendfileGateway(t, fpm, private, 1)

	req, _ := http.NewRequest("GET", srv.URL+"/dl.php?h=X-Accel-Redirect&p=/protected/big.bin", nil)
	req.Header.Set("Range", "bytes=1000-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 206 {
		t.Fatalf("download: %d, want 206", resp.StatusCode)
	}
	first := make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, big[1000:1000+len(first)]) {
		t.Fatal("download: wrong bytes")
	}

	// The download is stalled, far from its end; the only worker answers.
	start := time.Now()
	page, body := sfGet(t, "GET", srv.URL+"/hello.php")
	if page.StatusCode != 200 || string(body) != "hello" || time.Since(start) > 5*time.Second {
		t.Errorf("page during the download: %d %q after %v", page.StatusCode, body, time.Since(start))
	}

	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(first, rest...), big[1000:]) {
		t.Errorf("download: %d bytes, not the file's end", len(first)+len(rest))
	}
}

// nginx, with the same PHP application and an internal location for the
// files, answers X-Accel-Redirect with the same status, fields and bytes.
func TestGatewaySendfileMatchesNginx(t *testing.T) {
	checkLeaks(t)
	fpm, private, _ := sendfileSetup(t, 2)
	dir := peer.TempDir(t)
	ngx := peer.StartNginx(t, peer.NginxConfig{Dir: dir, Root: fpm.Root(), Server: fmt.Sprintf(`
        location /protected/ { internal; alias %s/; }
        location ~ \.php$ {
            include %s/fastcgi_params;
            fastcgi_pass unix:%s;
        }
`, private, dir, fpm.Socket())})
	srv, _ := sendfileGateway(t, fpm, private, 2)

	ignore := map[string]bool{"Date": true, "Server": true, "Connection": true}
	target := "/dl.php?h=X-Accel-Redirect&p=/protected/f.txt"
	for _, rq := range [][]string{
		{"GET"},
		{"HEAD"},
		{"GET", "Range", "bytes=100-199"},
		{"GET", "Range", "bytes=-50"},
		{"GET", "Range", "bytes=20000-"},
		{"POST"},
	} {
		nr, nb := sfGet(t, rq[0], ngx.URL()+target, rq[1:]...)
		gr, gb := sfGet(t, rq[0], srv.URL+target, rq[1:]...)
		what := strings.Join(rq, " ")
		if nr.StatusCode != gr.StatusCode {
			t.Errorf("%s: status %d via nginx, %d via the gateway", what, nr.StatusCode, gr.StatusCode)
		}
		if nr.StatusCode < 400 && !bytes.Equal(nb, gb) {
			t.Errorf("%s: %d bytes via nginx, %d via the gateway", what, len(nb), len(gb))
		}
		if nr.StatusCode >= 400 {
			continue // each server's own error page
		}
		for k := range nr.Header {
			if !ignore[k] && nr.Header.Get(k) != gr.Header.Get(k) {
				t.Errorf("%s: %s = %q via nginx, %q via the gateway", what, k, nr.Header.Get(k), gr.Header.Get(k))
			}
		}
		for k := range gr.Header {
			if _, ok := nr.Header[k]; !ok && !ignore[k] {
				t.Errorf("%s: %s = %q via the gateway only", what, k, gr.Header.Get(k))
			}
		}
	}
}

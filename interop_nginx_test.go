package fcgi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// startNginxFor starts nginx in front of app. With keepalive > 0 it keeps
// FastCGI connections (fastcgi_keep_conn on, upstream keepalive) and
// serves /sse/ unbuffered.
func startNginxFor(t *testing.T, app *interopApp, keepalive int) *peer.Nginx {
	t.Helper()
	dir := peer.TempDir(t)
	cfg := peer.NginxConfig{Dir: dir, FastCGI: app.addr, Keepalive: keepalive}
	if keepalive > 0 {
		cfg.Server = fmt.Sprintf(`        location /sse/ {
            fastcgi_pass fastcgi_backend;
            include %s/fastcgi_params;
            fastcgi_keep_conn on;
            fastcgi_buffering off;
        }
`, dir)
	}
	return peer.StartNginx(t, cfg)
}

// httpClient returns a client that keeps its connections to nginx, closed
// when t ends.
func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// httpGet fetches url and returns the status and body.
func httpGet(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// badLogLines are nginx error-log lines that mean the application closed or
// reset a connection nginx was still using.
var badLogLines = []string{"reset by peer", "upstream prematurely closed", "recv() failed"}

// logMark remembers how much of nginx's error log a test has seen.
type logMark struct {
	n   *peer.Nginx
	off int
}

func markLog(n *peer.Nginx) logMark { return logMark{n, len(n.ErrorLog())} }

// checkClean fails t if nginx logged a bad line since m.
func (m logMark) checkClean(t *testing.T) {
	t.Helper()
	log := m.n.ErrorLog()[m.off:]
	for line := range strings.Lines(log) {
		for _, bad := range badLogLines {
			if strings.Contains(line, bad) {
				t.Errorf("nginx error log: %s", strings.TrimSpace(line))
			}
		}
	}
}

// TestNginx runs the fcgikit server behind a real nginx, over TCP and over
// a unix socket, and talks to nginx over HTTP.
func TestNginx(t *testing.T) {
	peer.Require(t, "nginx", "nginx")
	forEachNetwork(t, func(t *testing.T, network string) {
		app := startInteropApp(t, network)
		kept := startNginxFor(t, app, 8)
		unkept := startNginxFor(t, app, 0)
		client := httpClient(t)

		t.Run("KeepConnReuse", func(t *testing.T) { testKeepConnReuse(t, app, kept, client) })
		t.Run("NoKeepConn", func(t *testing.T) { testNoKeepConn(t, app, unkept, client) })
		t.Run("Upload", func(t *testing.T) {
			for _, n := range []*peer.Nginx{kept, unkept} {
				testUpload(t, n, client)
			}
		})
		t.Run("UnreadUpload", func(t *testing.T) {
			for _, n := range []*peer.Nginx{kept, unkept} {
				testUnreadUpload(t, n, client)
			}
		})
		t.Run("ClientAbortCancels", func(t *testing.T) { testClientAbort(t, app, kept) })
		t.Run("Fidelity", func(t *testing.T) { testFidelity(t, kept, client) })
		t.Run("ServerSentEvents", func(t *testing.T) { testSSE(t, app, kept, client) })
		t.Run("PanicGives500", func(t *testing.T) { testPanic(t, app, kept, client) })
	})
}

// testKeepConnReuse is the seed scenario of issue #2: many requests over
// kept connections, where nginx sends request ID 1 every time. Every
// response must be right, nginx must log no reset or premature close, and
// the server must have accepted far fewer connections than requests.
func testKeepConnReuse(t *testing.T, app *interopApp, n *peer.Nginx, client *http.Client) {
	const sequential, clients, perClient = 3000, 8, 300
	mark := markLog(n)
	accepted0, warnings0 := app.accepted.Load(), app.warnings.Load()
	start := time.Now()

	check := func(i int) error {
		path := fmt.Sprintf("/seq/%d", i)
		query := "n=" + strconv.Itoa(i) + "&s=a%20b"
		resp, err := client.Get(n.URL() + path + "?" + query)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if want := path + "|" + query; resp.StatusCode != http.StatusOK || string(body) != want {
			return fmt.Errorf("GET %s?%s: %d %q, want 200 %q", path, query, resp.StatusCode, body, want)
		}
		return nil
	}
	for i := range sequential {
		if err := check(i); err != nil {
			t.Fatal(err)
		}
	}
	seqTime := time.Since(start)

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Go(func() {
			for i := range perClient {
				if err := check(100000*(c+1) + i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	total := sequential + clients*perClient
	conns := app.accepted.Load() - accepted0
	t.Logf("%d requests (%d sequential in %v, then %d×%d concurrent) in %v over %d FastCGI connections",
		total, sequential, seqTime.Round(time.Millisecond), clients, perClient, time.Since(start).Round(time.Millisecond), conns)
	mark.checkClean(t)
	// nginx keeps up to 8 idle connections and opens more when those are
	// busy (11 were seen on an idle machine). The bound leaves room for
	// that and still means over 160 requests per connection.
	if conns < 1 || conns > 4*8 {
		t.Errorf("%d FastCGI connections accepted for %d requests, want 1 to 32", conns, total)
	}
	if w := app.warnings.Load() - warnings0; w != 0 {
		t.Errorf("server logged %d warnings", w)
	}
}

// testNoKeepConn: without fastcgi_keep_conn every request comes on its own
// connection, which the server closes after answering, cleanly.
func testNoKeepConn(t *testing.T, app *interopApp, n *peer.Nginx, client *http.Client) {
	const requests = 200
	mark := markLog(n)
	accepted0, closed0 := app.accepted.Load(), app.closed.Load()
	for i := range requests {
		path := "/nokeep/" + strconv.Itoa(i)
		if code, body := httpGet(t, client, n.URL()+path+"?q=1"); code != http.StatusOK || body != path+"|q=1" {
			t.Fatalf("GET %s: %d %q", path, code, body)
		}
	}
	if conns := app.accepted.Load() - accepted0; conns != requests {
		t.Errorf("%d connections accepted for %d requests, want one each", conns, requests)
	}
	// The server closes each one after its response, without waiting
	// for nginx to.
	deadline := time.Now().Add(5 * time.Second)
	for app.closed.Load()-closed0 < requests && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if closed := app.closed.Load() - closed0; closed != requests {
		t.Errorf("%d connections closed after %d requests, want one each", closed, requests)
	}
	mark.checkClean(t)
}

// testUpload: a 10 MiB body goes through nginx and comes back byte-exact.
func testUpload(t *testing.T, n *peer.Nginx, client *http.Client) {
	mark := markLog(n)
	body := make([]byte, 10<<20)
	rng := rand.NewChaCha8([32]byte{2})
	rng.Read(body)
	want := sha256.Sum256(body)
	resp, err := client.Post(n.URL()+"/upload", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || got != int64(len(body)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("upload echo: status %d, %d bytes, sha256 %x; want 200, %d bytes, %x", resp.StatusCode, got, h.Sum(nil), len(body), want)
	}
	mark.checkClean(t)
}

// testUnreadUpload: a handler that answers without reading a 4 MiB body,
// then more requests, with and without kept connections: no 502, nothing
// logged. Without keep_conn, nginx is still sending the body when the
// response arrives; the server must take it all before closing.
func testUnreadUpload(t *testing.T, n *peer.Nginx, client *http.Client) {
	mark := markLog(n)
	body := bytes.Repeat([]byte("u"), 4<<20)
	for range 3 {
		resp, err := client.Post(n.URL()+"/ignore", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(got) != "not read" {
			t.Fatalf("POST /ignore: %d %q", resp.StatusCode, got)
		}
		for i := range 20 {
			path := "/after-ignore/" + strconv.Itoa(i)
			if code, got := httpGet(t, client, n.URL()+path); code != http.StatusOK || got != path+"|" {
				t.Fatalf("GET %s after an unread body: %d %q", path, code, got)
			}
		}
	}
	mark.checkClean(t)
}

// testClientAbort: a client that hangs up during a slow handler makes
// nginx close the FastCGI connection, which cancels the handler's context
// within a second.
func testClientAbort(t *testing.T, app *interopApp, n *peer.Nginx) {
	c, err := net.Dial("tcp", strings.TrimPrefix(n.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-app.slowStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("/slow never reached the handler")
	}
	closedAt := time.Now()
	c.Close()
	select {
	case res := <-app.cancelled:
		d := res.at.Sub(closedAt)
		t.Logf("handler cancelled %v after the client closed, cause %v", d, res.cause)
		if d > time.Second {
			t.Errorf("handler cancelled %v after the client closed, want under 1s", d)
		}
		if !errors.Is(res.cause, fcgi.ErrConnClosed) {
			t.Errorf("cancellation cause %v, want ErrConnClosed", res.cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler not cancelled 5s after the client closed")
	}
}

// testFidelity: what the client sent reaches the handler through nginx's
// CGI variables intact.
func testFidelity(t *testing.T, n *peer.Nginx, client *http.Client) {
	const uri = "/info/a%20b/c%2Fd%C3%A9?x=1&y=%26z&e=%C3%A9"
	req, err := http.NewRequest("GET", n.URL()+uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "fidelity.example:8080"
	req.Header.Set("X-Custom", "custom value")
	var local string
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { local = info.Conn.LocalAddr().String() },
	}))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got fidelity
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	check("Method", got.Method, "GET")
	check("RequestURI", got.RequestURI, uri)
	check("URL.Path", got.Path, "/info/a b/c/dé")
	check("URL.RawQuery", got.RawQuery, "x=1&y=%26z&e=%C3%A9")
	check("Query y", strings.Join(got.Query["y"], ","), "&z")
	check("Query e", strings.Join(got.Query["e"], ","), "é")
	check("Host", got.Host, "fidelity.example:8080")
	check("RemoteAddr", got.RemoteAddr, local)
	check("X-Custom", got.Custom, "custom value")
	if !strings.HasPrefix(got.RemoteAddr, "127.0.0.1:") {
		t.Errorf("RemoteAddr %q, want 127.0.0.1:port", got.RemoteAddr)
	}
	env := got.Env
	root := n.Root()
	check("DOCUMENT_ROOT", env["DOCUMENT_ROOT"], root)
	check("SCRIPT_FILENAME", env["SCRIPT_FILENAME"], root+"/info/a b/c/dé")
	check("DOCUMENT_URI", env["DOCUMENT_URI"], "/info/a b/c/dé")
	check("GATEWAY_INTERFACE", env["GATEWAY_INTERFACE"], "CGI/1.1")
	check("REQUEST_SCHEME", env["REQUEST_SCHEME"], "http")
	check("REDIRECT_STATUS", env["REDIRECT_STATUS"], "200")
	check("SERVER_ADDR", env["SERVER_ADDR"], "127.0.0.1")
	check("SERVER_PORT", env["SERVER_PORT"], n.URL()[strings.LastIndexByte(n.URL(), ':')+1:])
	if !strings.HasPrefix(env["SERVER_SOFTWARE"], "nginx/") {
		t.Errorf("SERVER_SOFTWARE = %q, want nginx/...", env["SERVER_SOFTWARE"])
	}
	for _, k := range []string{"REQUEST_URI", "QUERY_STRING", "HTTP_X_CUSTOM", "REMOTE_ADDR"} {
		if v, ok := env[k]; ok {
			t.Errorf("ProcessEnv has %s=%q, which the request already carries", k, v)
		}
	}
}

// testSSE: with fastcgi_buffering off, a flushed event reaches the client
// while the handler is still running (it waits for the test to release it).
func testSSE(t *testing.T, app *interopApp, n *peer.Nginx, client *http.Client) {
	// The handler does not return until released below: without a flush
	// that reaches the client, the headers never come.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", n.URL()+"/sse/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, ct)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				lines <- sc.Text()
			}
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
			return ""
		}
	}
	if l := next(); l != "data: first" {
		t.Fatalf("first event %q", l)
	}
	close(app.sseRelease)
	if l := next(); l != "data: second" {
		t.Fatalf("second event %q", l)
	}
	for range lines {
	}
}

// testPanic: a panicking handler gives the client a 500, and the kept
// connection it came on goes on serving.
func testPanic(t *testing.T, app *interopApp, n *peer.Nginx, client *http.Client) {
	mark := markLog(n)
	accepted0, closed0 := app.accepted.Load(), app.closed.Load()
	warnings0 := app.warnings.Load()
	if code, _ := httpGet(t, client, n.URL()+"/panic"); code != http.StatusInternalServerError {
		t.Fatalf("GET /panic: %d, want 500", code)
	}
	if code, body := httpGet(t, client, n.URL()+"/after-panic"); code != http.StatusOK || body != "/after-panic|" {
		t.Fatalf("GET /after-panic: %d %q", code, body)
	}
	if a, c := app.accepted.Load()-accepted0, app.closed.Load()-closed0; a != 0 || c != 0 {
		t.Errorf("%d connections accepted and %d closed across the panic, want none", a, c)
	}
	if w := app.warnings.Load() - warnings0; w != 1 {
		t.Errorf("server logged %d warnings or errors, want 1 (the panic)", w)
	}
	mark.checkClean(t)
}

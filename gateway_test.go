package fcgi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// echoApp answers with its parameters and a digest of its body as JSON.
func echoApp(t *testing.T) *fakeApp {
	return startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			out := map[string]any{"params": r.Params, "len": len(r.Stdin), "md5": fmt.Sprintf("%x", md5.Sum(r.Stdin))}
			b, _ := json.Marshal(out)
			r.Write("Content-Type: application/json\r\n\r\n" + string(b))
		}
	})
}

type echoed struct {
	Params map[string]string
	Len    int
	MD5    string
}

// docRoot makes a document root with a few scripts and files.
func docRoot(t *testing.T) string {
	root := t.TempDir()
	for name, content := range map[string]string{
		"index.php":        "<?php",
		"app.php":          "<?php",
		"Upper.PHP":        "<?php",
		"style.css":        "body{}",
		"blog/index.php":   "<?php",
		"assets/index.php": "<?php",
	} {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o644)
	}
	return root
}

func newGateway(t *testing.T, addr, root string) (*fcgi.Gateway, *logBuffer) {
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := &fcgi.Client{Addr: addr, ErrorLog: log, ResponseHeaderTimeout: 2 * time.Second}
	t.Cleanup(func() { c.Close() })
	return &fcgi.Gateway{Client: c, Root: root, FrontController: "/index.php", ErrorLog: log}, &logs
}

func serveGW(g http.Handler, method, target string, body io.Reader) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, body)
	w := httptest.NewRecorder()
	g.ServeHTTP(w, req)
	return w
}

// With PassThrough every path reaches the application, whatever is on
// disk, with the variables nginx sends from a location without try_files
// or fastcgi_split_path_info: SCRIPT_NAME and DOCUMENT_URI the cleaned path
// ($uri, so $fastcgi_script_name), SCRIPT_FILENAME $document_root followed
// by it, and no PATH_INFO.
func TestGatewayPassThrough(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	root := docRoot(t)
	g, _ := newGateway(t, app.Addr, root)
	g.ServeStatic = true
	g.PassThrough = true
	for _, tc := range []struct {
		target, script, q string
	}{
		{"/", "/", ""},
		{"/api/users/7?full=1", "/api/users/7", "full=1"},
		{"/x.php/y", "/x.php/y", ""},     // no script split
		{"/app.php", "/app.php", ""},     // an existing script: the same
		{"/style.css", "/style.css", ""}, // an existing file is not served
		{"/blog/", "/blog/", ""},         // no index appended
		{"/a//b/../c/?q=1", "/a/c/", "q=1"},
		{"/../../etc/passwd", "/etc/passwd", ""},
	} {
		w := serveGW(g, "GET", tc.target, nil)
		var e echoed
		if err := json.Unmarshal(w.Body.Bytes(), &e); w.Code != 200 || err != nil {
			t.Errorf("%s: %d %q", tc.target, w.Code, w.Body)
			continue
		}
		p := e.Params
		if p["SCRIPT_NAME"] != tc.script || p["DOCUMENT_URI"] != tc.script || p["QUERY_STRING"] != tc.q ||
			p["SCRIPT_FILENAME"] != root+tc.script || p["DOCUMENT_ROOT"] != root || p["REQUEST_URI"] != tc.target {
			t.Errorf("%s: SCRIPT_NAME %q DOCUMENT_URI %q SCRIPT_FILENAME %q DOCUMENT_ROOT %q REQUEST_URI %q QUERY_STRING %q",
				tc.target, p["SCRIPT_NAME"], p["DOCUMENT_URI"], p["SCRIPT_FILENAME"], p["DOCUMENT_ROOT"], p["REQUEST_URI"], p["QUERY_STRING"])
		}
		if v, ok := p["PATH_INFO"]; ok {
			t.Errorf("%s: PATH_INFO %q sent; fastcgi_params sets none", tc.target, v)
		}
	}
	if w := serveGW(g, "GET", "/a%0Ab", nil); w.Code != http.StatusBadRequest {
		t.Errorf("control byte in the path: %d, want 400", w.Code)
	}
	// Nothing is looked up on disk: a Root that does not exist is only
	// DOCUMENT_ROOT.
	g.Root = "/nonexistent/app"
	w := serveGW(g, "GET", "/anything", nil)
	var e echoed
	json.Unmarshal(w.Body.Bytes(), &e)
	if w.Code != 200 || e.Params["SCRIPT_FILENAME"] != "/nonexistent/app/anything" {
		t.Errorf("missing Root: %d SCRIPT_FILENAME %q", w.Code, e.Params["SCRIPT_FILENAME"])
	}
}

func TestGatewayRouting(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	root := docRoot(t)
	g, _ := newGateway(t, app.Addr, root)
	g.ServeStatic = true
	for _, tc := range []struct {
		target                      string
		code                        int
		script, pathInfo, docURI, q string
	}{
		{"/app.php", 200, "/app.php", "", "/app.php", ""},
		{"/app.php/a/b?x=1", 200, "/app.php", "/a/b", "/app.php", "x=1"},
		{"/APP.php", 404, "", "", "", ""}, // the file is app.php
		{"/Upper.PHP/x", 200, "/Upper.PHP", "/x", "/Upper.PHP", ""},
		{"/blog/", 200, "/blog/index.php", "", "/blog/index.php", ""},
		{"/blog", 200, "/blog/index.php", "", "/blog/index.php", ""},
		{"/some/route?q=1", 200, "/index.php", "", "/index.php", "q=1"},
		{"/", 200, "/index.php", "", "/index.php", ""},
		{"/missing.php", 404, "", "", "", ""},
		{"/missing.php/x", 404, "", "", "", ""},
		{"/a/../app.php", 200, "/app.php", "", "/app.php", ""},
		{"/../../etc/passwd", 200, "/index.php", "", "/index.php", ""},
		{"/style.css.php", 404, "", "", "", ""},
		{"/.php", 200, "/index.php", "", "/index.php", ""},
	} {
		w := serveGW(g, "GET", tc.target, nil)
		if w.Code != tc.code {
			t.Errorf("%s: status %d, want %d", tc.target, w.Code, tc.code)
			continue
		}
		if tc.code != 200 {
			continue
		}
		var e echoed
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
			t.Errorf("%s: %v %q", tc.target, err, w.Body.String())
			continue
		}
		p := e.Params
		if p["SCRIPT_NAME"] != tc.script || p["PATH_INFO"] != tc.pathInfo || p["DOCUMENT_URI"] != tc.docURI ||
			p["QUERY_STRING"] != tc.q || p["SCRIPT_FILENAME"] != root+tc.script || p["REQUEST_URI"] != tc.target {
			t.Errorf("%s: SCRIPT_NAME %q PATH_INFO %q DOCUMENT_URI %q QUERY_STRING %q SCRIPT_FILENAME %q REQUEST_URI %q",
				tc.target, p["SCRIPT_NAME"], p["PATH_INFO"], p["DOCUMENT_URI"], p["QUERY_STRING"], p["SCRIPT_FILENAME"], p["REQUEST_URI"])
		}
	}
	// Static files are served directly when asked.
	if w := serveGW(g, "GET", "/style.css", nil); w.Code != 200 || w.Body.String() != "body{}" {
		t.Fatalf("static: %d %q", w.Code, w.Body.String())
	}
	g.ServeStatic = false
	if w := serveGW(g, "GET", "/style.css", nil); !strings.Contains(w.Body.String(), `"SCRIPT_NAME":"/index.php"`) {
		t.Fatalf("without ServeStatic: %q", w.Body.String())
	}
	g.FrontController = ""
	if w := serveGW(g, "GET", "/nothing", nil); w.Code != 404 {
		t.Fatalf("without a front controller: %d", w.Code)
	}
}

// Control bytes in the path are refused: the CVE-2019-11043 exploit sends
// a newline (%0a) to break nginx's fastcgi_split_path_info, which left
// PATH_INFO empty and made PHP-FPM underflow a buffer.
func TestGatewayPathSafety(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	g, _ := newGateway(t, app.Addr, docRoot(t))
	for _, target := range []string{
		"/index.php/PHP%0Ais_the_shittiest_lang.php?QQQQQQQQQQQQQQQQQQQQQQ",
		"/app.php%00.css",
		"/app.php/x%0d%0aSet-Cookie:%20a",
	} {
		if w := serveGW(g, "GET", target, nil); w.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", target, w.Code)
		}
	}
	if n := app.requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the application", n)
	}
}

func TestGatewayParams(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	root := docRoot(t)
	g, _ := newGateway(t, app.Addr, root)
	srv := httptest.NewServer(g)
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/app.php/p?a=1&b=2", strings.NewReader("x=1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Proxy", "http://evil.example/")
	req.Header.Add("X-Multi", "1")
	req.Header.Add("X-Multi", "2")
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	// Dropped as nginx drops it: it would pass for X-Forwarded-For.
	req.Header["X_Forwarded_For"] = []string{"10.6.6.6"}
	req.SetBasicAuth("alice", "pw")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e echoed
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	p := e.Params
	host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	want := map[string]string{
		"QUERY_STRING": "a=1&b=2", "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded",
		"CONTENT_LENGTH": "3", "SCRIPT_NAME": "/app.php", "SCRIPT_FILENAME": root + "/app.php", "PATH_INFO": "/p",
		"REQUEST_URI": "/app.php/p?a=1&b=2", "DOCUMENT_URI": "/app.php", "DOCUMENT_ROOT": root,
		"SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_SOFTWARE": "fcgikit", "REMOTE_ADDR": "127.0.0.1", "REMOTE_USER": "alice",
		"SERVER_ADDR": host, "SERVER_PORT": port, "SERVER_NAME": host, "REDIRECT_STATUS": "200",
		"HTTP_HOST": host + ":" + port, "HTTP_X_MULTI": "1, 2", "HTTP_COOKIE": "a=1; b=2",
		"HTTP_CONTENT_TYPE": "application/x-www-form-urlencoded", "HTTP_CONTENT_LENGTH": "3",
	}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("%s = %q, want %q", k, p[k], v)
		}
	}
	if _, ok := p["HTTP_PROXY"]; ok {
		t.Error("HTTP_PROXY passed (httpoxy)")
	}
	if v, ok := p["HTTP_X_FORWARDED_FOR"]; ok {
		t.Errorf("HTTP_X_FORWARDED_FOR = %q from a header named with underscores", v)
	}
	if _, ok := p["HTTPS"]; ok {
		t.Error("HTTPS passed without TLS")
	}
	if p["REMOTE_PORT"] == "" || e.Len != 3 {
		t.Errorf("REMOTE_PORT %q, body %d bytes", p["REMOTE_PORT"], e.Len)
	}

	tls := httptest.NewTLSServer(g)
	defer tls.Close()
	resp, err = tls.Client().Get(tls.URL + "/app.php")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if e.Params["HTTPS"] != "on" || e.Params["REQUEST_SCHEME"] != "https" || e.Params["CONTENT_LENGTH"] != "" {
		t.Fatalf("over TLS: HTTPS %q REQUEST_SCHEME %q CONTENT_LENGTH %q", e.Params["HTTPS"], e.Params["REQUEST_SCHEME"], e.Params["CONTENT_LENGTH"])
	}
}

// chunked hides its length from net/http.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestGatewayBodies(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.MaxMemoryBytes = 64 << 10
	g.MaxBodyBytes = 4 << 20
	tmp := t.TempDir()
	g.TempDir = tmp
	srv := httptest.NewServer(g)
	defer srv.Close()
	for _, size := range []int{10, 100 << 10, 3 << 20} {
		for _, unknown := range []bool{false, true} {
			data := bytes.Repeat([]byte{byte(size)}, size)
			var body io.Reader = bytes.NewReader(data)
			if unknown {
				body = chunked{body}
			}
			resp, err := srv.Client().Post(srv.URL+"/app.php", "application/octet-stream", body)
			if err != nil {
				t.Fatal(err)
			}
			var e echoed
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if e.Len != size || e.Params["CONTENT_LENGTH"] != fmt.Sprint(size) || e.MD5 != fmt.Sprintf("%x", md5.Sum(data)) {
				t.Errorf("size %d unknown %v: got %d bytes, CONTENT_LENGTH %q", size, unknown, e.Len, e.Params["CONTENT_LENGTH"])
			}
		}
	}
	for _, unknown := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(make([]byte, 5<<20))
		if unknown {
			body = chunked{body}
		}
		resp, err := srv.Client().Post(srv.URL+"/app.php", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("5 MiB body (unknown length %v): status %d, want 413", unknown, resp.StatusCode)
		}
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestGatewayStreaming(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write("Content-Type: text/event-stream\r\n\r\n")
			for i := 0; i < 3; i++ {
				r.Write(fmt.Sprintf("data: %d\n\n", i))
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
	g, _ := newGateway(t, app.Addr, docRoot(t))
	srv := httptest.NewServer(g)
	defer srv.Close()
	start := time.Now()
	resp, err := srv.Client().Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var at []time.Duration
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			at = append(at, time.Since(start))
		}
	}
	if len(at) != 3 || at[2]-at[0] < 150*time.Millisecond {
		t.Fatalf("events at %v: not streamed", at)
	}
	// The headers went ahead of the first event, before the body was known.
	if resp.ContentLength != -1 {
		t.Fatalf("a streamed response has Content-Length %d", resp.ContentLength)
	}
}

// A response that arrives whole (fcgikit's server sends a small one in
// one write) is not flushed piecemeal: the client gets it with a
// Content-Length, as from nginx with fastcgi_buffering on.
func TestGatewayWholeResponseNotChunked(t *testing.T) {
	checkLeaks(t)
	addr := startServer(t, "unix", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	g, _ := newGateway(t, "unix:"+addr, docRoot(t))
	srv := httptest.NewServer(g)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/app.php")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" || resp.ContentLength != 5 || len(resp.TransferEncoding) != 0 {
		t.Fatalf("body %q, Content-Length %d, Transfer-Encoding %v", body, resp.ContentLength, resp.TransferEncoding)
	}
}

func TestGatewayErrors(t *testing.T) {
	checkLeaks(t)
	root := docRoot(t)
	_, dead := unixAddr(t)
	g, logs := newGateway(t, dead, root)
	if w := serveGW(g, "GET", "/", nil); w.Code != http.StatusBadGateway || !strings.Contains(logs.String(), "dial") {
		t.Fatalf("dead backend: %d, log %q", w.Code, logs.String())
	}

	overloaded := startFake(t, "unix", func(a *fakeApp) { a.Handler = func(r *fakeReq) { r.End(0, wire.StatusOverloaded) } })
	g, logs = newGateway(t, overloaded.Addr, root)
	if w := serveGW(g, "GET", "/", nil); w.Code != http.StatusServiceUnavailable || !strings.Contains(logs.String(), "OVERLOADED") {
		t.Fatalf("overloaded: %d, log %q", w.Code, logs.String())
	}

	release := make(chan struct{})
	defer close(release)
	slow := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { r.WriteErr("PHP Warning: slow"); <-release }
	})
	g, logs = newGateway(t, slow.Addr, root)
	g.Client.ResponseHeaderTimeout = 50 * time.Millisecond
	if w := serveGW(g, "GET", "/", nil); w.Code != http.StatusGatewayTimeout || !strings.Contains(logs.String(), "timeout") {
		t.Fatalf("slow: %d, log %q", w.Code, logs.String())
	}
	if !strings.Contains(logs.String(), "PHP Warning: slow") || !strings.Contains(logs.String(), "uri=/") {
		t.Fatalf("stderr not logged with the request: %q", logs.String())
	}

	hop := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { r.Write("Connection: close\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\n\r\nplain") }
	})
	g, _ = newGateway(t, hop.Addr, root)
	if w := serveGW(g, "GET", "/", nil); w.Body.String() != "plain" || w.Header().Get("X-App") != "1" ||
		w.Header().Get("Connection") != "" || w.Header().Get("Transfer-Encoding") != "" {
		t.Fatalf("hop-by-hop: %q %v", w.Body.String(), w.Header())
	}
	// Over a header a middleware set first: the application's fields
	// replace same-named ones, the others stay, hop-by-hop still go.
	mw := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", "middleware")
		w.Header().Set("X-Mw", "1")
		g.ServeHTTP(w, r)
	})
	if w := serveGW(mw, "GET", "/", nil); w.Header().Get("X-App") != "1" || len(w.Header()["X-App"]) != 1 ||
		w.Header().Get("X-Mw") != "1" || w.Header().Get("Connection") != "" || w.Body.String() != "plain" {
		t.Fatalf("hop-by-hop under a middleware's header: %q %v", w.Body.String(), w.Header())
	}

	// A header refused halfway leaves nothing of itself on the 502.
	half := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { r.Write("Set-Cookie: session=1\r\nX-App: 1\r\nno colon\r\n\r\nbody") }
	})
	g, _ = newGateway(t, half.Addr, root)
	if w := serveGW(g, "GET", "/", nil); w.Code != http.StatusBadGateway || w.Header().Get("Set-Cookie") != "" || w.Header().Get("X-App") != "" {
		t.Fatalf("malformed header: %d %v", w.Code, w.Header())
	}

	bad := startFake(t, "unix", func(a *fakeApp) { a.Handler = func(r *fakeReq) { r.Write("garbage\r\n\r\n") } })
	g, logs = newGateway(t, bad.Addr, root)
	if w := serveGW(g, "GET", "/", nil); w.Code != http.StatusBadGateway || !strings.Contains(logs.String(), "malformed") {
		t.Fatalf("malformed: %d, log %q", w.Code, logs.String())
	}
}

func TestGatewayAuthorizer(t *testing.T) {
	checkLeaks(t)
	auth := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Role != wire.RoleAuthorizer {
				r.Write("Status: 500\r\n\r\nwrong role")
				return
			}
			if _, ok := r.Params["CONTENT_LENGTH"]; ok {
				r.Write("Status: 500\r\n\r\nCONTENT_LENGTH sent to an authorizer")
				return
			}
			if r.Params["HTTP_AUTHORIZATION"] != "Bearer good" {
				r.Write("Status: 401\r\nWWW-Authenticate: Bearer\r\n\r\ndenied")
				return
			}
			r.Write("Status: 200\r\nVariable-AUTH_USER: alice\r\n\r\n")
		}
	})
	app := echoApp(t)
	root := docRoot(t)
	ag, _ := newGateway(t, auth.Addr, root)
	g, _ := newGateway(t, app.Addr, root)
	h := ag.Authorizer(g)

	w := serveGW(h, "GET", "/app.php", nil)
	if w.Code != 401 || w.Body.String() != "denied" || w.Header().Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("denied: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	req := httptest.NewRequest("GET", "/app.php", nil)
	req.Header.Set("Authorization", "Bearer good")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var e echoed
	json.Unmarshal(w.Body.Bytes(), &e)
	if w.Code != 200 || e.Params["AUTH_USER"] != "alice" || e.Params["HTTP_VARIABLE_AUTH_USER"] != "alice" {
		t.Fatalf("allowed: %d %q", w.Code, w.Body.String())
	}
	// A plain handler sees the variable as a request header.
	h = ag.Authorizer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("Variable-Auth_user"))
	}))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Body.String() != "alice" {
		t.Fatalf("handler saw %q", w.Body.String())
	}

	// Variables come from the authorizer only: a client's own
	// Variable-* headers are not passed on as if it had granted them.
	h = ag.Authorizer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q %q", r.Header.Values("Variable-Role"), r.Header.Values("Variable-Auth_user"))
	}))
	req.Header.Set("Variable-Role", "admin")
	req.Header.Set("Variable-Auth_user", "mallory")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if got := w.Body.String(); got != `[] ["alice"]` {
		t.Fatalf("handler saw %s, want only the authorizer's variable", got)
	}
	w = httptest.NewRecorder()
	ag.Authorizer(g).ServeHTTP(w, req)
	e = echoed{}
	json.Unmarshal(w.Body.Bytes(), &e)
	if _, ok := e.Params["HTTP_VARIABLE_ROLE"]; ok || e.Params["AUTH_USER"] != "alice" || e.Params["HTTP_VARIABLE_AUTH_USER"] != "alice" {
		t.Fatalf("gateway got %v", e.Params)
	}
}

// The client goes away while the backend answers slowly: the request is
// abandoned and nothing leaks.
func TestGatewayClientGone(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { time.Sleep(300 * time.Millisecond); r.Write("\r\nlate") }
	})
	g, _ := newGateway(t, app.Addr, docRoot(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	req := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
	w := httptest.NewRecorder()
	start := time.Now()
	g.ServeHTTP(w, req)
	if time.Since(start) > 250*time.Millisecond {
		t.Fatalf("ServeHTTP returned after %v", time.Since(start))
	}
}

// Gateway.Filter sends the named file as FCGI_DATA, with its length and
// modification time, to fcgikit's own server in the Filter role.
func TestGatewayFilter(t *testing.T) {
	checkLeaks(t)
	root := docRoot(t)
	mod := time.Unix(1700000000, 0)
	os.WriteFile(filepath.Join(root, "page.md"), []byte("# hello"), 0o644)
	os.Chtimes(filepath.Join(root, "page.md"), mod, mod)
	filter := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := fcgi.FilterDataOf(r)
		if !ok {
			http.Error(w, "not a filter request", 500)
			return
		}
		data, err := io.ReadAll(d)
		body, _ := io.ReadAll(r.Body)
		p := fcgi.Params(r)
		fmt.Fprintf(w, "%s|%d|%d|%v|%s|%s|%s", bytes.ToUpper(data), d.Length, d.LastMod.Unix(), err, body, p["SCRIPT_NAME"], strings.TrimPrefix(p["SCRIPT_FILENAME"], root))
	})
	addr := startServer(t, "unix", &fcgi.Server{Filter: filter}, nil)
	g, _ := newGateway(t, "unix:"+addr, root)
	h := g.Filter()

	w := serveGW(h, "GET", "/page.md", nil)
	if want := "# HELLO|7|1700000000|<nil>||/page.md|/page.md"; w.Code != 200 || w.Body.String() != want {
		t.Fatalf("GET: %d %q, want %q", w.Code, w.Body.String(), want)
	}
	w = serveGW(h, "POST", "/page.md", strings.NewReader("form=1"))
	if want := "# HELLO|7|1700000000|<nil>|form=1|/page.md|/page.md"; w.Code != 200 || w.Body.String() != want {
		t.Fatalf("POST: %d %q, want %q", w.Code, w.Body.String(), want)
	}
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/missing.md", 404},
		{"/blog", 404},        // a directory
		{"/../page.md", 200},  // cleaned to /page.md, inside the root
		{"/page.md\x00", 400}, // control byte
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.Path = tc.path
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("%q: %d, want %d", tc.path, w.Code, tc.code)
		}
	}
	// The Filter role must be configured on the application's side: a
	// Responder-only server refuses it, and the client sees why.
	addr2 := startServer(t, "unix", nil, http.HandlerFunc(hello))
	g2, logs := newGateway(t, "unix:"+addr2, root)
	if w := serveGW(g2.Filter(), "GET", "/page.md", nil); w.Code != 502 || !strings.Contains(logs.String(), "UNKNOWN_ROLE") {
		t.Fatalf("unknown role: %d, log %s", w.Code, logs.String())
	}
}

// A Filter request on a kept connection the application has dropped is
// sent again with the whole file.
func TestGatewayFilterRetried(t *testing.T) {
	checkLeaks(t)
	root := docRoot(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.DropRequestN, a.DropOnce = 2, true
		a.Handler = func(r *fakeReq) { r.Write("\r\n" + string(r.Data)) }
	})
	g, _ := newGateway(t, app.Addr, root)
	h := g.Filter()
	for i := 0; i < 3; i++ {
		if w := serveGW(h, "GET", "/style.css", nil); w.Code != 200 || w.Body.String() != "body{}" {
			t.Fatalf("request %d: %d %q", i, w.Code, w.Body.String())
		}
	}
	if n := app.requests.Load(); n != 4 {
		t.Fatalf("application saw %d requests, want 4 (one dropped and retried)", n)
	}
}

// An event followed in the same write by a STDERR record (a PHP notice) or
// by the first bytes of the next record reaches the client at once: the
// Gateway flushes unless the next Read is sure not to wait.
func TestGatewayFlushesBehindStderrAndPartialRecords(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mpx   bool
		after func(r *fakeReq) // writes the event and what follows it
	}{
		{"stderr", false, stdoutThenStderr},
		{"stderr multiplexed", true, stdoutThenStderr},
		{"partial record", false, func(r *fakeReq) {
			ev := []byte("data: 1\n\n")
			var b bytes.Buffer
			w := wire.NewWriter(&b)
			w.WriteRecord(wire.TypeStdout, r.ID, ev)
			w.WriteRecord(wire.TypeStdout, r.ID, []byte("data: 2\n\n"))
			w.Flush()
			c := r.conn
			c.wmu.Lock()
			defer c.wmu.Unlock()
			cut := b.Len() - 12 // the second record's header cut in two
			c.nc.Write(b.Bytes()[:cut])
			time.Sleep(1500 * time.Millisecond)
			c.nc.Write(b.Bytes()[cut:])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			app := startFake(t, "unix", func(a *fakeApp) {
				a.Handler = func(r *fakeReq) {
					r.Write("Content-Type: text/event-stream\r\n\r\n")
					time.Sleep(50 * time.Millisecond)
					tc.after(r)
				}
			})
			g, _ := newGateway(t, app.Addr, docRoot(t))
			if tc.mpx {
				g.Client.Multiplex = fcgi.MultiplexOn
			}
			srv := httptest.NewServer(g)
			defer srv.Close()
			start := time.Now()
			resp, err := srv.Client().Get(srv.URL + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if sc.Text() == "data: 1" {
					if d := time.Since(start); d > time.Second {
						t.Fatalf("the first event reached the client after %v, held until the backend wrote again", d)
					}
					return
				}
			}
			t.Fatal("no event")
		})
	}
}

// stdoutThenStderr sends an event and a STDERR line in one write, then
// stalls before the next event.
func stdoutThenStderr(r *fakeReq) {
	c := r.conn
	c.wmu.Lock()
	c.wr.WriteStream(wire.TypeStdout, r.ID, []byte("data: 1\n\n"))
	c.wr.WriteStream(wire.TypeStderr, r.ID, []byte("PHP Notice: x"))
	c.wr.Flush()
	c.wmu.Unlock()
	time.Sleep(1500 * time.Millisecond)
	r.Write("data: 2\n\n")
}

// An authorizer's Variable-REMOTE_USER is what the application sees, not
// the user of Basic credentials the client added; and the authorizer is
// asked about paths that next serves otherwise (a Filter of files).
func TestGatewayAuthorizerVariablesWin(t *testing.T) {
	checkLeaks(t)
	auth := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["HTTP_COOKIE"] != "session=alice" {
				r.Write("Status: 401\r\n\r\n")
				return
			}
			if _, ok := r.Params["SCRIPT_FILENAME"]; ok && r.Params["REQUEST_URI"] == "/style.css" {
				r.Write("Status: 500\r\n\r\nSCRIPT_FILENAME for a path with no script")
				return
			}
			r.Write("Status: 200\r\nVariable-REMOTE_USER: alice\r\n\r\n")
		}
	})
	app := echoApp(t)
	root := docRoot(t)
	ag, _ := newGateway(t, auth.Addr, root)
	g, _ := newGateway(t, app.Addr, root)
	for _, basic := range []bool{false, true} {
		req := httptest.NewRequest("GET", "/app.php", nil)
		req.Header.Set("Cookie", "session=alice")
		if basic {
			req.SetBasicAuth("mallory", "x")
		}
		w := httptest.NewRecorder()
		ag.Authorizer(g).ServeHTTP(w, req)
		var e echoed
		json.Unmarshal(w.Body.Bytes(), &e)
		if w.Code != 200 || e.Params["REMOTE_USER"] != "alice" {
			t.Errorf("basic=%v: %d REMOTE_USER=%q, want the authorizer's alice", basic, w.Code, e.Params["REMOTE_USER"])
		}
	}

	ag.FrontController = "" // /style.css is then no script for the authorizer's routing
	h := ag.Authorizer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "served") }))
	req := httptest.NewRequest("GET", "/style.css", nil)
	req.Header.Set("Cookie", "session=alice")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 || w.Body.String() != "served" {
		t.Fatalf("authorizer before a handler of its own: %d %q", w.Code, w.Body.String())
	}
	if w := serveGW(h, "GET", "/style.css", nil); w.Code != 401 {
		t.Fatalf("without the cookie: %d, want 401 from the authorizer", w.Code)
	}
}

package fcgi_test

// Real web servers as FastCGI clients of a Server, in every role they
// speak. Each test starts its peers with internal/peer, which skips the
// test when a peer is not installed (and fails it under CI=true).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

// peerServer serves srv on a new listener that peers can reach: a unix
// socket of mode 0666 in a peer.TempDir (Apache's workers run as
// www-data) or TCP on 127.0.0.1. It returns the address in internal/peer's
// format and stops the server when the test ends. Before the peer is
// started, it skips the test the way the peer's launcher would, so no
// listener is left behind.
func peerServer(t *testing.T, network string, srv *fcgi.Server) string {
	t.Helper()
	var (
		l    net.Listener
		err  error
		addr string
	)
	if network == "unix" {
		path := filepath.Join(peer.TempDir(t), "fcgi.sock")
		l, err = net.Listen("unix", path)
		if err == nil {
			err = os.Chmod(path, 0o666)
		}
		addr = "unix:" + path
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			addr = l.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, l, srv)
	return addr
}

// connCounter counts the connections a Server accepts, through ConnState.
type connCounter struct{ n atomic.Int64 }

func (c *connCounter) hook(_ net.Conn, s fcgi.ConnState) {
	if s == fcgi.StateNew {
		c.n.Add(1)
	}
}

type httpResult struct {
	code   int
	header http.Header
	body   string
}

// fetch sends method to url with the given headers and body.
func fetch(t *testing.T, cl *http.Client, method, url string, header map[string]string, body string) (httpResult, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return httpResult{}, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{resp.StatusCode, resp.Header, string(b)}, err
}

// mustFetch is fetch failing the test on a transport error and on a
// status other than code or a body without want.
func mustFetch(t *testing.T, cl *http.Client, method, url string, header map[string]string, body string, code int, want string) httpResult {
	t.Helper()
	res, err := fetch(t, cl, method, url, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if res.code != code || !strings.Contains(res.body, want) {
		t.Fatalf("%s %s: %d %q, want %d with %q", method, url, res.code, res.body, code, want)
	}
	return res
}

// echoEnv answers with the request's method, URI, body and the CGI
// variables named in the query (?v=NAME&v=NAME), from ProcessEnv.
func echoEnv(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	env := fcgi.ProcessEnv(r)
	fmt.Fprintf(w, "%s %s role=%v body=%q", r.Method, r.RequestURI, fcgi.RoleOf(r), body)
	if r.URL.Query().Has("dump") {
		fmt.Fprintf(w, " env=%v", env)
	}
	for _, v := range r.URL.Query()["v"] {
		fmt.Fprintf(w, " %s=%s", v, env[v])
	}
}

// firstRecordSniffer wraps a listener and notes the type of the first
// record each web server connection carries.
type firstRecordSniffer struct {
	net.Listener
	mu    sync.Mutex
	first []wire.Type
}

func (s *firstRecordSniffer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, s: s}, nil
}

func (s *firstRecordSniffer) types() []wire.Type {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire.Type(nil), s.first...)
}

type sniffConn struct {
	net.Conn
	s    *firstRecordSniffer
	head []byte
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if len(c.head) < 2 {
		c.head = append(c.head, p[:min(n, 2-len(c.head))]...)
		if len(c.head) == 2 {
			c.s.mu.Lock()
			c.s.first = append(c.s.first, wire.Type(c.head[1]))
			c.s.mu.Unlock()
		}
	}
	return n, err
}

// HAProxy multiplexes requests over few connections once GET_VALUES told
// it FCGI_MPXS_CONNS=1, and aborts requests with FCGI_ABORT_REQUEST.
func TestHAProxyMultiplexing(t *testing.T) {
	t.Parallel()
	var conns connCounter
	var inFlight, maxInFlight atomic.Int64
	started := make(chan struct{}, 1)
	cause := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/m/", func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
		}
		time.Sleep(200 * time.Millisecond)
		echoEnv(w, r)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			cause <- context.Cause(r.Context())
		case <-time.After(10 * time.Second):
			cause <- errors.New("handler not cancelled")
		}
	})
	mux.HandleFunc("/", echoEnv)
	srv := &fcgi.Server{ConnState: conns.hook, Handler: mux}
	l, err := net.Listen("unix", filepath.Join(peer.TempDir(t), "fcgi.sock"))
	if err != nil {
		t.Fatal(err)
	}
	sniff := &firstRecordSniffer{Listener: l}
	addr := "unix:" + l.Addr().String()
	serveOn(t, sniff, srv)

	h := peer.StartHAProxy(t, peer.HAProxyConfig{
		FastCGI:   addr,
		MpxsConns: true,
		GetValues: true,
		// Share backend connections between client connections; send
		// FCGI_ABORT_REQUEST when a client goes away.
		Backend: "    http-reuse always\n    option abortonclose\n",
	})
	cl := httpClient(t)

	// One request first, so that HAProxy holds a connection whose
	// GET_VALUES answer said FCGI_MPXS_CONNS=1 when the burst comes.
	mustFetch(t, cl, "GET", h.URL()+"/warm-up", nil, "", 200, "GET /warm-up")
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			want := fmt.Sprintf("GET /m/%d?v=FCGI_ROLE role=RESPONDER", i)
			res, err := fetch(t, cl, "GET", fmt.Sprintf("%s/m/%d?v=FCGI_ROLE", h.URL(), i), nil, "")
			if err == nil && (res.code != 200 || !strings.HasPrefix(res.body, want)) {
				err = fmt.Errorf("request %d: %d %q", i, res.code, res.body)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := conns.n.Load()
	t.Logf("%d requests over %d connections, %d at once at most; first records %v", n, got, maxInFlight.Load(), sniff.types())
	if got >= n || maxInFlight.Load() <= got {
		t.Errorf("%d concurrent requests came over %d connections with at most %d at once: not multiplexed", n, got, maxInFlight.Load())
	}
	if ts := sniff.types(); len(ts) == 0 || ts[0] != wire.TypeGetValues {
		t.Errorf("first records of HAProxy's connections: %v, want FCGI_GET_VALUES first", ts)
	}

	// A client that goes away mid-request: HAProxy aborts the request,
	// and the handler's context says so.
	c, err := net.Dial("tcp", strings.TrimPrefix(h.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	// The client goes away while sending its body: HAProxy is still
	// reading from it then (while it waits for a response it is not).
	// HAProxy forwards a request once it holds a buffer's worth of it.
	fmt.Fprintf(c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n%s", strings.Repeat("p", 64<<10))
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow request did not reach the handler")
	}
	t0 := time.Now()
	c.Close()
	select {
	case err := <-cause:
		if !errors.Is(err, fcgi.ErrRequestAborted) {
			t.Errorf("handler context cause %v, want ErrRequestAborted (FCGI_ABORT_REQUEST)", err)
		}
		t.Logf("handler cancelled %v after the client closed", time.Since(t0))
	case <-time.After(3 * time.Second):
		t.Fatal("handler context not cancelled within 3s of the client closing")
	}
	// The multiplexed connection survives the abort.
	before := conns.n.Load()
	mustFetch(t, cl, "GET", h.URL()+"/after", nil, "", 200, "GET /after")
	if conns.n.Load() != before {
		t.Logf("note: HAProxy opened a new connection after the abort")
	}
	// HAProxy's log: every burst request ended well ("----" termination
	// state) on the server side.
	clean := 0
	for _, line := range strings.Split(h.ErrorLog(), "\n") {
		if strings.Contains(line, `"GET /m/`) && strings.Contains(line, " 200 ") && strings.Contains(line, " ---- ") {
			clean++
		}
	}
	if clean != n {
		t.Errorf("HAProxy logged %d clean burst requests, want %d:\n%s", clean, n, h.ErrorLog())
	}
}

// lighttpd's mod_fastcgi in "mode" => "authorizer" asks the Authorizer
// first; allowed requests go on to a static file or to the Responder of
// the same Server, which sees the Variable-* values as CGI variables.
func TestLighttpdAuthorizer(t *testing.T) {
	t.Parallel()
	forEachNetwork(t, func(t *testing.T, network string) {
		t.Parallel()
		srv := &fcgi.Server{Handler: http.HandlerFunc(echoEnv), Authorizer: http.HandlerFunc(authorize)}
		addr := peerServer(t, network, srv)
		l := peer.StartLighttpd(t, peer.LighttpdConfig{
			Authorizer:       addr,
			AuthorizerPrefix: "/private/",
			FastCGI:          addr,
			FastCGIPrefix:    ".fcgi",
		})
		mustMkdir(t, l.Root()+"/private")
		writeTestFile(t, l.Root()+"/private/secret.txt", "static secret\n")
		writeTestFile(t, l.Root()+"/private/app.fcgi", "")
		writeTestFile(t, l.Root()+"/public.txt", "static public\n")
		cl := httpClient(t)
		allow := map[string]string{"X-Allow": "yes"}

		mustFetch(t, cl, "GET", l.URL()+"/private/secret.txt", allow, "", 200, "static secret")
		res := mustFetch(t, cl, "GET", l.URL()+"/private/secret.txt", nil, "", 403, "denied by authorizer")
		if got := res.header.Get("WWW-Authenticate"); got != `Basic realm="fcgikit"` {
			t.Errorf("denial's WWW-Authenticate header: %q", got)
		}
		mustFetch(t, cl, "GET", l.URL()+"/public.txt", nil, "", 200, "static public")
		// Authorizer, then Responder, both on this Server.
		res = mustFetch(t, cl, "POST", l.URL()+"/private/app.fcgi?v=AUTH_LEVEL&v=REMOTE_USER&dump", allow, "payload", 200,
			`POST /private/app.fcgi?v=AUTH_LEVEL&v=REMOTE_USER&dump role=RESPONDER body="payload"`)
		if !strings.Contains(res.body, " AUTH_LEVEL=gold") {
			t.Errorf("the responder did not get the authorizer's variable: %q", res.body)
		}
		t.Logf("responder saw: %s", res.body)
		mustFetch(t, cl, "POST", l.URL()+"/private/app.fcgi", nil, "payload", 403, "denied by authorizer")
	})
}

// Apache's mod_proxy_fcgi as a Responder client, opening a connection per
// request or, with enablereuse=on, keeping them (FCGI_KEEP_CONN).
func TestApacheProxyFCGIResponder(t *testing.T) {
	t.Parallel()
	for _, reuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "enablereuse"}[reuse], func(t *testing.T) {
			t.Parallel()
			var conns connCounter
			srv := &fcgi.Server{ConnState: conns.hook, Handler: http.HandlerFunc(echoEnv)}
			addr := peerServer(t, "unix", srv)
			a := peer.StartApache(t, peer.ApacheConfig{FastCGI: addr, EnableReuse: reuse, FastCGIPrefix: "/app/"})
			cl := httpClient(t)
			const n = 10
			for i := range n {
				mustFetch(t, cl, "POST", fmt.Sprintf("%s/app/x%d?q=1", a.URL(), i), nil, "body", 200,
					fmt.Sprintf(`POST /app/x%d?q=1 role=RESPONDER body="body"`, i))
			}
			got := conns.n.Load()
			t.Logf("%d requests over %d connections", n, got)
			if reuse && got >= n {
				t.Errorf("enablereuse=on: %d requests over %d connections, want them kept", n, got)
			}
			if !reuse && got != n {
				t.Errorf("without enablereuse: %d requests over %d connections, want one each", n, got)
			}
		})
	}
}

// Apache's mod_authnz_fcgi as an Authorizer client (over TCP, the only
// transport it speaks): allowed requests get the static file and the user
// the authorizer named; denied ones get the authorizer's response.
func TestApacheAuthnzFCGI(t *testing.T) {
	t.Parallel()
	srv := &fcgi.Server{Authorizer: http.HandlerFunc(authorize)}
	addr := peerServer(t, "tcp", srv)
	a := peer.StartApache(t, peer.ApacheConfig{Authorizer: addr, AuthorizerPrefix: "/private/"})
	mustMkdir(t, a.Root()+"/private")
	writeTestFile(t, a.Root()+"/private/secret.txt", "static secret\n")
	writeTestFile(t, a.Root()+"/public.txt", "static public\n")
	cl := httpClient(t)
	mustFetch(t, cl, "GET", a.URL()+"/private/secret.txt", map[string]string{"X-Allow": "yes"}, "", 200, "static secret")
	mustFetch(t, cl, "GET", a.URL()+"/private/secret.txt", nil, "", 403, "denied by authorizer")
	mustFetch(t, cl, "GET", a.URL()+"/public.txt", nil, "", 200, "static public")
	log := readAccessLog(t, a.Dir()+"/access.log")
	if !strings.Contains(log, " alice ") {
		t.Errorf("access log does not name the user the authorizer set with Variable-REMOTE_USER:\n%s", log)
	}
}

// nginx writes what a handler sends with Stderr to its error log, and a
// non-zero application status in END_REQUEST changes nothing for the
// client or for the kept connection.
func TestNginxStderrAndAppStatus(t *testing.T) {
	t.Parallel()
	var conns connCounter
	srv := &fcgi.Server{ConnState: conns.hook, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := fcgi.Stderr(w)
		fmt.Fprintf(e, "fcgikit-before-header %s", r.URL.Path)
		io.WriteString(w, strings.Repeat("b", 20000))
		w.(http.Flusher).Flush()
		fmt.Fprintf(e, "fcgikit-after-header %s", r.URL.Path)
		io.WriteString(w, "end")
		fcgi.SetAppStatus(w, 3)
	})}
	addr := peerServer(t, "unix", srv)
	n := peer.StartNginx(t, peer.NginxConfig{FastCGI: addr, Keepalive: 2})
	cl := httpClient(t)
	const reqs = 5
	for i := range reqs {
		res := mustFetch(t, cl, "GET", fmt.Sprintf("%s/s%d", n.URL(), i), nil, "", 200, "end")
		if res.body != strings.Repeat("b", 20000)+"end" {
			t.Fatalf("body of %d bytes, want 20003", len(res.body))
		}
	}
	log := n.ErrorLog()
	for _, want := range []string{"FastCGI sent in stderr", "fcgikit-before-header /s0", "fcgikit-after-header /s4"} {
		if !strings.Contains(log, want) {
			t.Errorf("nginx error log lacks %q:\n%s", want, log)
		}
	}
	var others []string
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "FastCGI sent in stderr") {
			others = append(others, line)
		}
	}
	for _, bad := range []string{"upstream prematurely closed", "[error]", "[crit]", "reset by peer"} {
		if strings.Contains(strings.Join(others, "\n"), bad) {
			t.Errorf("nginx error log has %q:\n%s", bad, log)
		}
	}
	if got := conns.n.Load(); got >= reqs {
		t.Errorf("%d requests over %d connections: a non-zero app status broke keep-alive", reqs, got)
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readAccessLog returns Apache's access log once it has a line for every
// request made (Apache writes it after the response).
func readAccessLog(t *testing.T, path string) string {
	t.Helper()
	var lines []string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		lines = lines[:0]
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		f.Close()
		if len(lines) >= 3 {
			break
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

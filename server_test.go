package fcgi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

func TestResponderGet(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, network string) {
		addr := startServer(t, network, nil, http.HandlerFunc(hello))
		c := dial(t, network, addr)
		c.Get(1, false, "/world?x=1")
		resp := c.ReadResponse(1)
		h, body := parseCGI(t, resp.Stdout)
		if h["Status"] != "200 OK" || body != "hello, /world" {
			t.Fatalf("got %q %q", h, body)
		}
		if h["Content-Length"] != "13" || h["Content-Type"] != "text/plain; charset=utf-8" {
			t.Fatalf("headers %q", h)
		}
		if !resp.StdoutEnded || resp.End.ProtocolStatus != wire.StatusRequestComplete || resp.End.AppStatus != 0 {
			t.Fatalf("end: %+v ended=%v", resp.End, resp.StdoutEnded)
		}
		// KEEP_CONN was not set: the server closes the connection.
		if rec, err := c.TryNext(); err != io.EOF {
			t.Fatalf("after response without KEEP_CONN: %v %v, want EOF", rec, err)
		}
	})
}

// The nginx keep-alive scenario: request ID 1 again and again on one
// connection (the bug that made net/http/fcgi reset nginx's connections).
func TestKeepConnReusesRequestID(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, network string) {
		addr := startServer(t, network, nil, http.HandlerFunc(hello))
		c := dial(t, network, addr)
		for i := range 200 {
			c.Get(1, true, fmt.Sprintf("/n%d", i))
			resp := c.ReadResponse(1)
			if _, body := parseCGI(t, resp.Stdout); body != fmt.Sprintf("hello, /n%d", i) {
				t.Fatalf("request %d: body %q", i, body)
			}
			if len(resp.Records) != 3 {
				t.Fatalf("request %d: %d records, want STDOUT, empty STDOUT, END_REQUEST: %v", i, len(resp.Records), resp.Records)
			}
		}
	})
}

func TestMultiplexing(t *testing.T) {
	const n = 50
	var started sync.WaitGroup
	started.Add(n)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Done()
		<-release // every handler runs at once, or this never returns
		fmt.Fprintf(w, "id=%s", r.URL.Query().Get("id"))
	})
	addr := startServer(t, "tcp", nil, h)
	c := dial(t, "tcp", addr)
	ids := make([]uint16, n)
	for i := range n {
		ids[i] = uint16(i*1000 + 1)
		c.Begin(ids[i], wire.RoleResponder, true).Params(ids[i], "REQUEST_METHOD", "GET", "REQUEST_URI", fmt.Sprintf("/?id=%d", ids[i]))
	}
	// The bodies come after every request has begun.
	for _, id := range ids {
		c.Stdin(id, nil)
	}
	c.Flush()
	waitOrFail(t, &started, "all handlers to start")
	close(release)
	resps := c.ReadResponses(ids...)
	for _, id := range ids {
		if _, body := parseCGI(t, resps[id].Stdout); body != fmt.Sprintf("id=%d", id) {
			t.Fatalf("request %d got %q", id, body)
		}
	}
}

func waitOrFail(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestGetValues(t *testing.T) {
	srv := &fcgi.Server{MaxConns: 7, MaxRequests: 70}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Record(wire.TypeGetValues, 0, fcgitest.Pairs("FCGI_MAX_CONNS", "", "FCGI_MPXS_CONNS", "", "NOT_A_VALUE", "", "FCGI_MAX_REQS", "")).Flush()
	rec := c.Next()
	if rec.Type != wire.TypeGetValuesResult || rec.RequestID != 0 {
		t.Fatalf("got %v", rec)
	}
	got := map[string]string{}
	wire.ForEachPair(rec.Content, func(n, v []byte) bool { got[string(n)] = string(v); return true })
	want := map[string]string{"FCGI_MAX_CONNS": "7", "FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": "70"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("GET_VALUES_RESULT %v, want %v", got, want)
	}
	// One record only: the next thing on the wire answers the next question.
	c.Record(wire.TypeGetValues, 0, fcgitest.Pairs("FCGI_MPXS_CONNS", "")).Flush()
	if rec := c.Next(); rec.Type != wire.TypeGetValuesResult || !strings.Contains(string(rec.Content), "FCGI_MPXS_CONNS") {
		t.Fatalf("second answer %v", rec)
	}
}

// Negative limits mean none: the server then has no FCGI_MAX_CONNS or
// FCGI_MAX_REQS to report, and serves with every limit off.
func TestNegativeLimitsMeanNone(t *testing.T) {
	srv := &fcgi.Server{MaxConns: -1, MaxRequests: -1, MaxRequestsPerConn: -1, MaxParamsBytes: -1, MaxBodyBuffer: -1}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Record(wire.TypeGetValues, 0, fcgitest.Pairs("FCGI_MAX_CONNS", "", "FCGI_MPXS_CONNS", "", "FCGI_MAX_REQS", "")).Flush()
	if rec := c.Next(); string(rec.Content) != string(fcgitest.Pairs("FCGI_MPXS_CONNS", "1")) {
		t.Fatalf("GET_VALUES_RESULT %q, want FCGI_MPXS_CONNS alone", rec.Content)
	}
	for i := range 3 {
		c.Get(1, true, fmt.Sprintf("/n%d", i))
		if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != fmt.Sprintf("hello, /n%d", i) {
			t.Fatalf("request %d: body %q", i, body)
		}
	}
}

func TestGetValuesNoMultiplexing(t *testing.T) {
	addr := startServer(t, "tcp", &fcgi.Server{MaxRequestsPerConn: 1}, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Record(wire.TypeGetValues, 0, fcgitest.Pairs("FCGI_MPXS_CONNS", "")).Flush()
	if rec := c.Next(); string(rec.Content) != string(fcgitest.Pairs("FCGI_MPXS_CONNS", "0")) {
		t.Fatalf("got %v", rec)
	}
}

func TestUnknownManagementType(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Record(wire.Type(42), 0, []byte("x")).Flush()
	rec := c.Next()
	if ut, err := wire.ParseUnknownType(rec.Content); rec.Type != wire.TypeUnknownType || err != nil || ut != 42 {
		t.Fatalf("got %v", rec)
	}
	// BEGIN_REQUEST with ID 0 is a management record nobody knows.
	c.Begin(0, wire.RoleResponder, true).Flush()
	rec = c.Next()
	if ut, _ := wire.ParseUnknownType(rec.Content); rec.Type != wire.TypeUnknownType || ut != wire.TypeBeginRequest {
		t.Fatalf("BEGIN_REQUEST with ID 0 got %v", rec)
	}
	// The connection still serves.
	c.Get(1, true, "/still")
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "hello, /still" {
		t.Fatalf("body %q", body)
	}
}

func TestUnknownRole(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Begin(3, wire.Role(9), true).Params(3, "REQUEST_METHOD", "GET").Stdin(3, nil).Flush()
	resp := c.ReadResponse(3)
	if resp.End.ProtocolStatus != wire.StatusUnknownRole || len(resp.Stdout) != 0 {
		t.Fatalf("got %+v", resp)
	}
	c.Get(3, true, "/after")
	if _, body := parseCGI(t, c.ReadResponse(3).Stdout); body != "hello, /after" {
		t.Fatalf("body %q", body)
	}
}

func TestRequestFidelity(t *testing.T) {
	got := make(chan *http.Request, 1)
	gotBody := make(chan string, 1)
	gotEnv := make(chan map[string]string, 1)
	gotParams := make(chan map[string]string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		got <- r
		gotBody <- string(b)
		gotEnv <- fcgi.ProcessEnv(r)
		gotParams <- fcgi.Params(r)
	})
	addr := startServer(t, "tcp", nil, h)
	c := dial(t, "tcp", addr)
	// The PARAMS stream is split in the middle of a pair, and the STDIN
	// record carries padding.
	params := fcgitest.Pairs(
		"REQUEST_METHOD", "POST", "REQUEST_URI", "/a%20b/c?q=1&r=2", "SERVER_PROTOCOL", "HTTP/1.1",
		"QUERY_STRING", "q=1&r=2", "SCRIPT_NAME", "/a b/c", "REMOTE_ADDR", "192.0.2.7", "REMOTE_PORT", "51234",
		"HTTPS", "ON", "HTTP_HOST", "example.com", "HTTP_USER_AGENT", "test/1.0", "HTTP_X_CUSTOM_THING", "yes",
		"CONTENT_TYPE", "text/plain", "REMOTE_USER", "alice", "SCRIPT_FILENAME", "/srv/app",
		"HTTP_LONG", strings.Repeat("v", 300),
	)
	c.Begin(1, wire.RoleResponder, true)
	c.Record(wire.TypeParams, 1, params[:37])
	c.Record(wire.TypeParams, 1, params[37:])
	c.Record(wire.TypeParams, 1, nil)
	c.Flush()
	// STDIN with padding, written by hand.
	c.NC.Write([]byte{1, byte(wire.TypeStdin), 0, 1, 0, 5, 3, 0, 'h', 'e', 'l', 'l', 'o', 0, 0, 0})
	c.Stdin(1, nil).Flush()
	r := <-got
	c.ReadResponse(1)
	checks := []struct{ name, got, want string }{
		{"Method", r.Method, "POST"},
		{"RequestURI", r.RequestURI, "/a%20b/c?q=1&r=2"},
		{"URL", r.URL.String(), "/a%20b/c?q=1&r=2"},
		{"URL.Path", r.URL.Path, "/a b/c"},
		{"URL.Host", r.URL.Host, ""},
		{"Host", r.Host, "example.com"},
		{"RemoteAddr", r.RemoteAddr, "192.0.2.7:51234"},
		{"Proto", r.Proto, "HTTP/1.1"},
		{"User-Agent", r.Header.Get("User-Agent"), "test/1.0"},
		{"X-Custom-Thing", r.Header.Get("X-Custom-Thing"), "yes"},
		{"Long", r.Header.Get("Long"), strings.Repeat("v", 300)},
		{"Content-Type", r.Header.Get("Content-Type"), "text/plain"},
		{"Host header", r.Header.Get("Host"), ""},
		{"ContentLength", fmt.Sprint(r.ContentLength), "-1"},
		{"TLS", fmt.Sprint(r.TLS != nil), "true"},
		{"body", <-gotBody, "hello"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	env := <-gotEnv
	if all := <-gotParams; all["SCRIPT_NAME"] != "/a b/c" || all["HTTP_X_CUSTOM_THING"] != "yes" || len(all) != 15 {
		t.Errorf("Params = %v", all)
	}
	if env["REMOTE_USER"] != "alice" || env["SCRIPT_FILENAME"] != "/srv/app" {
		t.Errorf("ProcessEnv = %v", env)
	}
	for _, k := range []string{"REQUEST_METHOD", "HTTP_HOST", "REMOTE_ADDR", "CONTENT_TYPE"} {
		if _, ok := env[k]; ok {
			t.Errorf("ProcessEnv has %s, which the request already carries", k)
		}
	}
}

func TestRequestBodies(t *testing.T) {
	type result struct {
		cl     int64
		noBody bool
		body   string
		err    error
	}
	got := make(chan result, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- result{r.ContentLength, r.Body == http.NoBody, string(b), err}
	})
	addr := startServer(t, "tcp", nil, h)
	c := dial(t, "tcp", addr)
	send := func(cl string, body string) result {
		kv := []string{"REQUEST_METHOD", "POST", "REQUEST_URI", "/"}
		if cl != "-" {
			kv = append(kv, "CONTENT_LENGTH", cl)
		}
		c.Begin(1, wire.RoleResponder, true).Params(1, kv...).Stdin(1, []byte(body)).Flush()
		r := <-got
		c.ReadResponse(1)
		return r
	}
	if r := send("-", ""); !r.noBody || r.cl != 0 {
		t.Errorf("no CONTENT_LENGTH, no body: %+v", r)
	}
	if r := send("", ""); !r.noBody {
		t.Errorf("empty CONTENT_LENGTH (nginx for GET): %+v", r)
	}
	if r := send("0", ""); !r.noBody || r.cl != 0 {
		t.Errorf("CONTENT_LENGTH 0: %+v", r)
	}
	if r := send("-", "abc"); r.noBody || r.cl != -1 || r.body != "abc" {
		t.Errorf("body without CONTENT_LENGTH: %+v", r)
	}
	if r := send("3", "abcdef"); r.cl != 3 || r.body != "abc" || r.err != nil {
		t.Errorf("more STDIN than CONTENT_LENGTH: %+v", r)
	}
	if r := send("9", "abc"); r.body != "abc" || !errors.Is(r.err, io.ErrUnexpectedEOF) {
		t.Errorf("STDIN shorter than CONTENT_LENGTH: %+v", r)
	}
	// A bad CONTENT_LENGTH is the web server's fault: 400, handler not run.
	c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "x").Stdin(1, nil).Flush()
	if h, _ := parseCGI(t, c.ReadResponse(1).Stdout); h["Status"] != "400 Bad Request" {
		t.Errorf("bad CONTENT_LENGTH: status %q", h["Status"])
	}
}

func TestAbortCancelsHandler(t *testing.T) {
	for _, afterBody := range []bool{false, true} {
		t.Run(fmt.Sprintf("afterBody=%v", afterBody), func(t *testing.T) {
			started := make(chan struct{})
			causes := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				<-r.Context().Done()
				causes <- context.Cause(r.Context())
				// Writing after the abort fails; the handler just returns.
				if _, err := io.WriteString(w, "late"); !errors.Is(err, fcgi.ErrRequestAborted) {
					t.Errorf("write after abort: %v", err)
				}
			})
			addr := startServer(t, "tcp", nil, h)
			c := dial(t, "tcp", addr)
			c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "10")
			if afterBody {
				c.Stdin(1, []byte("0123456789"))
			} else {
				c.Record(wire.TypeStdin, 1, []byte("01234"))
			}
			c.Flush()
			<-started
			c.Record(wire.TypeAbortRequest, 1, nil).Flush()
			if cause := <-causes; !errors.Is(cause, fcgi.ErrRequestAborted) {
				t.Fatalf("cause %v", cause)
			}
			resp := c.ReadResponse(1)
			if len(resp.Records) != 1 || resp.End.ProtocolStatus != wire.StatusRequestComplete {
				t.Fatalf("want END_REQUEST alone, got %v", resp.Records)
			}
			// Exactly one END_REQUEST: the next record answers a new request.
			c.Get(1, true, "/next")
			if rec := c.Next(); rec.Type != wire.TypeStdout {
				t.Fatalf("after abort: %v", rec)
			}
		})
	}
}

func TestAbortBeforeHandlerStarts(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Begin(5, wire.RoleResponder, true).Record(wire.TypeParams, 5, fcgitest.Pairs("A", "b")).Record(wire.TypeAbortRequest, 5, nil).Flush()
	resp := c.ReadResponse(5)
	if len(resp.Records) != 1 {
		t.Fatalf("got %v", resp.Records)
	}
}

func TestDisconnectCancelsHandler(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, network string) {
		started := make(chan struct{})
		causes := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			<-r.Context().Done()
			causes <- context.Cause(r.Context())
		})
		addr := startServer(t, network, nil, h)
		c := dial(t, network, addr)
		c.Get(1, true, "/slow")
		<-started
		c.NC.Close()
		select {
		case cause := <-causes:
			if !errors.Is(cause, fcgi.ErrConnClosed) {
				t.Fatalf("cause %v", cause)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("handler context not cancelled after the web server closed the connection")
		}
	})
}

func TestHandlerReturnCancelsContext(t *testing.T) {
	ctxs := make(chan context.Context, 1)
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ctxs <- r.Context() }))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/")
	c.ReadResponse(1)
	ctx := <-ctxs
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled after the handler returned")
	}
}

func TestPanicGives500(t *testing.T) {
	logs := &logBuffer{}
	srv := &fcgi.Server{ErrorLog: slog.New(slog.NewTextHandler(logs, nil))}
	mux := http.NewServeMux()
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Lost", "1")
		io.WriteString(w, "partial")
		panic("boom")
	})
	mux.HandleFunc("/", hello)
	addr := startServer(t, "tcp", srv, mux)
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/panic")
	resp := c.ReadResponse(1)
	h, body := parseCGI(t, resp.Stdout)
	if h["Status"] != "500 Internal Server Error" || body != "Internal Server Error\n" || h["X-Lost"] != "" {
		t.Fatalf("got %q %q", h, body)
	}
	if !strings.Contains(logs.String(), "boom") {
		t.Fatalf("panic not logged: %s", logs)
	}
	c.Get(1, true, "/ok")
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "hello, /ok" {
		t.Fatalf("after panic: %q", body)
	}
}

// A panic after the response started cannot become a 500: the response is
// broken. Alone on its connection, the connection is closed so the web
// server does not take a truncated response for a whole one; other
// connections go on.
func TestPanicAfterFlushClosesConn(t *testing.T) {
	srv := &fcgi.Server{ErrorLog: slog.New(slog.NewTextHandler(io.Discard, nil))}
	mux := http.NewServeMux()
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/", hello)
	addr := startServer(t, "tcp", srv, mux)
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/panic")
	var stdout []byte
	for {
		rec, err := c.TryNext()
		if err != nil {
			break
		}
		if rec.Type == wire.TypeEndRequest || rec.Type == wire.TypeStdout && len(rec.Content) == 0 {
			t.Fatalf("broken response completed: %v", rec)
		}
		stdout = append(stdout, rec.Content...)
	}
	if !strings.HasSuffix(string(stdout), "partial") {
		t.Fatalf("stdout %q", stdout)
	}
	c2 := dial(t, "tcp", addr)
	c2.Get(1, true, "/ok")
	if _, body := parseCGI(t, c2.ReadResponse(1).Stdout); body != "hello, /ok" {
		t.Fatalf("other connection: %q", body)
	}
}

func TestFlushSendsHeaderFirst(t *testing.T) {
	step := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-step
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-step
	})
	addr := startServer(t, "tcp", nil, h)
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/events")
	rec := c.Next()
	if rec.Type != wire.TypeStdout || string(rec.Content) != "Status: 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" {
		t.Fatalf("first record %v", rec)
	}
	step <- struct{}{}
	if rec := c.Next(); string(rec.Content) != "data: 1\n\n" {
		t.Fatalf("event record %v", rec)
	}
	step <- struct{}{}
	if resp := c.ReadResponse(1); len(resp.Stdout) != 0 || !resp.StdoutEnded {
		t.Fatalf("end %+v", resp)
	}
}

func TestNoBodyResponses(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/304" {
			w.WriteHeader(http.StatusNotModified)
			if _, err := io.WriteString(w, "x"); err != http.ErrBodyNotAllowed {
				t.Errorf("write on 304: %v", err)
			}
			return
		}
		io.WriteString(w, "<html>body</html>")
	})
	addr := startServer(t, "tcp", nil, h)
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "HEAD", "REQUEST_URI", "/").Stdin(1, nil).Flush()
	hd, body := parseCGI(t, c.ReadResponse(1).Stdout)
	// As net/http: no body, but the header a GET would have.
	if body != "" || hd["Status"] != "200 OK" || hd["Content-Length"] != "17" || hd["Content-Type"] != "text/html; charset=utf-8" {
		t.Fatalf("HEAD: %q %q", hd, body)
	}
	c.Get(1, true, "/304")
	hd, body = parseCGI(t, c.ReadResponse(1).Stdout)
	if body != "" || hd["Status"] != "304 Not Modified" || hd["Content-Length"] != "" {
		t.Fatalf("304: %q %q", hd, body)
	}
	c.Get(1, true, "/html")
	hd, _ = parseCGI(t, c.ReadResponse(1).Stdout)
	if hd["Content-Type"] != "text/html; charset=utf-8" {
		t.Fatalf("sniffed %q", hd["Content-Type"])
	}
}

func TestLargeResponseRecordSizes(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	addr := startServer(t, "unix", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < len(big); i += 100000 {
			io.WriteString(w, big[i:min(i+100000, len(big))])
		}
	}))
	c := dial(t, "unix", addr)
	c.Get(1, true, "/")
	resp := c.ReadResponse(1)
	for _, rec := range resp.Records {
		if rec.ContentLength > wire.MaxContent {
			t.Fatalf("record too long: %v", rec.Header)
		}
	}
	if _, body := parseCGI(t, resp.Stdout); body != big {
		t.Fatalf("body of %d bytes differs", len(body))
	}
}

func TestHeaderInjectionRefused(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-A", "1\r\nStatus: 302")
		w.Header()["Bad Name"] = []string{"x"}
	}))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/")
	h, _ := parseCGI(t, c.ReadResponse(1).Stdout)
	if h["Status"] != "200 OK" || h["X-A"] != "1  Status: 302" || h["Bad Name"] != "" {
		t.Fatalf("headers %q", h)
	}
}

// Malformed input ends the connection that sent it and nothing else.
func TestProtocolErrorsCloseOnlyTheirConn(t *testing.T) {
	addr := startServer(t, "tcp", &fcgi.Server{ErrorLog: slog.New(slog.NewTextHandler(io.Discard, nil))}, http.HandlerFunc(hello))
	bystander := dial(t, "tcp", addr)
	for _, bad := range []struct {
		name string
		raw  []byte
	}{
		{"bad version", []byte{2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0}},
		{"short BEGIN body", []byte{1, 1, 0, 1, 0, 4, 0, 0, 0, 1, 1, 0}},
		{"second BEGIN for an active ID", append(
			[]byte{1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0},
			1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0)},
	} {
		t.Run(bad.name, func(t *testing.T) {
			c := dial(t, "tcp", addr)
			c.NC.Write(bad.raw)
			if rec, err := c.TryNext(); err == nil {
				t.Fatalf("got %v, want the connection closed", rec)
			}
			bystander.Get(1, true, "/fine")
			if _, body := parseCGI(t, bystander.ReadResponse(1).Stdout); body != "hello, /fine" {
				t.Fatalf("bystander got %q", body)
			}
		})
	}
}

func TestParamsLimit(t *testing.T) {
	var called atomic.Bool
	srv := &fcgi.Server{MaxParamsBytes: 4096}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called.Store(true) }))
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleResponder, true)
	for range 10 {
		c.Record(wire.TypeParams, 1, fcgitest.Pairs("HTTP_X", strings.Repeat("p", 1000)))
	}
	c.Record(wire.TypeParams, 1, nil).Stdin(1, nil).Flush()
	h, _ := parseCGI(t, c.ReadResponse(1).Stdout)
	if h["Status"] != "431 Request Header Fields Too Large" || called.Load() {
		t.Fatalf("status %q, handler called %v", h["Status"], called.Load())
	}
	c.Get(1, true, "/ok")
	c.ReadResponse(1)
}

func TestMalformedParamsGive400(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	// A pair declaring a 2 GiB value, followed by three bytes.
	c.Begin(1, wire.RoleResponder, true).Record(wire.TypeParams, 1, []byte{1, 0xff, 0xff, 0xff, 0xff, 'A', 'b', 'c'}).Record(wire.TypeParams, 1, nil).Stdin(1, nil).Flush()
	h, _ := parseCGI(t, c.ReadResponse(1).Stdout)
	if h["Status"] != "400 Bad Request" {
		t.Fatalf("status %q", h["Status"])
	}
}

// Without KEEP_CONN the server closes after the response, but first reads
// what the web server still sends, so the close is orderly: the peer sees
// EOF, not a connection reset.
func TestCloseDrainsUnreadBody(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "not reading your body")
	}))
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleResponder, false).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "300000").Flush()
	resp := c.ReadResponse(1)
	if _, body := parseCGI(t, resp.Stdout); body != "not reading your body" {
		t.Fatalf("body %q", body)
	}
	// The body comes late, after the response: the server must swallow it.
	c.W.WriteStream(wire.TypeStdin, 1, make([]byte, 300000))
	c.Record(wire.TypeStdin, 1, nil)
	if err := c.W.Flush(); err != nil {
		t.Fatalf("sending the body: %v", err)
	}
	c.NC.(*net.TCPConn).CloseWrite()
	if _, err := c.TryNext(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
}

func TestServeNilListenerNeedsSocket(t *testing.T) {
	if err := fcgi.Serve(nil, nil); !errors.Is(err, fcgi.ErrNotListener) {
		t.Fatalf("Serve(nil) with fd 0 not a socket: %v", err)
	}
}

// Serve(nil, h) serves on the listening socket handed over as fd 0, as
// spawn-fcgi and web servers do. The test re-runs its own binary with a
// listener as its standard input.
func TestServeStdinListener(t *testing.T) {
	testServeInherited(t, "/from-fd0", func(f *os.File) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Stdin = f
		return cmd
	})
}

// testServeInherited starts, with command, a copy of the test binary that
// calls Serve(nil, h) on a listening socket handed over as the file f, and
// checks that a request for path is served by it.
func testServeInherited(t *testing.T, path string, command func(f *os.File) *exec.Cmd) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := command(f)
	cmd.Env = append(os.Environ(), "FCGI_TEST_HELPER=serve-stdin")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	c := dial(t, "tcp", l.Addr().String())
	c.Get(1, false, path)
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "helper: "+path {
		t.Fatalf("body %q", body)
	}
}

func helperMain() {
	switch os.Getenv("FCGI_TEST_HELPER") {
	case "serve-stdin":
		err := fcgi.Serve(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "helper: "+r.URL.Path)
		}))
		fmt.Fprintln(os.Stderr, "helper Serve:", err)
		os.Exit(1)
	}
	os.Exit(2)
}

// The web server closes the connection just as requests with bodies
// arrive: each handler that starts sees its body fail (never waits on
// it), whether the close came before or after the body was made. Run
// with -race, this also checks that closing and starting share nothing
// unguarded.
func TestCloseAsHandlersStart(t *testing.T) {
	errs := make(chan error, 100)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errs <- err
	})
	srv := &fcgi.Server{}
	addr := startServer(t, "unix", srv, h)
	for i := 0; i < 100; i++ {
		c := dial(t, "unix", addr)
		c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "REQUEST_URI", "/", "CONTENT_LENGTH", "10").
			Record(wire.TypeStdin, 1, []byte("01234")).Flush()
		if i%2 == 1 {
			time.Sleep(time.Millisecond)
		}
		c.NC.Close()
	}
	// Handlers that started must all end, with an error: none may wait
	// on a body nobody will finish.
	waitFor(t, func() bool { st := srv.Stats(); return st.Conns == 0 && st.InFlight == 0 })
	for len(errs) > 0 {
		if err := <-errs; err == nil {
			t.Fatal("a body cut short by a closed connection read without error")
		}
	}
}

package fcgi_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

// A handler that ignores a body larger than the server's fixed drain
// allowance (1 MiB), on a connection without KEEP_CONN: the server must
// still take the whole declared body before it closes, or the web server,
// still sending it, gets EPIPE or a reset. nginx then answers 502
// ("writev() failed (32: Broken pipe) while sending request to upstream")
// although the response had arrived.
func TestCloseDrainsLargeUnreadBody(t *testing.T) {
	const size = 4 << 20
	forEachNetwork(t, func(t *testing.T, network string) {
		addr := startServer(t, network, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "not reading your body")
		}))
		c := dial(t, network, addr)
		c.Begin(1, wire.RoleResponder, false).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", strconv.Itoa(size)).Flush()
		resp := c.ReadResponse(1)
		if _, body := parseCGI(t, resp.Stdout); body != "not reading your body" {
			t.Fatalf("body %q", body)
		}
		// The whole body, sent after the response as a web server
		// that does not watch for it would.
		sendLate(t, c, wire.TypeStdin, size)
		c.NC.(interface{ CloseWrite() error }).CloseWrite()
		expectEOF(t, c)
	})
}

// sendLate sends n bytes of request 1's stream typ, and its end, after the
// response, as a web server still sending what the handler left unread
// does: the server must take it all, not close under it (EPIPE, reset).
func sendLate(t *testing.T, c *fcgitest.Conn, typ wire.Type, n int) {
	t.Helper()
	c.W.WriteStream(typ, 1, make([]byte, n))
	c.Record(typ, 1, nil)
	if err := c.W.Flush(); err != nil {
		t.Fatalf("sending %v after the response: %v", typ, err)
	}
}

// expectEOF reads the server's close.
func expectEOF(t *testing.T, c *fcgitest.Conn) {
	t.Helper()
	if _, err := c.TryNext(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
}

// gateListener's conns hold the write that carries END_REQUEST for ID 1
// until gate is closed.
type gateListener struct {
	net.Listener
	hit  chan struct{}
	gate chan struct{}
	once sync.Once
}

type gateConn struct {
	net.Conn
	l *gateListener
}

// CloseWrite lets the server send FIN through the gate, as it would on the
// bare connection.
func (c *gateConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

// newGateListener listens on loopback TCP behind a gate.
func newGateListener(t *testing.T) *gateListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &gateListener{Listener: ln, hit: make(chan struct{}), gate: make(chan struct{})}
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &gateConn{c, l}, nil
}

func (c *gateConn) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte{1, byte(wire.TypeEndRequest), 0, 1, 0, 8}) {
		c.l.once.Do(func() { close(c.l.hit) })
		<-c.l.gate
	}
	return c.Conn.Write(p)
}

// A BEGIN_REQUEST with a body arriving while the last response of a
// connection being shut down is written (a multiplexing web server) must
// not cut that response off with a reset: the server drains until the web
// server closes.
func TestLateBeginDoesNotCutLastResponse(t *testing.T) {
	const size = 4 << 20
	gl := newGateListener(t)
	started, release := make(chan struct{}), make(chan struct{})
	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		w.Write(make([]byte, size))
	})}
	serveOn(t, gl, srv)
	c := fcgitest.Dial(t, "tcp", gl.Addr().String())
	c.NC.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.Get(1, true, "/")
	<-started
	go srv.Shutdown(context.Background())
	time.Sleep(100 * time.Millisecond)
	close(release)

	type result struct {
		n   int
		end bool
		err error
	}
	res := make(chan result, 1)
	go func() { // a web server reading at its own pace
		var r result
		for {
			rec, err := c.TryNext()
			if err != nil {
				r.err = err
				res <- r
				return
			}
			if rec.Type == wire.TypeStdout && rec.RequestID == 1 {
				r.n += len(rec.Content)
			}
			if rec.Type == wire.TypeEndRequest && rec.RequestID == 1 {
				r.end = true
				res <- r
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	<-gl.hit
	// HAProxy (multiplexing) sends the next request on the kept connection.
	nc2 := fcgitest.NewConn(t, c.NC)
	go func() {
		nc2.Begin(2, wire.RoleResponder, true).Params(2, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "262144").Stdin(2, make([]byte, 256<<10))
		nc2.W.Flush()
	}()
	time.Sleep(50 * time.Millisecond)
	close(gl.gate)
	r := <-res
	if !r.end {
		t.Fatalf("last response cut off: %d of %d body bytes, then %v", r.n, size, r.err)
	}
}

// A POST sent on a kept multiplexed connection while the last response of
// a shutting-down server is being written gets FCGI_OVERLOADED (it did
// not run), and the Client resends it on a new connection, which reaches
// the replacement process.
func TestLateBeginOverloadedAndResent(t *testing.T) {
	gl := newGateListener(t)
	started, release := make(chan struct{}), make(chan struct{})
	srv1 := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			close(started)
			<-release
		}
		w.Write([]byte("old"))
	})}
	serveOn(t, gl, srv1)
	addr2 := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("new")) // the replacement process
	}))
	var dials atomic.Int32
	c := &fcgi.Client{Addr: gl.Addr().String(), Multiplex: fcgi.MultiplexOn,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) > 1 {
				addr = addr2
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	defer c.Close()
	do := func(method, p string) (string, error) {
		req := &fcgi.Request{Params: map[string]string{"REQUEST_METHOD": method, "REQUEST_URI": p, "SCRIPT_NAME": p}}
		resp, err := c.Do(context.Background(), req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	first := make(chan error, 1)
	go func() { _, err := do("GET", "/block"); first <- err }()
	<-started
	go srv1.Shutdown(context.Background())
	time.Sleep(100 * time.Millisecond)
	close(release)
	<-gl.hit
	post := make(chan error, 1)
	go func() {
		body, err := do("POST", "/form")
		if err == nil && body != "new" {
			t.Errorf("POST answered %q", body)
		}
		post <- err
	}()
	time.Sleep(200 * time.Millisecond)
	close(gl.gate)
	if err := <-first; err != nil {
		t.Errorf("GET: %v", err)
	}
	if err := <-post; err != nil {
		t.Errorf("POST: %v", err)
	}
}

// Shutdown while the web server still sends the body a handler left
// unread (no KEEP_CONN), and Shutdown with a response still being written
// on a kept connection: neither closes the connection under the web
// server's feet (EPIPE, or a cut response); both drain.
func TestShutdownDrainsRatherThanCloses(t *testing.T) {
	t.Run("unread body", func(t *testing.T) {
		srv := &fcgi.Server{}
		addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "not reading your body")
		}))
		c := dial(t, "tcp", addr)
		c.Begin(1, wire.RoleResponder, false).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", strconv.Itoa(4<<20)).Flush()
		c.ReadResponse(1)
		go srv.Shutdown(context.Background())
		time.Sleep(20 * time.Millisecond)
		sendLate(t, c, wire.TypeStdin, 4<<20)
	})
	t.Run("response being written", func(t *testing.T) {
		gl := newGateListener(t)
		srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })}
		serveOn(t, gl, srv)
		c := fcgitest.Dial(t, "tcp", gl.Addr().String())
		c.Get(1, true, "/")
		<-gl.hit
		go srv.Shutdown(context.Background())
		time.Sleep(50 * time.Millisecond)
		close(gl.gate)
		if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "hello" {
			t.Fatalf("body %q", body)
		}
	})
}

// A Filter handler that answers without reading a DATA stream larger than
// the fixed drain allowance, on a closing connection: the web server
// still sending the DATA must not meet a closed connection.
func TestCloseDrainsUnreadFilterData(t *testing.T) {
	srv := &fcgi.Server{Filter: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "not reading your data") })}
	addr := startServer(t, "tcp", srv, http.NotFoundHandler())
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleFilter, false).Params(1, "REQUEST_METHOD", "GET", "CONTENT_LENGTH", "0", "FCGI_DATA_LENGTH", strconv.Itoa(4<<20), "FCGI_DATA_LAST_MOD", "1").Stdin(1, nil).Flush()
	c.ReadResponse(1)
	sendLate(t, c, wire.TypeData, 4<<20)
}

// The body a handler ignored keeps streaming in, and the serve goroutine
// begins the drain on a record before finish wakes it: that wake-up must
// not end the drain at once (closing with input unread is a reset).
func TestDrainNotCutByLateWakeUp(t *testing.T) {
	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, "no thanks")
	})}
	addr := startServer(t, "tcp", srv, nil)
	for i := 0; i < 10; i++ {
		c := dial(t, "tcp", addr)
		c.Begin(1, wire.RoleResponder, false).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", strconv.Itoa(64<<20)).Flush()
		stop := make(chan struct{})
		werr := make(chan error, 1)
		go func() {
			chunk := make([]byte, 32<<10)
			w := wire.NewWriter(c.NC)
			for sent := 0; ; sent += len(chunk) {
				select {
				case <-stop:
					werr <- nil
					return
				default:
				}
				w.WriteRecord(wire.TypeStdin, 1, chunk)
				if err := w.Flush(); err != nil {
					werr <- err
					return
				}
				if sent > 2<<20 {
					time.Sleep(2 * time.Millisecond)
				}
			}
		}()
		c.ReadResponse(1)
		time.Sleep(300 * time.Millisecond) // within drainTimeout
		close(stop)
		if err := <-werr; err != nil {
			t.Fatalf("run %d: the server closed while the body was still coming: %v", i, err)
		}
		c.NC.Close()
	}
}

// KEEP_CONN request whose handler ignored a 4 MiB body; Shutdown comes
// while the web server is still sending that body.
func TestShutdownKeptConnUnreadBody(t *testing.T) {
	const size = 4 << 20
	srv := &fcgi.Server{}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "not reading your body")
	}))
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", strconv.Itoa(size)).Flush()
	c.ReadResponse(1)
	go srv.Shutdown(context.Background())
	time.Sleep(20 * time.Millisecond)
	sendLate(t, c, wire.TypeStdin, size)
	expectEOF(t, c)
}

// A multiplexing web server reuses the kept connection as soon as the
// END_REQUEST arrives (or, on a real network, sent it just before): the
// late BEGIN should get OVERLOADED, not a bare FIN.
func TestLateBeginMultiplexedGetsOverloaded(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	srv := &fcgi.Server{}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			close(started)
			<-release
		}
		io.WriteString(w, "ok")
	}))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/block")
	<-started
	c.Get(2, true, "/fast") // two in flight: multiplexed
	c.ReadResponse(2)
	go srv.Shutdown(context.Background())
	time.Sleep(50 * time.Millisecond)
	close(release)
	c.ReadResponse(1)
	c.Get(3, true, "/late")
	for {
		rec, err := c.TryNext()
		if err != nil {
			t.Fatalf("no END_REQUEST for the late BEGIN, got %v; stats %+v", err, srv.Stats())
		}
		if rec.Type == wire.TypeEndRequest && rec.RequestID == 3 {
			if end, _ := wire.ParseEndRequest(rec.Content); end.ProtocolStatus != wire.StatusOverloaded {
				t.Fatalf("late BEGIN answered %+v, want OVERLOADED", end)
			}
			return
		}
	}
}

// A Filter refused before its handler starts (413): its FCGI_DATA
// (FCGI_DATA_LENGTH) does not count in the drain.
func TestCloseDrainsRefusedFilterData(t *testing.T) {
	const size = 32 << 20
	srv := &fcgi.Server{MaxRequestBodyBytes: 10, Filter: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	addr := startServer(t, "tcp", srv, http.NotFoundHandler())
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleFilter, false).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "100",
		"FCGI_DATA_LENGTH", strconv.Itoa(size), "FCGI_DATA_LAST_MOD", "1").Flush()
	c.ReadResponse(1) // 413
	c.Stdin(1, make([]byte, 100))
	sendLate(t, c, wire.TypeData, size)
	expectEOF(t, c)
}

// A request without KEEP_CONN abandoned (handler panicked after output)
// beside another request: the connection should still close once the
// other ends.
func TestAbandonedRequestHonoursKeepConn(t *testing.T) {
	release := make(chan struct{})
	srv := &fcgi.Server{}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("boom")
		}
		<-release
		io.WriteString(w, "ok")
	}))
	c := dial(t, "tcp", addr)
	c.Get(2, true, "/wait")
	time.Sleep(20 * time.Millisecond)
	c.Get(1, false, "/panic")
	c.ReadResponse(1)
	close(release)
	c.ReadResponse(2)
	c.Timeout = time.Second
	if _, err := c.TryNext(); err != io.EOF {
		t.Fatalf("want EOF (KEEP_CONN was off for request 1), got %v", err)
	}
}

// The handler answers before the empty STDIN has been read (no body, or
// one read to its CONTENT_LENGTH), and the web server sends that record
// apart: a later Shutdown still drains the idle connection for the short
// time, not the long one meant for a body still coming.
func TestShutdownIdleAfterEarlyAnswerIsQuick(t *testing.T) {
	for _, cl := range []string{"0", "5"} {
		srv := &fcgi.Server{}
		addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			io.WriteString(w, "ok")
		}))
		c := dial(t, "tcp", addr)
		c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", cl)
		if cl != "0" {
			c.Record(wire.TypeStdin, 1, []byte("hello"))
		}
		c.Flush()
		c.ReadResponse(1)
		c.Record(wire.TypeStdin, 1, nil).Flush()
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("CONTENT_LENGTH %s: Shutdown took %v, as if a body were still coming", cl, d)
		}
	}
}

package fcgi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// 10,000 BEGIN_REQUESTs that never finish their params hold a bounded
// amount of memory, do not stop other clients being served, and are all
// cleaned up by the read timeout.
func TestStalledRequestsAreBoundedAndExpire(t *testing.T) {
	srv := &fcgi.Server{ReadTimeout: 500 * time.Millisecond, MaxRequests: 20000, ErrorLog: quietLog}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(hello))
	before := heapInUse()
	const conns, perConn = 50, 200
	stalled := make([]*fcgitest.Conn, conns)
	for i := range stalled {
		c := dial(t, "tcp", addr)
		for id := uint16(1); id <= perConn; id++ {
			c.Begin(id, wire.RoleResponder, true).Record(wire.TypeParams, id, fcgitest.Pairs("REQUEST_METHOD", "GET"))
		}
		c.Flush()
		stalled[i] = c
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().Requests < conns*perConn && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := srv.Stats().Requests; got < conns*perConn {
		t.Fatalf("only %d requests begun", got)
	}
	grown := int64(heapInUse()) - int64(before)
	t.Logf("heap grew by %d KiB for %d stalled requests", grown>>10, conns*perConn)
	if grown > 64<<20 {
		t.Fatalf("heap grew by %d MiB", grown>>20)
	}
	// Others are still served meanwhile.
	other := dial(t, "tcp", addr)
	other.Get(1, true, "/meanwhile")
	if _, body := parseCGI(t, other.ReadResponse(1).Stdout); body != "hello, /meanwhile" {
		t.Fatalf("other client got %q", body)
	}
	// Every stalled request is answered 408 by the timeout.
	ids := make([]uint16, perConn)
	for i := range ids {
		ids[i] = uint16(i + 1)
	}
	for _, c := range stalled[:3] {
		for id, r := range c.ReadResponses(ids...) {
			if h, _ := parseCGI(t, r.Stdout); h["Status"] != "408 Request Timeout" {
				t.Fatalf("request %d: %q", id, h["Status"])
			}
		}
	}
	for srv.Stats().InFlight > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := srv.Stats(); st.InFlight != 0 || st.Timeouts < conns*perConn {
		t.Fatalf("after the timeout: %+v", st)
	}
}

// Params far past the limit are refused at the limit; the server does not
// keep what comes after.
func TestHugeParamsRefusedAtLimit(t *testing.T) {
	srv := &fcgi.Server{ErrorLog: quietLog}
	addr := startServer(t, "unix", srv, http.HandlerFunc(hello))
	c := dial(t, "unix", addr)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	chunk := fcgitest.Pairs("HTTP_X_FILL", strings.Repeat("x", 60000))
	c.Begin(1, wire.RoleResponder, true).Flush()
	// 32 MiB of PARAMS, sent while reading what comes back.
	go func() {
		for sent := 0; sent < 32<<20; sent += len(chunk) {
			c.W.WriteRecord(wire.TypeParams, 1, chunk)
			if c.W.Flush() != nil {
				return
			}
		}
		c.Record(wire.TypeParams, 1, nil).Stdin(1, nil)
		c.W.Flush()
	}()
	h, _ := parseCGI(t, c.ReadResponse(1).Stdout)
	if h["Status"] != "431 Request Header Fields Too Large" {
		t.Fatalf("status %q", h["Status"])
	}
	runtime.ReadMemStats(&ms)
	if alloc := ms.TotalAlloc - before; alloc > 16<<20 {
		t.Fatalf("allocated %d MiB for a request refused at 1 MiB", alloc>>20)
	}
}

// A web server that stops reading a large response: the write timeout
// frees the handler.
func TestWriteTimeoutFreesHandler(t *testing.T) {
	srv := &fcgi.Server{WriteTimeout: 300 * time.Millisecond, ErrorLog: quietLog}
	result := make(chan error, 1)
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 4096 { // 256 MiB: more than any socket buffer
			if _, err := w.Write(chunk); err != nil {
				result <- err
				return
			}
		}
		result <- nil
	}))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/big") // and never read
	select {
	case err := <-result:
		if !errors.Is(err, fcgi.ErrConnClosed) {
			t.Fatalf("handler write error %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler still blocked on a peer that does not read")
	}
	if srv.Stats().Timeouts == 0 {
		t.Fatal("timeout not counted")
	}
}

// An idle kept connection is closed at IdleTimeout as the timeout it is: it
// is counted in Timeouts, not in ProtocolErrors, and logged below Warn (a
// web server keeping connections longer than the server would otherwise
// write a warning for each).
func TestIdleTimeoutClosesKeptConn(t *testing.T) {
	var log logBuffer
	srv := &fcgi.Server{IdleTimeout: 200 * time.Millisecond,
		ErrorLog: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/")
	c.ReadResponse(1)
	start := time.Now()
	if _, err := c.TryNext(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v", d)
	}
	if !eventually(func() bool { return srv.Stats().Conns == 0 }) {
		t.Fatal("connection still counted open")
	}
	if st := srv.Stats(); st.Timeouts != 1 || st.ProtocolErrors != 0 {
		t.Fatalf("stats %+v, want 1 timeout and no protocol error", st)
	}
	if log.String() != "" {
		t.Fatalf("idle close logged at Warn or above:\n%s", log.String())
	}
}

func TestWebServerAddrs(t *testing.T) {
	srv := &fcgi.Server{WebServerAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}, ErrorLog: quietLog}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/")
	if _, err := c.TryNext(); err == nil {
		t.Fatal("a peer outside WebServerAddrs was served")
	}
	if st := srv.Stats(); st.ConnsRefused != 1 {
		t.Fatalf("stats %+v", st)
	}
	srv2 := &fcgi.Server{WebServerAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	c2 := dial(t, "tcp", startServer(t, "tcp", srv2, http.HandlerFunc(hello)))
	c2.Get(1, true, "/ok")
	c2.ReadResponse(1)
}

// An IPv4 peer is allowed by a prefix written in the IPv4-mapped IPv6
// form, whether given as WebServerAddrs or in FCGI_WEB_SERVER_ADDRS.
func TestWebServerAddrsMappedPrefix(t *testing.T) {
	for _, p := range []string{"::ffff:127.0.0.1/128", "::ffff:127.0.0.0/104", "127.0.0.1/32"} {
		t.Run(p, func(t *testing.T) {
			srv := &fcgi.Server{WebServerAddrs: []netip.Prefix{netip.MustParsePrefix(p)}, ErrorLog: quietLog}
			c := dial(t, "tcp", startServer(t, "tcp", srv, http.HandlerFunc(hello)))
			c.Get(1, true, "/")
			if r := c.ReadResponse(1); r.End.ProtocolStatus != wire.StatusRequestComplete {
				t.Fatalf("status %v", r.End.ProtocolStatus)
			}
		})
		t.Run("env/"+p, func(t *testing.T) {
			t.Setenv("FCGI_WEB_SERVER_ADDRS", "192.0.2.1, "+p)
			srv := &fcgi.Server{ErrorLog: quietLog}
			c := dial(t, "tcp", startServer(t, "tcp", srv, http.HandlerFunc(hello)))
			c.Get(1, true, "/")
			c.ReadResponse(1)
		})
	}
	// And a mapped prefix that does not hold the peer still refuses it.
	srv := &fcgi.Server{WebServerAddrs: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}, ErrorLog: quietLog}
	c := dial(t, "tcp", startServer(t, "tcp", srv, http.HandlerFunc(hello)))
	c.Get(1, true, "/")
	if _, err := c.TryNext(); err == nil {
		t.Fatal("a peer outside a mapped prefix was served")
	}
}

func TestParseWebServerAddrs(t *testing.T) {
	got, err := fcgi.ParseWebServerAddrs(" 10.0.0.1, ::1,192.168.0.0/16 ,::ffff:10.1.2.3, ::ffff:127.0.0.0/104")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[10.0.0.1/32 ::1/128 192.168.0.0/16 10.1.2.3/32 127.0.0.0/8]" {
		t.Fatalf("got %v", got)
	}
	if _, err := fcgi.ParseWebServerAddrs("10.0.0.1,nonsense"); err == nil {
		t.Fatal("bad address accepted")
	}
}

func TestRequestLimits(t *testing.T) {
	release := make(chan struct{})
	block := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release })
	srv := &fcgi.Server{MaxRequestsPerConn: 1, MaxRequests: 2, ErrorLog: quietLog}
	addr := startServer(t, "tcp", srv, block)
	defer close(release)
	a := dial(t, "tcp", addr)
	a.Get(1, true, "/")
	a.Get(2, true, "/")
	if r := a.ReadResponse(2); r.End.ProtocolStatus != wire.StatusCantMpxConn {
		t.Fatalf("second request on a non-multiplexing connection: %v", r.End.ProtocolStatus)
	}
	b := dial(t, "tcp", addr)
	b.Get(1, true, "/")
	waitFor(t, func() bool { return srv.Stats().InFlight == 2 })
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/")
	if r := c.ReadResponse(1); r.End.ProtocolStatus != wire.StatusOverloaded {
		t.Fatalf("request over MaxRequests: %v", r.End.ProtocolStatus)
	}
	if st := srv.Stats(); st.Overloaded != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	waitForMsg(t, "the condition", cond)
}

// waitForMsg is waitFor that names what it waits for.
func waitForMsg(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Shutdown lets the request in flight finish, closes idle connections at
// once, refuses new connections and returns when all is done.
func TestShutdownGraceful(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inHandler := make(chan struct{})
	release := make(chan struct{})
	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inHandler)
		<-release
		io.WriteString(w, "finished")
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	idle := dial(t, "tcp", l.Addr().String())
	busy := dial(t, "tcp", l.Addr().String())
	busy.Get(1, true, "/")
	<-inHandler
	waitFor(t, func() bool { return srv.Stats().Conns == 2 })
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if err := <-served; !errors.Is(err, fcgi.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := idle.TryNext(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Fatal("new connection accepted during shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if _, body := parseCGI(t, busy.ReadResponse(1).Stdout); body != "finished" {
		t.Fatalf("in-flight request got %q", body)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestShutdownContextExpires(t *testing.T) {
	release := make(chan struct{})
	srv := &fcgi.Server{}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/")
	waitFor(t, func() bool { return srv.Stats().InFlight == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	close(release)
}

// Serve(nil, h) under systemd socket activation serves the socket passed
// as fd 3, when LISTEN_PID names the process.
func TestServeSystemdSocket(t *testing.T) {
	testServeInherited(t, "/systemd", func(f *os.File) *exec.Cmd {
		// The shell learns its pid and execs the test binary in its
		// place, as systemd sets LISTEN_PID for the process it starts.
		cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -test.run='^$'`, os.Args[0])
		cmd.ExtraFiles = []*os.File{f}
		return cmd
	})
}

func TestListenRemovesStaleSocket(t *testing.T) {
	path := t.TempDir() + "/s"
	l, err := fcgi.Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	// A live server keeps its socket.
	if _, err := fcgi.Listen("unix:" + path); err == nil {
		t.Fatal("took over a live socket")
	}
	// A dead one leaves a file behind that is reused.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := fcgi.Listen("unix:" + path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

func TestMaxRequestBodyBytes(t *testing.T) {
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	srv := &fcgi.Server{MaxRequestBodyBytes: 10, ErrorLog: quietLog}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- result{string(b), err}
	}))
	c := dial(t, "tcp", addr)
	post := func(cl string, body string) {
		kv := []string{"REQUEST_METHOD", "POST", "REQUEST_URI", "/"}
		if cl != "" {
			kv = append(kv, "CONTENT_LENGTH", cl)
		}
		c.Begin(1, wire.RoleResponder, true).Params(1, kv...).Stdin(1, []byte(body)).Flush()
	}
	post("11", "01234567890")
	if h, _ := parseCGI(t, c.ReadResponse(1).Stdout); h["Status"] != "413 Request Entity Too Large" {
		t.Fatalf("declared too large: %q", h["Status"])
	}
	post("10", "0123456789")
	if r := <-got; r.body != "0123456789" || r.err != nil {
		t.Fatalf("at the limit: %+v", r)
	}
	c.ReadResponse(1)
	post("", "0123456789abc")
	var mbe *http.MaxBytesError
	if r := <-got; r.body != "0123456789" || !errors.As(r.err, &mbe) || mbe.Limit != 10 {
		t.Fatalf("undeclared body past the limit: %+v", r)
	}
	c.ReadResponse(1)
}

func TestResponseControllerDeadlines(t *testing.T) {
	errs := make(chan error, 2)
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			errs <- err
			return
		}
		// The body never finishes: the read deadline ends the wait.
		_, err := io.ReadAll(r.Body)
		errs <- err
		rc.SetWriteDeadline(time.Now().Add(-time.Second))
		io.WriteString(w, "buffered")
		errs <- rc.Flush()
		rc.SetWriteDeadline(time.Time{})
		io.WriteString(w, " and sent")
	}))
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "100").Record(wire.TypeStdin, 1, []byte("part")).Flush()
	if err := <-errs; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	if err := <-errs; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("flush past the write deadline: %v", err)
	}
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "buffered and sent" {
		t.Fatalf("body %q", body)
	}
}

// Deadlines are moved lazily: a read deadline left early by a request
// fires while the connection is idle, and must only re-arm, not close it.
func TestIdleTimeoutAfterEarlierReadDeadline(t *testing.T) {
	srv := &fcgi.Server{ReadTimeout: 100 * time.Millisecond, IdleTimeout: 700 * time.Millisecond}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(hello))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/a")
	c.ReadResponse(1)
	time.Sleep(300 * time.Millisecond) // past the first request's read deadline
	c.Get(1, true, "/b")
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "hello, /b" {
		t.Fatalf("body %q", body)
	}
	idle := time.Now()
	if _, err := c.TryNext(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if d := time.Since(idle); d < 500*time.Millisecond || d > 5*time.Second {
		t.Fatalf("closed after %v idle, want about 700ms", d)
	}
	if st := srv.Stats(); st.Timeouts != 1 {
		t.Fatalf("timeouts counted: %d, want the idle one only", st.Timeouts)
	}
}

// A ConnState callback that reads Stats, as an exporter would, while
// Shutdown and Close run: neither may deadlock with the callback.
func TestShutdownWithConnStateCallingStats(t *testing.T) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &fcgi.Server{Handler: http.HandlerFunc(hello), ErrorLog: quietLog}
		srv.ConnState = func(net.Conn, fcgi.ConnState) { srv.Stats() }
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		stop := make(chan struct{})
		var clients sync.WaitGroup
		for j := 0; j < 8; j++ {
			clients.Add(1)
			go func() {
				defer clients.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					nc, err := net.Dial("tcp", l.Addr().String())
					if err != nil {
						return
					}
					// Not Flush or Next: they fail the test, which
					// another goroutine may not do.
					c := fcgitest.NewConn(t, nc)
					c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "GET", "REQUEST_URI", "/").Stdin(1, nil)
					c.W.Flush()
					c.TryNext()
					nc.Close()
				}
			}()
		}
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			done <- srv.Close()
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown/Close deadlocked with a ConnState callback calling Stats")
		}
		close(stop)
		clients.Wait()
		<-served
	}
}

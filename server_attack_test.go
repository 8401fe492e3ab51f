package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

// A handler that does not read its body, while the web server sends more of
// it than MaxBodyBuffer holds, leaves the connection's reader waiting for
// room. The request's ReadTimeout still bounds that wait: after it, the
// reader goes on and sees the abort, FIN or reset that follows, and the
// handler's context ends.
func TestFullBodyBufferSeesEnding(t *testing.T) {
	for _, ending := range []string{"abort", "fin", "rst"} {
		t.Run(ending, func(t *testing.T) {
			checkLeaks(t)
			ended := make(chan error, 1)
			srv := &fcgi.Server{MaxBodyBuffer: 1024, ReadTimeout: 300 * time.Millisecond, ErrorLog: quietLog}
			addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
				ended <- context.Cause(r.Context())
			}))
			c := dial(t, "tcp", addr)
			c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "REQUEST_URI", "/", "CONTENT_LENGTH", "1048576")
			for range 8 {
				c.Record(wire.TypeStdin, 1, bytes.Repeat([]byte("b"), 1024))
			}
			c.Flush()
			switch ending {
			case "abort":
				c.Record(wire.TypeAbortRequest, 1, nil).Flush()
			case "rst":
				c.NC.(*net.TCPConn).SetLinger(0)
				c.NC.Close()
			case "fin":
				c.NC.Close()
			}
			select {
			case <-ended:
			case <-time.After(10 * time.Second):
				t.Fatalf("handler's context still alive 10 s after the %s: %+v", ending, srv.Stats())
			}
			if !eventuallyFor(5*time.Second, func() bool { return srv.Stats().InFlight == 0 }) {
				t.Fatalf("slot not given back: %+v", srv.Stats())
			}
		})
	}
}

// A Filter whose web server sends FCGI_DATA before the end of STDIN (§6.4
// has it the other way round), past MaxBodyBuffer, to a handler that reads
// its body first as FilterData asks: the handler waits for STDIN behind the
// DATA that waits for it. ReadTimeout ends the wait: the handler's body
// fails with ErrReadTimeout, the request is answered and the connection
// serves on.
func TestFilterDataBeforeStdinBodyReadFirst(t *testing.T) {
	checkLeaks(t)
	bodyErr := make(chan error, 2)
	srv := &fcgi.Server{MaxBodyBuffer: 1024, ReadTimeout: 300 * time.Millisecond, ErrorLog: quietLog,
		Filter: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			bodyErr <- err
			d, _ := fcgi.FilterDataOf(r)
			data, derr := io.ReadAll(d)
			fmt.Fprintf(w, "body=%s data=%d err=%v", body, len(data), derr)
		})}
	addr := startServer(t, "unix", srv, nil)
	c := dial(t, "unix", addr)
	data := bytes.Repeat([]byte("d"), 8<<10)
	c.Begin(1, wire.RoleFilter, true).Params(1, filterParams("in", len(data))...)
	for p := data; len(p) > 0; p = p[1024:] {
		c.Record(wire.TypeData, 1, p[:1024])
	}
	c.Record(wire.TypeData, 1, nil).Stdin(1, []byte("in")).Flush()
	r := c.ReadResponse(1)
	if r.End.ProtocolStatus != wire.StatusRequestComplete {
		t.Fatalf("protocol status %v", r.End.ProtocolStatus)
	}
	if err := <-bodyErr; !errors.Is(err, fcgi.ErrReadTimeout) {
		t.Fatalf("body error %v, want ErrReadTimeout", err)
	}
	// The connection still serves, in the order of §6.4.
	c.Begin(1, wire.RoleFilter, true).Params(1, filterParams("x", 2)...).Stdin(1, []byte("x")).
		Record(wire.TypeData, 1, []byte("ok")).Record(wire.TypeData, 1, nil).Flush()
	<-bodyErr
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "body=x data=2 err=<nil>" {
		t.Fatalf("second request: %q", body)
	}
	if st := srv.Stats(); st.InFlight != 0 || st.Timeouts == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// MaxConns bounds the connections of the Server, not of each listener it
// serves: with MaxConns 1 and two listeners, a connection on the second
// waits while one on the first is served.
func TestMaxConnsAcrossListeners(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	srv := &fcgi.Server{MaxConns: 1, ErrorLog: quietLog, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		io.WriteString(w, "ok")
	})}
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, l, srv)
		addrs = append(addrs, l.Addr().String())
	}
	defer close(release)
	first := dial(t, "tcp", addrs[0])
	first.Get(1, true, "/hold")
	if !eventually(func() bool { return srv.Stats().InFlight == 1 }) {
		t.Fatal("first request not in flight")
	}
	second := dial(t, "tcp", addrs[1])
	second.Timeout = 500 * time.Millisecond
	second.Get(1, true, "/second")
	if rec, err := second.TryNext(); err == nil {
		t.Fatalf("a second connection was served with MaxConns 1: %v (stats %+v)", rec, srv.Stats())
	}
	if n := srv.Stats().Conns; n != 1 {
		t.Fatalf("%d connections open, want 1", n)
	}
	// Once the first ends, the second is served.
	release <- struct{}{}
	first.ReadResponse(1)
	first.NC.Close()
	second.Timeout = 10 * time.Second
	if _, body := parseCGI(t, second.ReadResponse(1).Stdout); !strings.HasPrefix(body, "ok") {
		t.Fatalf("second: %q", body)
	}
}

// A connection accepted while every MaxConns slot is taken waits for one,
// and Shutdown closes it rather than leaving it open and unserved; the
// request in flight still finishes.
func TestShutdownClosesConnWaitingForSlot(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	srv := &fcgi.Server{MaxConns: 1, ErrorLog: quietLog, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, l, srv)
	first := dial(t, "tcp", l.Addr().String())
	first.Get(1, true, "/")
	if !eventually(func() bool { return srv.Stats().InFlight == 1 }) {
		t.Fatal("first request not in flight")
	}
	waiting := dial(t, "tcp", l.Addr().String())
	waiting.Get(1, true, "/")
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	if rec, err := waiting.TryNext(); err == nil || isTimeoutErr(err) {
		t.Fatalf("connection waiting for a slot: %v, %v; want it closed by Shutdown", rec, err)
	}
	close(release)
	if _, body := parseCGI(t, first.ReadResponse(1).Stdout); body != "ok" {
		t.Fatalf("request in flight: %q", body)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// Close, like Shutdown, closes a connection accepted while every MaxConns
// slot is taken, and the server is left with nothing open.
func TestCloseClosesConnWaitingForSlot(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	defer close(release)
	srv := &fcgi.Server{MaxConns: 1, ErrorLog: quietLog, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, l, srv)
	first := dial(t, "tcp", l.Addr().String())
	first.Get(1, true, "/")
	if !eventually(func() bool { return srv.Stats().InFlight == 1 }) {
		t.Fatal("first request not in flight")
	}
	waiting := dial(t, "tcp", l.Addr().String())
	waiting.Get(1, true, "/")
	srv.Close()
	if rec, err := waiting.TryNext(); err == nil || isTimeoutErr(err) {
		t.Fatalf("connection waiting for a slot: %v, %v; want it closed by Close", rec, err)
	}
	if !eventually(func() bool { st := srv.Stats(); return st.Conns == 0 && st.InFlight == 0 }) {
		t.Fatalf("stats after Close: %+v", srv.Stats())
	}
}

// isTimeoutErr reports whether err is a deadline expiring.
func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// countingListener counts the Write calls made on the connections it
// accepts: each is a system call of the server's.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c.(*net.UnixConn), l.writes}, nil
}

type countingConn struct {
	*net.UnixConn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.UnixConn.Write(p)
}

// Management records and refused BEGIN_REQUESTs sent together are answered
// together: 8 bytes from the web server do not cost the server a write
// system call each.
func TestManagementAnswersCoalesced(t *testing.T) {
	const n = 20000
	_, writes := burstWrites(t, n, func(c *fcgitest.Conn, i int) {
		switch i % 3 {
		case 0:
			c.Record(wire.Type(42), 0, nil)
		case 1:
			c.Record(wire.TypeGetValues, 0, fcgitest.Pairs(wire.ValueMpxsConns, ""))
		case 2:
			c.Begin(uint16(i), wire.Role(9), true)
		}
	}, func(c *fcgitest.Conn, i int) {
		rec := c.Next()
		want := [...]wire.Type{wire.TypeUnknownType, wire.TypeGetValuesResult, wire.TypeEndRequest}[i%3]
		if rec.Type != want {
			t.Fatalf("answer %d: %v, want type %v", i, rec, want)
		}
	})
	t.Logf("%d write calls for %d answers", writes, n)
	if writes > n/10 {
		t.Fatalf("%d write calls for %d answers", writes, n)
	}
}

// An answer held back for the records behind it still goes out when the
// reader then waits: here, behind a body that fills MaxBodyBuffer for a
// handler that does not read.
func TestHeldAnswerNotStuckBehindFullBody(t *testing.T) {
	checkLeaks(t)
	srv := &fcgi.Server{MaxBodyBuffer: 1024, ErrorLog: quietLog}
	addr := startServer(t, "unix", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	c := dial(t, "unix", addr)
	c.Timeout = 5 * time.Second
	c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "100000").
		Record(wire.TypeGetValues, 0, fcgitest.Pairs(wire.ValueMpxsConns, ""))
	for range 4 {
		c.Record(wire.TypeStdin, 1, make([]byte, 1024))
	}
	c.Flush()
	if rec := c.Next(); rec.Type != wire.TypeGetValuesResult {
		t.Fatalf("got %v", rec)
	}
}

// rawRecord encodes a record with padding, which wire.Writer never sends.
func rawRecord(t wire.Type, id uint16, content []byte, pad int) []byte {
	b := []byte{1, byte(t), byte(id >> 8), byte(id), byte(len(content) >> 8), byte(len(content)), byte(pad), 0}
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

// Records a web server has no business sending: every type with request ID
// 0, odd GET_VALUES encodings, records for IDs never begun or already
// ended, maximal records with padding. Each is answered as §3.3 and §4 say
// or ignored, one GET_VALUES_RESULT per GET_VALUES, and the connection
// serves on.
func TestHostileRecordsAnsweredOrIgnored(t *testing.T) {
	checkLeaks(t)
	srv := &fcgi.Server{MaxConns: 7, ErrorLog: quietLog}
	addr := startServer(t, "unix", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d", r.URL.Path, len(b))
	}))
	c := dial(t, "unix", addr)
	var raw []byte
	wantUnknown := 0
	for typ := range 256 {
		switch wire.Type(typ) {
		case wire.TypeGetValues, wire.TypeGetValuesResult, wire.TypeUnknownType:
			continue
		}
		raw = append(raw, rawRecord(wire.Type(typ), 0, []byte("xxxxxxxx"), typ%3)...)
		wantUnknown++
	}
	huge := bytes.Repeat(fcgitest.Pairs(wire.ValueMaxConns, ""), 65535/16)
	getValues := [][]byte{
		huge,                                    // the answer does not grow with the question
		{0x80, 0, 0, 14, 0},                     // a name of 14 bytes, in four
		{0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0}, // lengths past the record
		{0x80, 0, 0},                            // a length cut short
		append([]byte{14, 0x80, 0, 0, 0}, wire.ValueMaxConns...),
		nil,
	}
	for _, q := range getValues {
		raw = append(raw, rawRecord(wire.TypeGetValues, 0, q, 7)...)
	}
	// Records for IDs never begun, and an ABORT for one.
	raw = append(raw, rawRecord(wire.TypeStdin, 9, []byte("x"), 0)...)
	raw = append(raw, rawRecord(wire.TypeAbortRequest, 9, nil, 0)...)
	raw = append(raw, rawRecord(wire.TypeEndRequest, 9, make([]byte, 8), 0)...)
	if _, err := c.NC.Write(raw); err != nil {
		t.Fatal(err)
	}
	unknown, results := 0, 0
	for unknown < wantUnknown || results < len(getValues) {
		rec := c.Next()
		switch rec.Type {
		case wire.TypeUnknownType:
			unknown++
		case wire.TypeGetValuesResult:
			results++
			if len(rec.Content) > 64 {
				t.Fatalf("GET_VALUES_RESULT of %d bytes", len(rec.Content))
			}
		default:
			t.Fatalf("unexpected %v", rec)
		}
	}
	if unknown != wantUnknown {
		t.Fatalf("%d UNKNOWN_TYPE, want %d", unknown, wantUnknown)
	}
	// A maximal STDIN record with maximal padding, then ABORT of the ended
	// request and a BEGIN reusing its ID.
	body := bytes.Repeat([]byte("b"), wire.MaxContent)
	req := rawRecord(wire.TypeBeginRequest, 1, []byte{0, 1, 1, 0, 0, 0, 0, 0}, 255)
	req = append(req, rawRecord(wire.TypeParams, 1, fcgitest.Pairs("REQUEST_URI", "/max", "CONTENT_LENGTH", fmt.Sprint(len(body))), 255)...)
	req = append(req, rawRecord(wire.TypeParams, 1, nil, 255)...)
	req = append(req, rawRecord(wire.TypeStdin, 1, body, 255)...)
	req = append(req, rawRecord(wire.TypeStdin, 1, nil, 255)...)
	if _, err := c.NC.Write(req); err != nil {
		t.Fatal(err)
	}
	if _, b := parseCGI(t, c.ReadResponse(1).Stdout); b != fmt.Sprintf("/max %d", len(body)) {
		t.Fatalf("body %q", b)
	}
	c.Record(wire.TypeAbortRequest, 1, nil).Flush()
	c.Get(1, true, "/again")
	if _, b := parseCGI(t, c.ReadResponse(1).Stdout); b != "/again 0" {
		t.Fatalf("body %q", b)
	}
	if st := srv.Stats(); st.InFlight != 0 || st.ProtocolErrors != 0 || st.Requests != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// A web server that never reads a response its handler writes without end,
// with no WriteTimeout: Shutdown returns when its context ends, and Close
// then fails the handler's blocked write.
func TestShutdownThenCloseUnblockUnreadResponse(t *testing.T) {
	checkLeaks(t)
	writeErr := make(chan error, 1)
	srv := &fcgi.Server{WriteTimeout: -1, ErrorLog: quietLog}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	c := dial(t, "tcp", l.Addr().String())
	c.Get(1, true, "/endless") // and never read
	if !eventually(func() bool { return srv.Stats().InFlight == 1 }) {
		t.Fatal("request not in flight")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return when its context ended")
	}
	srv.Close()
	select {
	case err := <-writeErr:
		if !errors.Is(err, fcgi.ErrConnClosed) {
			t.Fatalf("handler's write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close left the handler's write blocked")
	}
	if err := <-done; !errors.Is(err, fcgi.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if !eventuallyFor(5*time.Second, func() bool { st := srv.Stats(); return st.Conns == 0 && st.InFlight == 0 }) {
		t.Fatalf("after Close: %+v", srv.Stats())
	}
}

// tinyHeaders returns HTTP_ variables of empty value, as many as fit in
// about n bytes of PARAMS.
func tinyHeaders(n int) []string {
	var kv []string
	for i, size := 0, 0; size < n; i++ {
		name := fmt.Sprintf("HTTP_%x", i)
		kv = append(kv, name, "")
		size += 2 + len(name)
	}
	return kv
}

// Each HTTP_ variable becomes a header, which costs far more to hold than its
// bytes in PARAMS: a PARAMS stream of tiny headers costs what the handler's
// request holds, not what it weighs, against MaxParamsBytes. Under the limit,
// a request holds about what the limit says, however its variables are cut.
func TestTinyHeadersCountAgainstMaxParams(t *testing.T) {
	checkLeaks(t)
	const limit = 256 << 10
	started := make(chan struct{}, 100)
	srv := &fcgi.Server{MaxParamsBytes: limit, ErrorLog: quietLog}
	addr := startServer(t, "unix", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		io.ReadAll(r.Body) // waits for a body that does not come
	}))
	// Under the limit by its bytes, far over it by what it costs.
	c := dial(t, "unix", addr)
	c.Begin(1, wire.RoleResponder, true).Params(1, append(tinyHeaders(limit-64), "REQUEST_METHOD", "GET")...).Stdin(1, nil).Flush()
	if h, _ := parseCGI(t, c.ReadResponse(1).Stdout); h["Status"] != "431 Request Header Fields Too Large" {
		t.Fatalf("status %q", h["Status"])
	}
	// What a request under the limit holds, for headers cut small and for
	// one large one.
	for _, kv := range [][]string{tinyHeaders(limit / 13), {"HTTP_X", strings.Repeat("x", limit-256)}} {
		c := dial(t, "unix", addr)
		before := heapInUse()
		const n = 20
		for id := uint16(1); id <= n; id++ {
			c.Begin(id, wire.RoleResponder, true).Params(id, append(kv, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "10")...)
		}
		c.Flush()
		for range n {
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatalf("handlers not started: %+v", srv.Stats())
			}
		}
		grown := int64(heapInUse()) - int64(before)
		t.Logf("%d variables: %d KiB held per request", len(kv)/2, grown/n>>10)
		if grown > n*2*limit {
			t.Fatalf("%d variables: %d KiB held per request, over twice MaxParamsBytes", len(kv)/2, grown/n>>10)
		}
		c.NC.Close()
		if !eventuallyFor(5*time.Second, func() bool { return srv.Stats().InFlight == 0 }) {
			t.Fatalf("slots not given back: %+v", srv.Stats())
		}
	}
}

// Several multiplexed handlers writing without end to a web server that
// never reads: the write timeout ends them all, gives back their slots and
// the connection, and the server serves the next connection at its limits.
func TestWriteTimeoutFreesEverySlot(t *testing.T) {
	checkLeaks(t)
	const n = 3
	errs := make(chan error, n)
	srv := &fcgi.Server{WriteTimeout: 300 * time.Millisecond, MaxConns: 1, MaxRequests: n, ErrorLog: quietLog}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/small" {
			io.WriteString(w, "ok")
			return
		}
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				errs <- err
				return
			}
		}
	}))
	c := dial(t, "tcp", addr)
	for id := uint16(1); id <= n; id++ {
		c.Get(id, true, "/endless")
	}
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, fcgi.ErrConnClosed) {
				t.Fatalf("handler's write: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("handlers still writing: %+v", srv.Stats())
		}
	}
	if !eventuallyFor(5*time.Second, func() bool { st := srv.Stats(); return st.Conns == 0 && st.InFlight == 0 }) {
		t.Fatalf("after the timeout: %+v", srv.Stats())
	}
	next := dial(t, "tcp", addr)
	for id := uint16(1); id <= n; id++ {
		next.Get(id, true, "/small")
	}
	for id, r := range next.ReadResponses(1, 2, 3) {
		if _, body := parseCGI(t, r.Stdout); body != "ok" {
			t.Fatalf("request %d: %q", id, body)
		}
	}
}

// Requests the connection's reader ends itself (aborted before their
// handler starts, refused for malformed PARAMS) are answered together when
// they come together, as management records are.
func TestReaderEndedRequestsCoalesced(t *testing.T) {
	const n = 10000
	srv, writes := burstWrites(t, n, func(c *fcgitest.Conn, i int) {
		id := uint16(i%50 + 1)
		c.Begin(id, wire.RoleResponder, true)
		if i%2 == 0 {
			c.Record(wire.TypeAbortRequest, id, nil)
		} else {
			c.Record(wire.TypeParams, id, []byte{0x80}).Record(wire.TypeParams, id, nil)
		}
	}, func(c *fcgitest.Conn, i int) {
		rec := c.Next()
		if rec.Type == wire.TypeStdout {
			rec = c.Next() // the 400's header, then its end
			rec = c.Next()
		}
		if rec.Type != wire.TypeEndRequest {
			t.Fatalf("answer %d: %v", i, rec)
		}
	})
	t.Logf("%d write calls for %d requests", writes, n)
	if writes > n/10 {
		t.Fatalf("%d write calls for %d requests", writes, n)
	}
	if st := srv.Stats(); st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// burstWrites serves a hello handler on a unix socket, sends it n units of
// records in one burst (send writes unit i), reads the answer to each
// (answer reads unit i's), checks that a request is then served, and
// returns the server and the write calls it made.
func burstWrites(t *testing.T, n int, send func(c *fcgitest.Conn, i int), answer func(c *fcgitest.Conn, i int)) (*fcgi.Server, int64) {
	t.Helper()
	checkLeaks(t)
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int64
	srv := &fcgi.Server{Handler: http.HandlerFunc(hello), ErrorLog: quietLog}
	serveOn(t, countingListener{l, &writes}, srv)
	c := dial(t, "unix", l.Addr().String())
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			send(c, i)
		}
		c.W.Flush()
	}()
	for i := range n {
		answer(c, i)
	}
	<-sent
	c.Get(1, true, "/after")
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "hello, /after" {
		t.Fatalf("body %q", body)
	}
	return srv, writes.Load()
}

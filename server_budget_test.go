package fcgi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

// bodyFloor is what a body buffer holds beyond MaxBufferedBytes.
const bodyFloor = 64 << 10

// heapInuse is the heap in use once garbage is collected.
func heapInuse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// A web server that multiplexes many requests with big PARAMS and bodies
// their handlers do not read, over several connections, makes the server
// hold MaxBufferedBytes and a floor per body, not MaxRequests times
// MaxParamsBytes and MaxBodyBuffer. Once the handlers return everything is
// given back and the server serves on.
func TestBufferedInputBoundedOverRequests(t *testing.T) {
	checkLeaks(t)
	const (
		budget   = 16 << 20
		conns    = 4
		perConn  = 25
		padSize  = 100 << 10
		chunk    = 32 << 10
		bodySize = 32 * chunk
		requests = conns * perConn
	)
	release := make(chan struct{})
	var started atomic.Int64
	srv := &fcgi.Server{MaxBufferedBytes: budget, ErrorLog: quietLog}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	pad := strings.Repeat("p", padSize)
	body := make([]byte, chunk)
	base := heapInuse()

	var writers, readers sync.WaitGroup
	var written atomic.Int64
	cs := make([]*fcgitest.Conn, conns)
	for i := range cs {
		c := dial(t, "tcp", addr)
		cs[i] = c
		writers.Add(1)
		go func() {
			defer writers.Done()
			w := c.W
			for id := uint16(1); id <= perConn; id++ {
				w.WriteBeginRequest(id, wire.RoleResponder, wire.FlagKeepConn)
				w.WriteStream(wire.TypeParams, id, fcgitest.Pairs("REQUEST_METHOD", "POST", "REQUEST_URI", "/",
					"CONTENT_LENGTH", strconv.Itoa(bodySize), "PAD", pad))
				w.WriteRecord(wire.TypeParams, id, nil)
				if w.Flush() != nil {
					return
				}
			}
			// The bodies come a record of each request at a time: a reader
			// that waits for one request's handler holds up the rest.
			for range bodySize / chunk {
				for id := uint16(1); id <= perConn; id++ {
					w.WriteRecord(wire.TypeStdin, id, body)
					if w.Flush() != nil {
						return
					}
				}
			}
			for id := uint16(1); id <= perConn; id++ {
				w.WriteRecord(wire.TypeStdin, id, nil)
			}
			if w.Flush() == nil {
				written.Add(1)
			}
		}()
		readers.Add(1)
		go func() {
			defer readers.Done()
			c.Timeout = time.Minute
			for ended := 0; ended < perConn; {
				rec, err := c.TryNext()
				if err != nil {
					return
				}
				if rec.Type == wire.TypeEndRequest {
					ended++
				}
			}
		}()
	}

	// The bound holds at any moment: look for 5 s, or until every byte is
	// sent, as it is at once when nothing bounds the total.
	var peakHeap, peakBuffered int64
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		peakHeap = max(peakHeap, heapInuse()-base)
		peakBuffered = max(peakBuffered, srv.Stats().Buffered)
		if written.Load() == conns {
			break
		}
	}
	peakHeap = max(peakHeap, heapInuse()-base)
	peakBuffered = max(peakBuffered, srv.Stats().Buffered)
	unbounded := int64(requests * (padSize + bodySize))
	bound := int64(budget + requests*bodyFloor)
	t.Logf("heap in use +%d MiB, Buffered peak %d MiB (budget %d MiB, bound %d MiB, unbounded %d MiB), %d handlers, stats %+v",
		peakHeap>>20, peakBuffered>>20, budget>>20, bound>>20, unbounded>>20, started.Load(), srv.Stats())
	if peakBuffered > bound {
		t.Errorf("Buffered reached %d bytes, past the budget and floors %d", peakBuffered, bound)
	}
	// Slack for the handlers' goroutines, requests and connections.
	if peakHeap > bound+16<<20 {
		t.Errorf("heap in use grew by %d MiB, past the budget and floors %d MiB", peakHeap>>20, bound>>20)
	}

	close(release)
	writers.Wait()
	readers.Wait()
	if !eventuallyFor(10*time.Second, func() bool { st := srv.Stats(); return st.Buffered == 0 && st.InFlight == 0 }) {
		t.Fatalf("input not given back: %+v", srv.Stats())
	}
	c := dial(t, "tcp", addr)
	c.Get(1, false, "/after")
	if r := c.ReadResponse(1); r.End.ProtocolStatus != wire.StatusRequestComplete {
		t.Fatalf("request after the attack: %v", r.End.ProtocolStatus)
	}
	for _, c := range cs {
		c.NC.Close()
	}
}

// PARAMS that would take the input held past MaxBufferedBytes are refused
// with FCGI_OVERLOADED and counted in Overloaded, at once, whatever the
// other requests hold; the requests that fit run.
func TestBufferedParamsRefusedOverloaded(t *testing.T) {
	checkLeaks(t)
	const budget, padSize, n = 1 << 20, 100 << 10, 20
	release := make(chan struct{})
	srv := &fcgi.Server{MaxBufferedBytes: budget, ErrorLog: quietLog}
	addr := startServer(t, "unix", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	}))
	c := dial(t, "unix", addr)
	pad := strings.Repeat("p", padSize)
	for id := uint16(1); id <= n; id++ {
		c.Begin(id, wire.RoleResponder, true).Params(id, "REQUEST_URI", "/", "PAD", pad).Stdin(id, nil)
	}
	c.Flush()
	refused := 0
	for refused < n-budget/padSize {
		rec := c.Next()
		if rec.Type != wire.TypeEndRequest {
			t.Fatalf("unexpected %v before any handler returned", rec)
		}
		if st := wire.ProtocolStatus(rec.Content[4]); st != wire.StatusOverloaded {
			t.Fatalf("request %d ended with %v", rec.RequestID, st)
		}
		refused++
	}
	st := srv.Stats()
	if st.Overloaded != int64(refused) || st.Buffered > budget || st.InFlight != int64(n-refused) {
		t.Fatalf("stats %+v after %d refused", st, refused)
	}
	close(release)
	ids := make([]uint16, 0, n-refused)
	for id := uint16(1); id <= n-uint16(refused); id++ {
		ids = append(ids, id)
	}
	for id, r := range c.ReadResponses(ids...) {
		if r.End.ProtocolStatus != wire.StatusRequestComplete {
			t.Fatalf("request %d: %v", id, r.End.ProtocolStatus)
		}
	}
	if !eventually(func() bool { st := srv.Stats(); return st.Buffered == 0 && st.InFlight == 0 }) {
		t.Fatalf("input not given back: %+v", srv.Stats())
	}
}

// Whatever ends a request that holds PARAMS and body, the server's count of
// buffered input comes back to 0, and the server serves on.
func TestBufferedBytesGivenBackEveryEnding(t *testing.T) {
	const held, piece = 256 << 10, 32 << 10
	chunk := make([]byte, piece)
	pad := strings.Repeat("p", 50<<10)
	post := func(uri string, kv ...string) []string {
		return append([]string{"REQUEST_METHOD", "POST", "REQUEST_URI", uri, "CONTENT_LENGTH", strconv.Itoa(1 << 20),
			"PAD", pad, "HTTP_X_A", "a", "HTTP_X_B", "b"}, kv...)
	}
	// sendHeld sends a request whose handler waits, with part of its body,
	// and waits until the server holds it.
	sendHeld := func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn, uri string) {
		t.Helper()
		c.Begin(1, wire.RoleResponder, true).Params(1, post(uri)...)
		for range held / piece {
			c.Record(wire.TypeStdin, 1, chunk)
		}
		c.Flush()
		if uri == "/read" {
			return // its handler reads what is held
		}
		if !eventually(func() bool { return srv.Stats().Buffered >= held+int64(len(pad)) }) {
			t.Fatalf("input not held: %+v", srv.Stats())
		}
	}
	// sendParams sends a request that has only part of its PARAMS.
	sendParams := func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
		t.Helper()
		c.Begin(1, wire.RoleResponder, true).Record(wire.TypeParams, 1, fcgitest.Pairs(post("/")...)).Flush()
		if !eventually(func() bool { return srv.Stats().Buffered >= int64(len(pad)) }) {
			t.Fatalf("params not held: %+v", srv.Stats())
		}
	}
	expectEnd := func(t *testing.T, c *fcgitest.Conn, want wire.ProtocolStatus) {
		t.Helper()
		if r := c.ReadResponse(1); r.End.ProtocolStatus != want {
			t.Fatalf("protocol status %v, want %v", r.End.ProtocolStatus, want)
		}
	}
	cases := []struct {
		name    string
		srv     func(*fcgi.Server)
		run     func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn)
		stopped bool // the server is shut down: nothing to serve after
	}{
		{name: "handler reads", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendHeld(t, srv, c, "/read")
			for range (1<<20 - held) / piece {
				c.Record(wire.TypeStdin, 1, chunk)
			}
			c.Stdin(1, nil).Flush()
			expectEnd(t, c, wire.StatusRequestComplete)
		}},
		{name: "handler returns unread", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			c.Begin(1, wire.RoleResponder, true).Params(1, post("/return")...).Record(wire.TypeStdin, 1, chunk).Flush()
			expectEnd(t, c, wire.StatusRequestComplete)
		}},
		{name: "abort", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendHeld(t, srv, c, "/wait")
			c.Record(wire.TypeAbortRequest, 1, nil).Flush()
			expectEnd(t, c, wire.StatusRequestComplete)
		}},
		{name: "abort before handler", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendParams(t, srv, c)
			c.Record(wire.TypeAbortRequest, 1, nil).Flush()
			expectEnd(t, c, wire.StatusRequestComplete)
		}},
		{name: "fin", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendHeld(t, srv, c, "/wait")
			c.NC.Close()
		}},
		{name: "fin before handler", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendParams(t, srv, c)
			c.NC.Close()
		}},
		{name: "rst", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendHeld(t, srv, c, "/wait")
			c.NC.(*net.TCPConn).SetLinger(0)
			c.NC.Close()
		}},
		{name: "read timeout", srv: func(s *fcgi.Server) { s.ReadTimeout = 300 * time.Millisecond }, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendHeld(t, srv, c, "/wait")
			// The body fails and its buffer is given back while the handler
			// still runs; its PARAMS stay until it returns.
			if !eventuallyFor(10*time.Second, func() bool { return srv.Stats().Buffered < held }) {
				t.Fatalf("body still held after ReadTimeout: %+v", srv.Stats())
			}
			c.Record(wire.TypeAbortRequest, 1, nil).Flush()
			expectEnd(t, c, wire.StatusRequestComplete)
		}},
		{name: "read timeout before handler", srv: func(s *fcgi.Server) { s.ReadTimeout = 300 * time.Millisecond }, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendParams(t, srv, c)
			expectEnd(t, c, wire.StatusRequestComplete) // 408
		}},
		{name: "shutdown", stopped: true, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendParams(t, srv, c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			go srv.Shutdown(ctx)
			expectEnd(t, c, wire.StatusOverloaded)
		}},
		{name: "close", stopped: true, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendHeld(t, srv, c, "/wait")
			srv.Close()
		}},
		{name: "malformed record", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendHeld(t, srv, c, "/wait")
			c.NC.Write([]byte{9, 9, 9, 9, 9, 9, 9, 9})
		}},
		{name: "params too large", srv: func(s *fcgi.Server) { s.MaxParamsBytes = 80 << 10 }, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendParams(t, srv, c)
			c.Record(wire.TypeParams, 1, fcgitest.Pairs("MORE", pad)).Flush()
			expectEnd(t, c, wire.StatusRequestComplete) // 431
		}},
		{name: "body too large", srv: func(s *fcgi.Server) { s.MaxRequestBodyBytes = 1000 }, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			c.Begin(1, wire.RoleResponder, true).Params(1, post("/")...).Flush()
			expectEnd(t, c, wire.StatusRequestComplete) // 413
		}},
		{name: "bad content length", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			c.Begin(1, wire.RoleResponder, true).Params(1, "CONTENT_LENGTH", "x", "PAD", pad).Flush()
			expectEnd(t, c, wire.StatusRequestComplete) // 400
		}},
		{name: "over budget", srv: func(s *fcgi.Server) { s.MaxBufferedBytes = 40 << 10 }, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			c.Begin(1, wire.RoleResponder, true).Params(1, post("/")...).Flush()
			expectEnd(t, c, wire.StatusOverloaded)
		}},
		{name: "over budget headers", srv: func(s *fcgi.Server) { s.MaxBufferedBytes = 40 << 10 }, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			// Each header counts 112 bytes more once the stream is parsed.
			c.Begin(1, wire.RoleResponder, true).Params(1, tinyHeaders(4000)...).Flush()
			expectEnd(t, c, wire.StatusOverloaded)
		}},
		{name: "max requests", srv: func(s *fcgi.Server) { s.MaxRequests = 1 }, run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			sendHeld(t, srv, c, "/wait")
			c.Begin(2, wire.RoleResponder, true).Params(2, post("/")...).Flush()
			if rec := c.Next(); rec.RequestID != 2 || rec.Type != wire.TypeEndRequest {
				t.Fatalf("second request: %v", rec)
			}
			c.Record(wire.TypeAbortRequest, 1, nil).Flush()
			expectEnd(t, c, wire.StatusRequestComplete)
		}},
		{name: "filter data unread", run: func(t *testing.T, srv *fcgi.Server, c *fcgitest.Conn) {
			c.Begin(1, wire.RoleFilter, true).Params(1, filterParams("in", 1<<20)...).Stdin(1, []byte("in")).
				Record(wire.TypeData, 1, chunk).Record(wire.TypeData, 1, chunk).Flush()
			if !eventually(func() bool { return srv.Stats().Buffered >= 2*piece }) {
				t.Fatalf("data not held: %+v", srv.Stats())
			}
			c.Record(wire.TypeAbortRequest, 1, nil).Flush()
			expectEnd(t, c, wire.StatusRequestComplete)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			srv := &fcgi.Server{ErrorLog: quietLog}
			if tc.srv != nil {
				tc.srv(srv)
			}
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/read":
					io.Copy(io.Discard, r.Body)
				case "/wait":
					<-r.Context().Done()
				}
			})
			srv.Filter = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
			addr := startServer(t, "tcp", srv, h)
			c := dial(t, "tcp", addr)
			tc.run(t, srv, c)
			if !eventuallyFor(10*time.Second, func() bool { st := srv.Stats(); return st.Buffered == 0 && st.InFlight == 0 }) {
				t.Fatalf("input not given back: %+v", srv.Stats())
			}
			if tc.stopped {
				return
			}
			c2 := dial(t, "tcp", addr)
			c2.Get(1, false, "/after")
			if r := c2.ReadResponse(1); r.End.ProtocolStatus != wire.StatusRequestComplete {
				t.Fatalf("request after: %v", r.End.ProtocolStatus)
			}
		})
	}
}

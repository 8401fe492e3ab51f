package fcgi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

// pathCounts counts the requests a backend received, by path.
type pathCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (p *pathCounts) add(path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]int{}
	}
	p.m[path]++
}

func (p *pathCounts) snapshot() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.m)
}

// runSlowAbort aborts "/slow" on c, a multiplexing Client with one
// connection, while nine other requests ("/0" to "/8", the odd ones POSTs)
// are in flight on the same connection, and checks that the abort costs
// nothing else: the nine succeed, the backend saw each request once, and
// the pool's open count comes back to zero. The backend counts requests in
// seen, answers "/slow" only after its abort, and answers the others
// "ok " and their path once release is closed; aborted returns once the
// backend has dealt with the abort as the test wants (answered it after
// the grace, or let the grace run out).
func runSlowAbort(t *testing.T, c *fcgi.Client, seen *pathCounts, release chan struct{}, aborted func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	slowErr := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, get("/slow"))
		slowErr <- err
	}()
	if !eventually(func() bool { return seen.snapshot()["/slow"] == 1 }) {
		t.Fatal("the slow request did not arrive")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for i := 0; i < 9; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprint("/", i)
			req := get(path)
			if i%2 == 1 {
				req.Params["REQUEST_METHOD"] = "POST" // never resent
			}
			resp, err := c.Do(context.Background(), req)
			if err != nil {
				errs <- fmt.Errorf("request %d: %w", i, err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "ok "+path {
				errs <- fmt.Errorf("request %d: body %q, %v", i, b, err)
			}
		}()
	}
	if !eventually(func() bool { return len(seen.snapshot()) == 10 }) {
		t.Fatalf("%d requests arrived, want 10", len(seen.snapshot()))
	}
	cancel()
	if err := <-slowErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("aborted request: %v", err)
	}
	aborted()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for p, k := range seen.snapshot() {
		if k != 1 {
			t.Errorf("request %s seen %d times by the backend", p, k)
		}
	}
	if !eventually(func() bool { open, _ := fcgi.PoolCounts(c); return open == 0 }) {
		open, idle := fcgi.PoolCounts(c)
		t.Errorf("pool: %d open, %d idle; want 0", open, idle)
	}
}

// retiredOnce reports whether c has one retired connection; it takes the
// Client from p, for handlers that start before it is made.
func retiredOnce(p *atomic.Pointer[fcgi.Client]) bool { return fcgi.RetiredConns(p.Load()) == 1 }

// One multiplexed request whose FCGI_ABORT_REQUEST the backend answers
// late, or never, costs only that request: the nine others on its
// connection finish, each seen once by the backend (none failed, none
// resent), the late records are dropped, the connection takes no new
// request and is closed once the others are done, and the pool's counts
// come back to zero.
func TestClientMultiplexSlowAbortCostsOneRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		never  bool // the backend never answers the abort
		closed bool // Client.Close while the nine are in flight
	}{
		{"late", false, false},
		{"never", true, false},
		{"never-Close", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			release := make(chan struct{})   // lets the nine others answer
			slowEnded := make(chan struct{}) // the aborted request's END_REQUEST went out
			quit := make(chan struct{})      // ends the handler that never answers
			var seen pathCounts
			var cp atomic.Pointer[fcgi.Client]
			app := startFake(t, "unix", func(a *fakeApp) {
				a.Handler = func(r *fakeReq) {
					path := r.Params["REQUEST_URI"]
					seen.add(path)
					if path == "/slow" {
						<-r.Aborted
						if tc.never {
							<-quit
							return
						}
						// Past the grace: once the client has given up
						// waiting.
						if !eventually(func() bool { return retiredOnce(&cp) }) {
							t.Error("the connection was not retired after the grace")
						}
						r.Write("\r\nlate output of an aborted request")
						r.End(0, 0)
						close(slowEnded)
						return
					}
					<-release
					r.Write("\r\nok " + path)
				}
			})
			defer close(quit)
			c := newClient(app.Addr)
			cp.Store(c)
			c.Multiplex = fcgi.MultiplexOn
			c.MaxConnsPerBackend = 1
			fcgi.SetAbortGrace(c, 50*time.Millisecond)
			defer c.Close()

			runSlowAbort(t, c, &seen, release, func() {
				if !eventually(func() bool { return app.aborts.Load() == 1 }) {
					t.Fatal("no FCGI_ABORT_REQUEST")
				}
				if tc.never {
					// The grace runs out with the nine in flight.
					if !eventually(func() bool { return retiredOnce(&cp) }) {
						t.Fatal("the connection was not retired after the grace")
					}
				} else {
					<-slowEnded
				}
				if tc.closed {
					c.Close() // requests in flight run to their end
				}
			})
			if n := app.conns.Load(); n != 1 {
				t.Errorf("%d connections for 10 requests, want 1", n)
			}
			// The connection that outlived its grace is closed once the
			// others are done, whether or not the abort was answered.
			if !eventually(func() bool { return app.open.Load() == 0 }) {
				t.Errorf("the connection is still open after its requests ended")
			}
			if tc.closed {
				return
			}
			// The client goes on serving, on a new connection.
			if _, body := doString(t, c, get("/after")); body != "ok /after" {
				t.Errorf("request after: %q", body)
			}
			if n := app.conns.Load(); n != 2 {
				t.Errorf("%d connections in all, want 2", n)
			}
			c.Close()
			if !eventually(func() bool { open, idle := fcgi.PoolCounts(c); return open == 0 && idle == 0 }) {
				open, idle := fcgi.PoolCounts(c)
				t.Errorf("after Close: %d open, %d idle", open, idle)
			}
		})
	}
}

// The same against this package's Server, which ends an aborted request
// when its handler returns: a handler that ignores the abort for longer
// than the grace costs its own request only.
func TestClientMultiplexSlowAbortServer(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	slowDone := make(chan struct{})
	var seen pathCounts
	var cp atomic.Pointer[fcgi.Client]
	addr := startServer(t, "unix", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r.URL.Path)
		if r.URL.Path == "/slow" {
			<-r.Context().Done()
			// A handler that does not watch its context, and returns
			// after the client has given up waiting.
			if !eventually(func() bool { return retiredOnce(&cp) }) {
				t.Error("the connection was not retired after the grace")
			}
			close(slowDone)
			return
		}
		<-release
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	c := newClient("unix:" + addr)
	cp.Store(c)
	c.Multiplex = fcgi.MultiplexOn
	c.MaxConnsPerBackend = 1
	fcgi.SetAbortGrace(c, 50*time.Millisecond)
	defer c.Close()
	runSlowAbort(t, c, &seen, release, func() { <-slowDone })
}

// TestClientBodyCloseDuringRead: as with net/http, a response Body may be
// closed from another goroutine while a Read waits for the application.
// The Read returns at once with http.ErrBodyReadAfterClose, the request is
// abandoned (its connection closed, or the request aborted on a
// multiplexed one), nothing counts as a backend failure, and with one
// connection allowed the next request is served.
func TestClientBodyCloseDuringRead(t *testing.T) {
	for _, mode := range []fcgi.MultiplexMode{fcgi.MultiplexOff, fcgi.MultiplexOn} {
		t.Run(fmt.Sprint("multiplex=", mode == fcgi.MultiplexOn), func(t *testing.T) {
			checkLeaks(t)
			ended := make(chan error, 4)
			addr := startServer(t, "unix", &fcgi.Server{ErrorLog: quietLog}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/stall" {
					io.WriteString(w, "next")
					return
				}
				io.WriteString(w, "first part")
				w.(http.Flusher).Flush()
				<-r.Context().Done() // until the client gives the request up
				ended <- context.Cause(r.Context())
			}))
			c := &fcgi.Client{Addr: "unix:" + addr, MaxConnsPerBackend: 1, Multiplex: mode, ErrorLog: quietLog}
			defer c.Close()

			resp, err := c.Do(context.Background(), get("/stall"))
			if err != nil {
				t.Fatal(err)
			}
			first := make([]byte, len("first part"))
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatal(err)
			}
			readErr := make(chan error, 1)
			go func() {
				_, err := resp.Body.Read(make([]byte, 10))
				readErr <- err
			}()
			time.Sleep(50 * time.Millisecond) // the Read is waiting
			if err := resp.Body.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			select {
			case err := <-readErr:
				if !errors.Is(err, http.ErrBodyReadAfterClose) {
					t.Errorf("Read during Close: %v, want http.ErrBodyReadAfterClose", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Read still waiting 10 s after Close")
			}
			if _, err := resp.Body.Read(make([]byte, 1)); !errors.Is(err, http.ErrBodyReadAfterClose) {
				t.Errorf("Read after Close: %v, want http.ErrBodyReadAfterClose", err)
			}
			select {
			case <-ended:
			case <-time.After(10 * time.Second):
				t.Fatal("the application's handler was not told that the request was given up")
			}
			_, body := doString(t, c, get("/next"))
			if body != "next" {
				t.Errorf("next request: %q", body)
			}
			st := c.Stats()[0]
			if st.ResetErrors+st.Timeouts+st.ProtocolErrors != 0 {
				t.Errorf("a Close counted as a backend failure: %+v", st)
			}
		})
	}
}

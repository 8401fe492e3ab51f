package fcgi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

// One multiplexed request whose FCGI_ABORT_REQUEST the backend answers
// late, or never, costs only that request: the nine others on its
// connection finish, each seen once by the backend (none failed, none
// resent), the late records are dropped, the connection takes no new
// request and is closed once the others are done, and the pool's counts
// come back to zero.
func TestClientMultiplexSlowAbortCostsOneRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		never bool // the backend never answers the abort
	}{
		{"late", false},
		{"never", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			const grace = 50 * time.Millisecond
			release := make(chan struct{})   // lets the nine others answer
			slowEnded := make(chan struct{}) // the aborted request's END_REQUEST went out
			quit := make(chan struct{})      // ends the handler that never answers
			var seenMu sync.Mutex
			seen := map[string]int{}
			var cp atomic.Pointer[fcgi.Client] // for the handler
			retired := func() bool { return fcgi.RetiredConns(cp.Load()) == 1 }
			app := startFake(t, false, func(a *fakeApp) {
				a.Handler = func(r *fakeReq) {
					seenMu.Lock()
					seen[r.Params["N"]]++
					seenMu.Unlock()
					if r.Params["N"] == "slow" {
						<-r.Aborted
						if tc.never {
							<-quit
							return
						}
						// Past the grace: once the client has given up
						// waiting.
						if !eventually(retired) {
							t.Error("the connection was not retired after the grace")
						}
						r.Write("\r\nlate output of an aborted request")
						r.End(0, 0)
						close(slowEnded)
						return
					}
					<-release
					r.Write("\r\nok " + r.Params["N"])
				}
			})
			defer close(quit)
			c := newClient(app.Addr)
			cp.Store(c)
			c.Multiplex = fcgi.MultiplexOn
			c.MaxConnsPerBackend = 1
			fcgi.SetAbortGrace(c, grace)
			defer c.Close()

			ctx, cancel := context.WithCancel(context.Background())
			slowErr := make(chan error, 1)
			go func() {
				req := get("/slow")
				req.Params["N"] = "slow"
				_, err := c.Do(ctx, req)
				slowErr <- err
			}()
			if !eventually(func() bool { return app.requests.Load() == 1 }) {
				t.Fatal("the slow request did not arrive")
			}
			var wg sync.WaitGroup
			errs := make(chan error, 9)
			for i := 0; i < 9; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req := get("/")
					req.Params["N"] = fmt.Sprint(i)
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
					if want := fmt.Sprint("ok ", i); err != nil || string(b) != want {
						errs <- fmt.Errorf("request %d: body %q, %v; want %q", i, b, err, want)
					}
				}()
			}
			if !eventually(func() bool { return app.requests.Load() == 10 }) {
				t.Fatalf("%d requests arrived, want 10", app.requests.Load())
			}
			cancel()
			if err := <-slowErr; !errors.Is(err, context.Canceled) {
				t.Fatalf("aborted request: %v", err)
			}
			if !eventually(func() bool { return app.aborts.Load() == 1 }) {
				t.Fatal("no FCGI_ABORT_REQUEST")
			}
			if tc.never {
				// The grace runs out with the nine in flight.
				if !eventually(retired) {
					t.Fatal("the connection was not retired after the grace")
				}
			} else {
				<-slowEnded
			}
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			seenMu.Lock()
			for n, k := range seen {
				if k != 1 {
					t.Errorf("request %s seen %d times by the backend", n, k)
				}
			}
			if len(seen) != 10 {
				t.Errorf("backend saw %d distinct requests, want 10", len(seen))
			}
			seenMu.Unlock()
			if n := app.conns.Load(); n != 1 {
				t.Errorf("%d connections for 10 requests, want 1", n)
			}
			// The connection that outlived its grace is closed once the
			// others are done, whether or not the abort was answered.
			if !eventually(func() bool { return app.open.Load() == 0 }) {
				t.Errorf("the connection is still open after its requests ended")
			}
			if !eventually(func() bool { open, _ := fcgi.PoolCounts(c); return open == 0 }) {
				open, idle := fcgi.PoolCounts(c)
				t.Errorf("pool: %d open, %d idle; want 0", open, idle)
			}
			// The client goes on serving, on a new connection.
			if _, body := doString(t, c, get("/after")); body != "ok " {
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
	const grace = 50 * time.Millisecond
	release := make(chan struct{})
	aborted := make(chan struct{})
	slowDone := make(chan struct{})
	var seenMu sync.Mutex
	seen := map[string]int{}
	var cp atomic.Pointer[fcgi.Client] // for the handler
	addr := startServer(t, "unix", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenMu.Lock()
		seen[r.URL.Path]++
		seenMu.Unlock()
		if r.URL.Path == "/slow" {
			<-r.Context().Done()
			close(aborted)
			// A handler that does not watch its context, and returns
			// after the client has given up waiting.
			if !eventually(func() bool { return fcgi.RetiredConns(cp.Load()) == 1 }) {
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
	fcgi.SetAbortGrace(c, grace)
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	slowErr := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, get("/slow"))
		slowErr <- err
	}()
	if !eventually(func() bool { seenMu.Lock(); defer seenMu.Unlock(); return seen["/slow"] == 1 }) {
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
				req.Params["REQUEST_METHOD"] = "POST"
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
	if !eventually(func() bool { seenMu.Lock(); defer seenMu.Unlock(); return len(seen) == 10 }) {
		t.Fatal("not all ten requests arrived")
	}
	cancel()
	if err := <-slowErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("aborted request: %v", err)
	}
	<-aborted
	<-slowDone
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seenMu.Lock()
	for p, k := range seen {
		if k != 1 {
			t.Errorf("%s seen %d times by the server", p, k)
		}
	}
	seenMu.Unlock()
	if !eventually(func() bool { open, _ := fcgi.PoolCounts(c); return open == 0 }) {
		open, idle := fcgi.PoolCounts(c)
		t.Errorf("pool: %d open, %d idle; want 0", open, idle)
	}
}

package fcgi_test

import (
	"sync"
	"testing"
	"time"
)

// A backend that closes kept connections (PHP-FPM's pm.max_requests) must
// never cause an error.
func TestClientWorkerRecycling(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, network string) {
		checkLeaks(t)
		app := startFake(t, network, func(a *fakeApp) { a.MaxRequestsPerConn = 3 })
		c := newClient(app.Addr)
		defer c.Close()
		for i := 0; i < 30; i++ {
			req := get("/")
			// Two connections closed after 3 responses teach the client the
			// count; from then on it retires connections itself, and a POST
			// never meets a connection the backend is closing. (Before, a
			// POST could, and one that meets a reset is not sent twice.)
			if i >= 8 && i%2 == 1 {
				// Not idempotent, but replayable as Gateway makes it.
				req = replayablePost("x")
			}
			if _, body := doString(t, c, req); body != "hello" {
				t.Fatalf("body %q", body)
			}
		}
		if n := app.conns.Load(); n < 10 {
			t.Fatalf("%d connections, want at least 10", n)
		}
	})
}

// One connection closed after a single response (a backend restart, say)
// does not teach the client to retire every connection after one: the
// pool keeps reusing its connections afterwards.
func TestClientRecyclingNeedsTwoObservations(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) { a.DropRequestN = 2; a.DropOnce = true })
	c := newClient(app.Addr)
	defer c.Close()
	doString(t, c, get("/"))
	doString(t, c, get("/")) // dropped, retried on a new connection
	before := app.conns.Load()
	for i := 0; i < 10; i++ {
		if _, body := doString(t, c, get("/")); body != "hello" {
			t.Fatalf("body %q", body)
		}
	}
	if n := app.conns.Load() - before; n > 1 {
		t.Fatalf("%d new connections for 10 sequential requests: the client retires connections it could keep", n)
	}
}

// A backend restart closes every idle connection at once, several of
// which served the same number of requests after a burst: that is not a
// recycling count, and the pool goes on keeping connections.
func TestClientRestartTeachesNoRecycling(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { r.Write("\r\n"); time.Sleep(50 * time.Millisecond); r.Write("hello") }
	})
	c := newClient(app.Addr)
	defer c.Close()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { doString(t, c, get("/")) })
	}
	wg.Wait()
	app.mu.Lock() // the restart
	for nc := range app.nc {
		nc.Close()
	}
	app.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	before := app.conns.Load()
	for range 10 {
		doString(t, c, get("/"))
	}
	if n := app.conns.Load() - before; n > 1 {
		t.Fatalf("%d new connections for 10 sequential requests after a restart: a recycling count was learned from it", n)
	}
}

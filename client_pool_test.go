package fcgi_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

func TestClientKeepConn(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, network string) {
		checkLeaks(t)
		app := startFake(t, network, nil)
		c := newClient(app.Addr)
		defer c.Close()
		for i := 0; i < 50; i++ {
			if _, body := doString(t, c, get("/")); body != "hello" {
				t.Fatalf("body %q", body)
			}
		}
		if n := app.conns.Load(); n != 1 {
			t.Fatalf("%d connections for 50 sequential requests, want 1", n)
		}
		if ids := app.IDs(); len(ids) != 1 || ids[1] != 50 {
			t.Fatalf("request IDs %v, want only 1", ids)
		}
		for _, f := range app.KeepConnFlags() {
			if f&wire.FlagKeepConn == 0 {
				t.Fatal("FCGI_KEEP_CONN not set")
			}
		}
	})
}

func TestClientNoKeepAlive(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", nil)
	c := newClient(app.Addr)
	c.MaxIdleConnsPerBackend = -1
	defer c.Close()
	for i := 0; i < 3; i++ {
		doString(t, c, get("/"))
	}
	if n := app.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
	for _, f := range app.KeepConnFlags() {
		if f&wire.FlagKeepConn != 0 {
			t.Fatal("FCGI_KEEP_CONN set without keep-alive")
		}
	}
}

func TestClientPoolLimit(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			time.Sleep(20 * time.Millisecond)
			r.Write("\r\nok")
		}
	})
	c := newClient(app.Addr)
	c.MaxConnsPerBackend = 2
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Do(context.Background(), get("/"))
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := app.maxOpen.Load(); n > 2 {
		t.Fatalf("%d connections open at once, limit 2", n)
	}

	// A request queued above the limit gives up with its context.
	hold := make(chan struct{})
	app.Handler = func(r *fakeReq) { <-hold; r.Write("\r\n") }
	var held []*fcgi.Response
	done := make(chan *fcgi.Response, 2)
	for i := 0; i < 2; i++ {
		go func() {
			resp, err := c.Do(context.Background(), get("/"))
			if err != nil {
				t.Error(err)
			}
			done <- resp
		}()
	}
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Do(ctx, get("/"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued request: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("queued request gave up after %v", d)
	}
	close(hold)
	for i := 0; i < 2; i++ {
		if r := <-done; r != nil {
			held = append(held, r)
		}
	}
	for _, r := range held {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
}

func TestClientIdleTimeoutAndLifetime(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", nil)
	c := newClient(app.Addr)
	c.IdleTimeout = 50 * time.Millisecond
	defer c.Close()
	doString(t, c, get("/"))
	if !eventually(func() bool { return app.open.Load() == 0 }) {
		t.Fatal("idle connection not closed after IdleTimeout")
	}

	app2 := startFake(t, "unix", nil)
	c2 := newClient(app2.Addr)
	c2.MaxLifetime = 60 * time.Millisecond
	defer c2.Close()
	doString(t, c2, get("/"))
	doString(t, c2, get("/"))
	time.Sleep(80 * time.Millisecond)
	doString(t, c2, get("/"))
	if n := app2.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (one retired by MaxLifetime)", n)
	}
}

// Scripts that think before they print, on a client with no connection
// limit: a request on a new connection waits longer than a bare 20 ms
// before its first record, which is no stall behind the accept queue; the
// pool keeps its connections rather than churning.
func TestClientSlowScriptsKeepConns(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { time.Sleep(40 * time.Millisecond); r.Write("\r\nhello") }
	})
	c := newClient(app.Addr)
	defer c.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 15 {
				doString(t, c, get("/"))
			}
		})
	}
	wg.Wait()
	if n := app.conns.Load(); n > 8 {
		t.Fatalf("%d connections for 4 workers × 15 sequential requests: connections closed as if stalled", n)
	}
}

// With MaxConnsPerBackend set, connections are kept for their whole life:
// a request on a new connection to a slow script does not close the idle
// ones (that rescue is for the unlimited pool only).
func TestClientFreeWorkersOnlyWithoutLimit(t *testing.T) {
	checkLeaks(t)
	var closed atomic.Int64
	srv := &fcgi.Server{ConnState: func(_ net.Conn, s fcgi.ConnState) {
		if s == fcgi.StateClosed {
			closed.Add(1)
		}
	}}
	addr := startServer(t, "tcp", srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			time.Sleep(700 * time.Millisecond)
		case "/think":
			time.Sleep(30 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	}))
	c := &fcgi.Client{Addr: addr, MaxConnsPerBackend: 4}
	defer c.Close()
	fetch := func(p string) {
		resp, err := c.Do(context.Background(), get(p))
		if err != nil {
			t.Error(err)
			return
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	fetch("/fast") // connection A, now idle
	done := make(chan struct{})
	go func() { fetch("/think"); close(done) }() // takes A, gives it back after 30 ms
	time.Sleep(5 * time.Millisecond)
	slow := make(chan struct{})
	go func() { fetch("/slow"); close(slow) }() // a new connection B
	<-done
	time.Sleep(400 * time.Millisecond) // B's fresh timer (250 ms) has fired
	if n := closed.Load(); n != 0 {
		t.Errorf("%d idle connection(s) closed while MaxConnsPerBackend is set", n)
	}
	<-slow
}

package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

func TestClientMultiplexOn(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			time.Sleep(10 * time.Millisecond)
			r.WriteErr("e" + r.Params["N"])
			r.Write("\r\n" + r.Params["N"] + ":" + string(r.Stdin))
		}
	})
	c := newClient(app.Addr)
	c.Multiplex = fcgi.MultiplexOn
	c.MaxConnsPerBackend = 1
	c.MaxMultiplexedRequests = 8
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := fmt.Sprint(i)
			req := get("/")
			req.Params["N"] = n
			var stderr bytes.Buffer
			req.Stderr = &stderr
			if i%2 == 0 {
				req.Body = strings.NewReader(strings.Repeat("b", i*1000))
			}
			resp, err := c.Do(context.Background(), req)
			if err != nil {
				t.Error(err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := n + ":"
			if i%2 == 0 {
				want += strings.Repeat("b", i*1000)
			}
			if err != nil || string(b) != want || stderr.String() != "e"+n {
				t.Errorf("request %d: %q %q %v", i, clipS(string(b)), stderr.String(), err)
			}
		}()
	}
	wg.Wait()
	if n := app.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	if n := app.maxActive.Load(); n < 2 || n > 8 {
		t.Fatalf("%d requests at once on the connection, want 2..8", n)
	}
	for id := range app.IDs() {
		if id < 1 || id > 8 {
			t.Fatalf("request ID %d outside 1..8", id)
		}
	}
}

func clipS(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func TestClientMultiplexAbort(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_URI"] == "/wait" {
				<-r.Aborted
				r.End(1, 0)
				return
			}
			r.Write("\r\nok")
		}
	})
	c := newClient(app.Addr)
	c.Multiplex = fcgi.MultiplexOn
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	if _, err := c.Do(ctx, get("/wait")); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	if !eventually(func() bool { return app.aborts.Load() == 1 }) {
		t.Fatal("no FCGI_ABORT_REQUEST")
	}
	// The connection stays in use.
	time.Sleep(20 * time.Millisecond)
	if _, body := doString(t, c, get("/")); body != "ok" {
		t.Fatalf("body %q", body)
	}
	if n := app.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	// Body.Close before the end aborts too.
	app.Handler = func(r *fakeReq) {
		r.Write("\r\npart")
		<-r.Aborted
	}
	resp, err := c.Do(context.Background(), get("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !eventually(func() bool { return app.aborts.Load() == 2 }) {
		t.Fatal("Body.Close sent no FCGI_ABORT_REQUEST")
	}
}

func TestClientMultiplexAuto(t *testing.T) {
	checkLeaks(t)
	slow := func(r *fakeReq) { time.Sleep(30 * time.Millisecond); r.Write("\r\nok") }
	for _, tc := range []struct {
		name      string
		configure func(*fakeApp)
		wantConns int64
	}{
		{"mpxs=1", func(a *fakeApp) { a.Values = map[string]string{"FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": "4"} }, 2},
		{"php-fpm", func(a *fakeApp) { a.Values = map[string]string{"FCGI_MPXS_CONNS": "0"}; a.CloseAfterValues = true }, 8},
		{"silent", func(a *fakeApp) {}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := startFake(t, "unix", func(a *fakeApp) { tc.configure(a); a.Handler = slow })
			c := newClient(app.Addr)
			c.Multiplex = fcgi.MultiplexAuto
			c.ProbeTimeout = 100 * time.Millisecond
			defer c.Close()
			doString(t, c, get("/"))
			time.Sleep(150 * time.Millisecond) // the probe has answered or timed out
			base := app.conns.Load()
			var wg sync.WaitGroup
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() { defer wg.Done(); doString(t, c, get("/")) }()
			}
			wg.Wait()
			if got := app.conns.Load() - base; got > tc.wantConns {
				t.Fatalf("%d new connections for 8 concurrent requests, want at most %d", got, tc.wantConns)
			}
			if tc.name == "mpxs=1" && app.maxActive.Load() > 4 {
				t.Fatalf("%d requests on a connection, FCGI_MAX_REQS is 4", app.maxActive.Load())
			}
		})
	}
}

func TestClientGetValues(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "tcp", func(a *fakeApp) {
		a.Values = map[string]string{"FCGI_MPXS_CONNS": "0", "FCGI_MAX_CONNS": "5"}
		a.CloseAfterValues = true
	})
	var c fcgi.Client
	vals, err := c.GetValues(context.Background(), app.Addr)
	if err != nil || vals["FCGI_MPXS_CONNS"] != "0" || vals["FCGI_MAX_CONNS"] != "5" || len(vals) != 2 {
		t.Fatalf("%v %v", vals, err)
	}
	silent := startFake(t, "unix", nil)
	c.ProbeTimeout = 50 * time.Millisecond
	_, err = c.GetValues(context.Background(), silent.Addr, "FCGI_MPXS_CONNS")
	var te *fcgi.TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("silent backend: %v", err)
	}
	// An application that does not know GET_VALUES says so at once.
	unknown := startFake(t, "unix", func(a *fakeApp) { a.UnknownValues = true })
	c.ProbeTimeout = time.Minute
	start := time.Now()
	if _, err = c.GetValues(context.Background(), unknown.Addr); !errors.Is(err, fcgi.ErrProtocol) || time.Since(start) > 10*time.Second {
		t.Fatalf("UNKNOWN_TYPE answer: %v after %v", err, time.Since(start))
	}
	// Nothing listening: ErrDial, not a timeout.
	_, nothing := unixAddr(t)
	if _, err = c.GetValues(context.Background(), nothing); !errors.Is(err, fcgi.ErrDial) {
		t.Fatalf("no backend: %v", err)
	}
}

// A backend that refuses a second request on a connection with
// FCGI_CANT_MPX_CONN: the refused requests are sent again, one per
// connection, and the backend is no longer multiplexed.
func TestClientMultiplexRefused(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.ID > 1 {
				r.End(0, wire.StatusCantMpxConn)
				return
			}
			time.Sleep(20 * time.Millisecond)
			r.Write("\r\nok")
		}
	})
	c := newClient(app.Addr)
	c.Multiplex = fcgi.MultiplexOn
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Do(context.Background(), get("/"))
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "ok" {
				t.Errorf("body %q", b)
			}
		}()
	}
	wg.Wait()
	// Later requests use ID 1 only.
	before := app.IDs()
	doString(t, c, get("/"))
	doString(t, c, get("/"))
	after := app.IDs()
	if after[1] != before[1]+2 {
		t.Fatalf("IDs before %v after %v", before, after)
	}
}

func TestClientMultiplexTimeoutAndBrokenConn(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			switch r.Params["REQUEST_URI"] {
			case "/slow":
				select {
				case <-r.Aborted:
				case <-release:
				}
			case "/die":
				time.Sleep(30 * time.Millisecond)
				r.conn.nc.Close()
			default:
				r.Write("\r\nok")
			}
		}
	})
	defer close(release)
	c := newClient(app.Addr)
	c.Multiplex = fcgi.MultiplexOn
	c.ResponseHeaderTimeout = 50 * time.Millisecond
	defer c.Close()
	_, err := c.Do(context.Background(), get("/slow"))
	var te *fcgi.TimeoutError
	if !errors.As(err, &te) || te.Op != "response header" {
		t.Fatalf("error %v", err)
	}
	// The connection dies under two requests: both fail (they are not
	// idempotent), and the next request gets a new connection.
	c = newClient(app.Addr)
	c.Multiplex = fcgi.MultiplexOn
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := get("/die")
			req.Params["REQUEST_METHOD"] = "POST"
			if _, err := c.Do(context.Background(), req); !errors.Is(err, fcgi.ErrBackendClosed) {
				t.Errorf("error %v, want ErrBackendClosed", err)
			}
		}()
	}
	wg.Wait()
	if _, body := doString(t, c, get("/")); body != "ok" {
		t.Fatalf("body %q", body)
	}
}

// Cancelling a multiplexed request while another request's body is stuck
// on a backend that stopped reading: the cancelled call returns at once,
// and the stuck connection is closed after the abort's grace, failing the
// other request rather than leaving it blocked (there is no WriteTimeout).
func TestClientMultiplexAbortBehindStuckWrite(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	app := startFake(t, "unix", func(a *fakeApp) {
		a.NoReadStdin = true
		a.Handler = func(r *fakeReq) { <-release }
	})
	defer close(release)
	c := newClient(app.Addr)
	c.Multiplex = fcgi.MultiplexOn
	c.MaxConnsPerBackend = 1
	c.WriteTimeout = -1
	defer c.Close()

	ctxB, cancelB := context.WithCancel(context.Background())
	doneB := make(chan error, 1)
	go func() {
		_, err := c.Do(ctxB, get("/slow"))
		doneB <- err
	}()
	if !eventually(func() bool { return app.requests.Load() == 1 }) {
		t.Fatal("first request not received")
	}
	doneA := make(chan error, 1)
	go func() {
		post := get("/upload")
		post.Params["REQUEST_METHOD"] = "POST"
		post.Params["CONTENT_LENGTH"] = fmt.Sprint(64 << 20)
		post.Body = io.LimitReader(zeros{}, 64<<20)
		_, err := c.Do(context.Background(), post)
		doneA <- err
	}()
	time.Sleep(200 * time.Millisecond) // the upload fills the socket's buffers
	cancelB()
	select {
	case err := <-doneB:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled request: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("the cancelled request waits for another request's stuck write")
	}
	select {
	case err := <-doneA:
		if err == nil {
			t.Error("the stuck upload succeeded")
		}
		// The client closed the connection, not the backend.
		if errors.Is(err, fcgi.ErrBackendClosed) {
			t.Errorf("the stuck upload's error %q blames the backend for the client's close", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck upload is still blocked after the abort's grace ran out")
	}
}

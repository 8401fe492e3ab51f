package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
	"go.uber.org/goleak"
)

// checkLeaks fails t if a goroutine that starts during t is still running
// when t and its cleanups end. TestMain finds the same leaks, but only
// checkLeaks names the test that left them.
func checkLeaks(t testing.TB) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// eventually polls cond for up to two seconds.
func eventually(cond func() bool) bool { return eventuallyFor(2*time.Second, cond) }

// eventuallyFor polls cond for up to d.
func eventuallyFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// quietLog discards the client's log.
var quietLog = slogDiscard()

func newClient(addr string) *fcgi.Client {
	return &fcgi.Client{Addr: addr, ErrorLog: quietLog}
}

func get(uri string) *fcgi.Request {
	return &fcgi.Request{Params: map[string]string{"REQUEST_METHOD": "GET", "REQUEST_URI": uri}}
}

// replayablePost is a POST of body that the client may send again, as
// Gateway makes them (GetBody set).
func replayablePost(body string) *fcgi.Request {
	req := get("/")
	req.Params["REQUEST_METHOD"] = "POST"
	req.Body = strings.NewReader(body)
	req.GetBody = func() (io.Reader, error) { return strings.NewReader(body), nil }
	return req
}

func doString(t testing.TB, c *fcgi.Client, req *fcgi.Request) (*fcgi.Response, string) {
	t.Helper()
	resp, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

func TestClientDo(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, network string) {
		checkLeaks(t)
		app := startFake(t, network, func(a *fakeApp) {
			a.Handler = func(r *fakeReq) {
				r.WriteErr("warning: " + r.Params["REQUEST_URI"])
				r.Write("Status: 201 Created\r\nX-A: 1\r\nX-A: 2\r\nContent-Type: text/plain\r\n\r\n")
				r.Write("uri=" + r.Params["REQUEST_URI"] + " body=" + string(r.Stdin))
				r.End(7, 0)
			}
		})
		c := newClient(app.Addr)
		defer c.Close()
		var stderr bytes.Buffer
		req := get("/x?y")
		req.Stderr = &stderr
		req.Body = strings.NewReader("payload")
		resp, body := doString(t, c, req)
		if resp.StatusCode != 201 || body != "uri=/x?y body=payload" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if got := resp.Header["X-A"]; len(got) != 2 || got[1] != "2" || resp.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("header %v", resp.Header)
		}
		if _, ok := resp.Header["Status"]; ok {
			t.Fatal("Status left in the header")
		}
		if st, ok := resp.AppStatus(); !ok || st != 7 {
			t.Fatalf("AppStatus = %d, %v", st, ok)
		}
		if stderr.String() != "warning: /x?y" {
			t.Fatalf("stderr %q", stderr.String())
		}
	})
}

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

// A reused connection that fails before any response byte is retried once
// for idempotent requests, and not for others.
func TestClientRetryReusedConn(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) { a.DropRequestN = 2 })
	c := newClient(app.Addr)
	defer c.Close()
	doString(t, c, get("/"))
	if _, body := doString(t, c, get("/")); body != "hello" {
		t.Fatalf("body %q", body)
	}
	if n := app.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}

	// A fresh client, which has not yet learned that the backend closes
	// connections after one request.
	c = newClient(app.Addr)
	defer c.Close()
	doString(t, c, get("/"))
	post := get("/")
	post.Params["REQUEST_METHOD"] = "POST"
	post.Body = strings.NewReader("x")
	resp, err := c.Do(context.Background(), post)
	if err == nil {
		resp.Body.Close()
		t.Fatal("POST on a dropped connection succeeded; it must not be retried")
	}
	if !errors.Is(err, fcgi.ErrBackendClosed) {
		t.Fatalf("error %v, want ErrBackendClosed", err)
	}

	// A replayable POST marked idempotent is retried.
	c = newClient(app.Addr)
	defer c.Close()
	doString(t, c, get("/"))
	post = replayablePost("x")
	post.Params["REQUEST_METHOD"] = "PUT"
	post.Idempotent = true
	if _, body := doString(t, c, post); body != "hello" {
		t.Fatalf("body %q", body)
	}
}

func TestClientBodyClosedEarly(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write("\r\nfirst")
			<-release
		}
	})
	defer close(release)
	c := newClient(app.Addr)
	defer c.Close()
	resp, err := c.Do(context.Background(), get("/"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("read %q %v", buf, err)
	}
	start := time.Now()
	resp.Body.Close()
	if time.Since(start) > time.Second {
		t.Fatal("Close waited for the slow tail")
	}
	if _, err := resp.Body.Read(buf); !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Fatalf("Read after Close: %v", err)
	}
	// The connection was closed, not pooled.
	if !eventually(func() bool { return app.open.Load() == 0 }) {
		t.Fatal("connection still open after Body.Close")
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

// The backend may answer before it has read the whole body.
func TestClientAnswerBeforeBody(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.RunOnParams = true
		a.Handler = func(r *fakeReq) { r.Write("Status: 413\r\n\r\ntoo big") }
	})
	c := newClient(app.Addr)
	defer c.Close()
	req := get("/")
	req.Params["REQUEST_METHOD"] = "POST"
	req.Body = io.LimitReader(zeros{}, 8<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 413 || string(b) != "too big" {
		t.Fatalf("%d %q %v", resp.StatusCode, b, err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestClientLargeBodyAndParams(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write(fmt.Sprintf("\r\n%d %d %d", len(r.Stdin), len(r.Params["BIG"]), len(r.Params)))
		}
	})
	c := newClient(app.Addr)
	defer c.Close()
	req := get("/")
	req.Params["BIG"] = strings.Repeat("v", 70000) // one pair longer than a record
	for i := 0; i < 3000; i++ {
		req.Params[fmt.Sprintf("HTTP_X_%d", i)] = strings.Repeat("h", 30)
	}
	req.Body = bytes.NewReader(make([]byte, 3<<20+17))
	if _, body := doString(t, c, req); body != fmt.Sprintf("%d 70000 %d", 3<<20+17, len(req.Params)) {
		t.Fatalf("body %q", body)
	}
	if app.paramsRecs.Load() < 3 {
		t.Fatalf("%d PARAMS records, want several", app.paramsRecs.Load())
	}
}

func TestClientProtocolStatus(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		status wire.ProtocolStatus
		want   error
	}{
		{wire.StatusOverloaded, fcgi.ErrOverloaded},
		{wire.StatusUnknownRole, fcgi.ErrUnknownRole},
		{wire.StatusCantMpxConn, fcgi.ErrCantMpxConn},
	} {
		app := startFake(t, "unix", func(a *fakeApp) {
			a.Handler = func(r *fakeReq) { r.End(0, tc.status) }
		})
		c := newClient(app.Addr)
		_, err := c.Do(context.Background(), get("/"))
		var pe *fcgi.ProtocolStatusError
		if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Status != uint8(tc.status) {
			t.Errorf("status %v: error %v", tc.status, err)
		}
		c.Close()
	}
}

func TestClientMalformedResponse(t *testing.T) {
	checkLeaks(t)
	for _, out := range []string{"no header end", "Bad Line\r\n\r\n", "Status: abc\r\n\r\n", ""} {
		app := startFake(t, "unix", func(a *fakeApp) {
			a.Handler = func(r *fakeReq) {
				if out != "" {
					r.Write(out)
				}
			}
		})
		c := newClient(app.Addr)
		_, err := c.Do(context.Background(), get("/"))
		if !errors.Is(err, fcgi.ErrMalformedResponse) {
			t.Errorf("%q: error %v", out, err)
		}
		c.Close()
	}
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { r.Write("X: " + strings.Repeat("y", 2000) + "\r\n\r\n") }
	})
	c := newClient(app.Addr)
	c.MaxResponseHeaderBytes = 1000
	defer c.Close()
	if _, err := c.Do(context.Background(), get("/")); !errors.Is(err, fcgi.ErrResponseHeaderTooLarge) {
		t.Fatalf("error %v", err)
	}
}

// A negative MaxResponseHeaderBytes means no limit: a header past the
// default's 64 KiB is read.
func TestClientNoResponseHeaderLimit(t *testing.T) {
	checkLeaks(t)
	long := strings.Repeat("y", fcgi.DefaultClientMaxResponseHeaderBytes)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { r.Write("X: " + long + "\r\n\r\nbody") }
	})
	c := newClient(app.Addr)
	c.MaxResponseHeaderBytes = -1
	defer c.Close()
	resp, err := c.Do(context.Background(), get("/"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "body" || resp.Header.Get("X") != long {
		t.Fatalf("body %q, %v; header of %d bytes", body, err, len(resp.Header.Get("X")))
	}
}

func TestClientTimeouts(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	defer close(release)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_URI"] == "/slowtail" {
				r.Write("\r\nbegin")
			}
			select {
			case <-release:
			case <-time.After(2 * time.Second):
			}
		}
	})
	check := func(err error, op string) {
		t.Helper()
		var te *fcgi.TimeoutError
		var ne net.Error
		if !errors.As(err, &te) || te.Op != op || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want a %q timeout", err, op)
		}
	}
	c := newClient(app.Addr)
	c.ResponseHeaderTimeout = 50 * time.Millisecond
	c.ReadTimeout = 50 * time.Millisecond
	defer c.Close()
	_, err := c.Do(context.Background(), get("/"))
	check(err, "response header")

	resp, err := c.Do(context.Background(), get("/slowtail"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	check(err, "read response")

	// Dial.
	cd := newClient("127.0.0.1:1")
	cd.DialTimeout = 50 * time.Millisecond
	cd.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	_, err = cd.Do(context.Background(), get("/"))
	check(err, "dial")

	// Write: a backend that stops reading.
	stuck := startFake(t, "unix", func(a *fakeApp) {
		a.NoReadStdin = true
		a.Handler = func(r *fakeReq) { <-a.done }
	})
	cw := newClient(stuck.Addr)
	cw.WriteTimeout = 50 * time.Millisecond
	defer cw.Close()
	req := get("/")
	req.Body = io.LimitReader(zeros{}, 64<<20)
	_, err = cw.Do(context.Background(), req)
	check(err, "write request")
}

func TestClientCancel(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_URI"] == "/body" {
				r.Write("\r\nbegin")
			}
			time.Sleep(300 * time.Millisecond)
		}
	})
	c := newClient(app.Addr)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Do(ctx, get("/"))
	if !errors.Is(err, context.Canceled) || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("error %v after %v", err, time.Since(start))
	}

	ctx, cancel = context.WithCancel(context.Background())
	resp, err := c.Do(ctx, get("/body"))
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(30*time.Millisecond, cancel)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("body read: %v", err)
	}
	// The connection is usable again after the cancellations: fresh ones.
	if _, body := doString(t, c, get("/body")); body != "begin" {
		t.Fatalf("body %q", body)
	}
}

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

func TestClientBackends(t *testing.T) {
	checkLeaks(t)
	var hits [2]atomic.Int64
	apps := make([]*fakeApp, 2)
	for i := range apps {
		apps[i] = startFake(t, "unix", func(a *fakeApp) {
			a.Handler = func(r *fakeReq) {
				hits[i].Add(1)
				time.Sleep(20 * time.Millisecond)
				r.Write("\r\nok")
			}
		})
	}
	_, dead := unixAddr(t) // nothing listens there
	c := &fcgi.Client{Addr: dead, Backends: []string{apps[0].Addr, apps[1].Addr}, ErrorLog: quietLog, BackendCooldown: time.Minute}
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Do(context.Background(), get("/"))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	a, b := hits[0].Load(), hits[1].Load()
	if a+b != 20 || a < 5 || b < 5 {
		t.Fatalf("requests split %d/%d, want balanced", a, b)
	}
}

func TestClientClosed(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", nil)
	c := newClient(app.Addr)
	doString(t, c, get("/"))
	c.Close()
	if _, err := c.Do(context.Background(), get("/")); !errors.Is(err, fcgi.ErrClientClosed) {
		t.Fatalf("error %v", err)
	}
	var empty fcgi.Client
	if _, err := empty.Do(context.Background(), get("/")); !errors.Is(err, fcgi.ErrNoBackend) {
		t.Fatalf("error %v", err)
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

// A backend set aside comes back after BackendCooldown.
func TestClientBackendCooldown(t *testing.T) {
	checkLeaks(t)
	good := startFake(t, "unix", nil)
	p, late := unixAddr(t)
	c := &fcgi.Client{Backends: []string{late, good.Addr}, ErrorLog: quietLog, BackendCooldown: 100 * time.Millisecond, MaxIdleConnsPerBackend: -1}
	defer c.Close()
	for i := 0; i < 6; i++ {
		doString(t, c, get("/"))
	}
	// Now the late backend starts listening.
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			nc.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()
	for i := 0; i < 6; i++ {
		doString(t, c, get("/"))
	}
	if accepted.Load() != 0 {
		t.Fatal("set-aside backend used during its cool-down")
	}
	time.Sleep(150 * time.Millisecond)
	// The backend closes connections at once: GETs go to the other one.
	for i := 0; i < 6; i++ {
		doString(t, c, get("/"))
	}
	if accepted.Load() == 0 {
		t.Fatal("backend not tried again after its cool-down")
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

func TestClientFilterRole(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write(fmt.Sprintf("\r\n%v stdin=%q data=%q", r.Role, r.Stdin, strings.ToUpper(string(r.Data))))
		}
	})
	c := newClient(app.Addr)
	defer c.Close()
	req := get("/")
	req.Role = fcgi.RoleFilter
	req.Body = strings.NewReader("in")
	req.Data = strings.NewReader("file to filter")
	if _, body := doString(t, c, req); body != `FILTER stdin="in" data="FILE TO FILTER"` {
		t.Fatalf("body %q", body)
	}
	// Without Data, an empty DATA stream still ends the request.
	req = get("/")
	req.Role = fcgi.RoleFilter
	if _, body := doString(t, c, req); body != `FILTER stdin="" data=""` {
		t.Fatalf("body %q", body)
	}
}

// A reused connection reset after the backend read a POST: the POST may
// have run, so it is not sent again, even though the error is a reset.
func TestClientNoRetryAfterResetOfReadRequest(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "tcp", func(a *fakeApp) { a.DropRequestN = 2; a.ResetOnDrop = true })
	c := newClient(app.Addr)
	defer c.Close()
	doString(t, c, get("/"))
	post := replayablePost("x")
	resp, err := c.Do(context.Background(), post)
	if err == nil {
		resp.Body.Close()
		t.Fatal("POST succeeded: it was sent a second time after the backend had read it")
	}
	if n := app.requests.Load(); n != 2 {
		t.Fatalf("backend received %d requests, want 2 (the POST once)", n)
	}
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

// A request refused with FCGI_OVERLOADED on a kept connection (what an
// application shutting down may answer there) has not run: it is sent
// once more on a new connection, even a POST.
func TestClientOverloadedOnKeptConnRetried(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.conn.mu.Lock()
			second := r.conn.served == 2
			r.conn.mu.Unlock()
			if second {
				r.End(0, wire.StatusOverloaded)
				return
			}
			r.Write("\r\nran " + string(r.Stdin))
		}
	})
	c := newClient(app.Addr)
	defer c.Close()
	doString(t, c, get("/"))
	post := replayablePost("x")
	if _, body := doString(t, c, post); body != "ran x" {
		t.Fatalf("body %q", body)
	}
	if n := app.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	// On a new connection OVERLOADED is the answer: no retry.
	app2 := startFake(t, "unix", func(a *fakeApp) { a.Handler = func(r *fakeReq) { r.End(0, wire.StatusOverloaded) } })
	c2 := newClient(app2.Addr)
	defer c2.Close()
	if _, err := c2.Do(context.Background(), get("/")); !errors.Is(err, fcgi.ErrOverloaded) {
		t.Fatalf("error %v, want ErrOverloaded", err)
	}
	if n := app2.requests.Load(); n != 1 {
		t.Fatalf("%d requests for a refusal on a new connection, want 1", n)
	}
}

// slowStdinConn delays a write that starts with a STDIN record, giving the
// backend time to read and act on what was written before it.
type slowStdinConn struct{ net.Conn }

func (c slowStdinConn) Write(p []byte) (int, error) {
	if len(p) >= 2 && p[1] == byte(wire.TypeStdin) {
		time.Sleep(100 * time.Millisecond)
	}
	return c.Conn.Write(p)
}

// A request large enough to leave in two writes: the backend starts it
// once its PARAMS end (fcgikit's server does, with CONTENT_LENGTH known)
// and resets; the second write fails with the reset. The POST may have
// run, so it is not sent again.
func TestClientNoRetryAfterPartialWrite(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "tcp", func(a *fakeApp) { a.RunOnParams, a.DropRequestN, a.ResetOnDrop = true, 2, true })
	c := newClient(app.Addr)
	c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return slowStdinConn{nc}, nil
	}
	defer c.Close()
	doString(t, c, get("/"))
	body := strings.Repeat("b", 8190)
	post := replayablePost(body)
	post.Params["X"] = strings.Repeat("p", 8150) // with the body, past the Writer's 16 KiB
	resp, err := c.Do(context.Background(), post)
	if err == nil {
		resp.Body.Close()
	}
	if n := app.requests.Load(); n != 2 {
		t.Fatalf("backend received %d requests (error %v), want 2: the POST went again after its PARAMS had been read", n, err)
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

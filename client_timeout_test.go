package fcgi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

// Every Client timeout follows the Server's rule: zero means its default,
// a negative value none. The waits on the backend default to a minute, as
// nginx's fastcgi_send_timeout and fastcgi_read_timeout do, so a script
// that hangs is answered 504 by a Gateway with a zero Client.
func TestClientTimeoutDefaults(t *testing.T) {
	var zero fcgi.Client
	want := fcgi.ClientTimeouts{
		Dial:           10 * time.Second,
		Write:          time.Minute,
		ResponseHeader: time.Minute,
		Read:           time.Minute,
		Idle:           30 * time.Second,
		Probe:          2 * time.Second,
		Cooldown:       10 * time.Second,
	}
	if got := fcgi.TimeoutsOf(&zero); got != want {
		t.Errorf("zero Client: %+v, want %+v", got, want)
	}
	none := fcgi.Client{DialTimeout: -1, WriteTimeout: -1, ResponseHeaderTimeout: -1, ReadTimeout: -1,
		IdleTimeout: -1, ProbeTimeout: -1, BackendCooldown: -1}
	if got := fcgi.TimeoutsOf(&none); got != (fcgi.ClientTimeouts{}) {
		t.Errorf("negative fields: %+v, want none", got)
	}
	const s = time.Second
	set := fcgi.Client{DialTimeout: 1 * s, WriteTimeout: 2 * s, ResponseHeaderTimeout: 3 * s, ReadTimeout: 4 * s,
		IdleTimeout: 5 * s, ProbeTimeout: 6 * s, BackendCooldown: 7 * s}
	if got := fcgi.TimeoutsOf(&set); got != (fcgi.ClientTimeouts{1 * s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s}) {
		t.Errorf("set fields: %+v", got)
	}
}

// trickle is a request body produced slowly: n pieces of 1 KiB, one every
// gap, as an upload from a slow client arrives.
type trickle struct {
	n   int
	gap time.Duration
}

func (r *trickle) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.gap)
	r.n--
	n := min(len(p), 1024)
	clear(p[:n])
	return n, nil
}

// The wait for the response header starts once the body has been sent: an
// upload that takes longer than ResponseHeaderTimeout succeeds, and a
// backend that reads it all and then never answers still times out.
func TestClientSlowUploadHeaderTimeout(t *testing.T) {
	for _, mpx := range []bool{false, true} {
		t.Run(fmt.Sprintf("multiplex=%v", mpx), func(t *testing.T) {
			checkLeaks(t)
			const timeout = time.Second // ample for an answer on a loaded machine
			var bodyRead atomic.Bool
			app := startFake(t, "unix", func(a *fakeApp) {
				a.Handler = func(r *fakeReq) {
					// The fake starts a handler once STDIN has ended.
					bodyRead.Store(true)
					if r.Params["REQUEST_URI"] == "/hang" {
						select {
						case <-r.Aborted:
						case <-a.done:
						}
						return
					}
					r.Write(fmt.Sprintf("\r\n%d", len(r.Stdin)))
				}
			})
			c := newClient(app.Addr)
			c.ResponseHeaderTimeout = timeout
			c.ReadTimeout = timeout
			c.WriteTimeout = timeout
			if mpx {
				c.Multiplex = fcgi.MultiplexOn
			}
			defer c.Close()
			upload := func(uri string) *fcgi.Request {
				req := get(uri)
				req.Params["REQUEST_METHOD"] = "POST"
				req.Params["CONTENT_LENGTH"] = "12288"
				req.Body = &trickle{n: 12, gap: timeout / 8} // 1.5 timeouts long
				return req
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := c.Do(ctx, upload("/"))
			if err != nil {
				t.Fatalf("slow upload: %v", err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "12288" {
				t.Fatalf("slow upload: body %q, %v", b, err)
			}

			bodyRead.Store(false)
			_, err = c.Do(ctx, upload("/hang"))
			var te *fcgi.TimeoutError
			if !errors.As(err, &te) || te.Op != "response header" {
				t.Fatalf("backend that never answers: %v, want a response header timeout", err)
			}
			if !bodyRead.Load() {
				t.Fatal("the response header timed out before the body was sent")
			}
		})
	}
}

// Through a Gateway, as `fcgi gateway --timeout` runs it: an upload of
// known length, large enough to be streamed, that arrives more slowly than
// the timeout is answered 200, not 504.
func TestGatewaySlowUploadNot504(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { r.Write(fmt.Sprintf("\r\n%d", len(r.Stdin))) }
	})
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.php"), []byte("<?php"), 0o644); err != nil {
		t.Fatal(err)
	}
	const timeout = time.Second
	c := &fcgi.Client{Addr: app.Addr, ErrorLog: quietLog, DialTimeout: timeout, WriteTimeout: timeout,
		ResponseHeaderTimeout: timeout, ReadTimeout: timeout}
	defer c.Close()
	g := &fcgi.Gateway{Client: c, Root: root, ErrorLog: quietLog}
	const n = 80                                                                        // KiB: streamed, not buffered, by the Gateway
	req := httptest.NewRequest("POST", "/index.php", &trickle{n: n, gap: timeout / 50}) // 1.6 timeouts long
	req.ContentLength = n << 10
	w := httptest.NewRecorder()
	g.ServeHTTP(w, req)
	if w.Code != 200 || w.Body.String() != fmt.Sprint(n<<10) {
		t.Fatalf("slow upload: %d %q", w.Code, w.Body.String())
	}
}

// failingBody gives a few slow pieces, then an error.
type failingBody struct{ trickle }

var errBodyBroke = errors.New("upload broke")

func (r *failingBody) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errBodyBroke
	}
	return r.trickle.Read(p)
}

// A streamed body that fails while the response header's wait has not
// begun ends the request with the body's error, not a timeout, and gives
// its connection back.
func TestClientBodyFailsBeforeHeaderWait(t *testing.T) {
	for _, mpx := range []bool{false, true} {
		t.Run(fmt.Sprintf("multiplex=%v", mpx), func(t *testing.T) {
			checkLeaks(t)
			app := startFake(t, "unix", nil)
			c := newClient(app.Addr)
			c.ResponseHeaderTimeout = 100 * time.Millisecond
			if mpx {
				c.Multiplex = fcgi.MultiplexOn
				// The fake never ends a request it has not started:
				// the aborted one's connection closes after the grace.
				fcgi.SetAbortGrace(c, 50*time.Millisecond)
			}
			defer c.Close()
			req := get("/")
			req.Params["REQUEST_METHOD"] = "POST"
			req.Body = &failingBody{trickle{n: 6, gap: 50 * time.Millisecond}} // 3 timeouts long
			_, err := c.Do(context.Background(), req)
			if !errors.Is(err, errBodyBroke) {
				t.Fatalf("error %v, want the body's", err)
			}
			// The client goes on serving.
			if _, body := doString(t, c, get("/")); body != "hello" {
				t.Fatalf("body %q", body)
			}
			c.Close()
			if !eventually(func() bool { open, _ := fcgi.PoolCounts(c); return open == 0 }) {
				open, idle := fcgi.PoolCounts(c)
				t.Errorf("after Close: %d open, %d idle", open, idle)
			}
		})
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

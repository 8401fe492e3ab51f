package fcgi_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

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

// A request refused with FCGI_OVERLOADED on a kept connection (what an
// application shutting down may answer there) has not run: it is sent
// once more on a new connection, even a POST.
func TestClientOverloadedOnKeptConnRetried(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.NthOnConn() == 2 {
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

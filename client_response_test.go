package fcgi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/defaults"
	"github.com/fcgikit/fcgi/internal/wire"
)

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
	long := strings.Repeat("y", defaults.ClientMaxResponseHeaderBytes)
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

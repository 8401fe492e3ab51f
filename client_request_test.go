package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

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

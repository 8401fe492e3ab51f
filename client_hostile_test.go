package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// raw writes records on r's connection as a hostile application would,
// outside the fake's own bookkeeping.
func raw(r *fakeReq, fn func(w *wire.Writer)) {
	c := r.conn
	c.wmu.Lock()
	defer c.wmu.Unlock()
	fn(c.wr)
	c.wr.Flush()
}

// expectServed checks that c serves a fresh request and that, with it
// done, c holds only idle connections.
func expectServed(t *testing.T, c *fcgi.Client) {
	t.Helper()
	resp, body := doString(t, c, get("/ok"))
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("next request: %d %q", resp.StatusCode, body)
	}
	if !eventually(func() bool {
		inflight, waiters, _, _, _ := fcgi.PoolState(c)
		open, idle := fcgi.PoolCounts(c)
		return inflight == 0 && waiters == 0 && open == idle
	}) {
		inflight, waiters, _, _, _ := fcgi.PoolState(c)
		open, idle := fcgi.PoolCounts(c)
		t.Fatalf("pool: %d in flight, %d waiting, %d open, %d idle", inflight, waiters, open, idle)
	}
}

// Records a misbehaving application sends after its END_REQUEST, or for a
// request ID never used, never reach another request.
func TestClientHostileStrayRecords(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name  string
		write func(r *fakeReq)
		ok    bool // the hostile request itself succeeds
	}{
		{"stdout-after-end", func(r *fakeReq) {
			r.Write("\r\nfirst")
			r.End(0, 0)
			time.Sleep(20 * time.Millisecond)
			raw(r, func(w *wire.Writer) {
				w.WriteStream(wire.TypeStdout, r.ID, []byte("Status: 500\r\n\r\npoison"))
				w.WriteRecord(wire.TypeStdout, r.ID, nil)
				w.WriteEndRequest(r.ID, 0, 0)
			})
		}, true},
		{"end-twice", func(r *fakeReq) {
			r.Write("\r\nfirst")
			r.End(0, 0)
			raw(r, func(w *wire.Writer) { w.WriteEndRequest(r.ID, 0, 0) })
		}, true},
		{"other-id-before-header", func(r *fakeReq) {
			raw(r, func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, 7, []byte("\r\npoison")) })
			r.Write("\r\nfirst")
		}, false},
		{"other-id-in-body", func(r *fakeReq) {
			r.Write("\r\nfir")
			raw(r, func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, 7, []byte("poison")) })
			r.Write("st")
		}, false},
		{"end-before-stdout", func(r *fakeReq) {
			raw(r, func(w *wire.Writer) { w.WriteEndRequest(r.ID, 0, 0) })
		}, false},
		{"short-end-request", func(r *fakeReq) {
			raw(r, func(w *wire.Writer) {
				w.WriteStream(wire.TypeStdout, r.ID, []byte("\r\nfirst"))
				w.WriteRecord(wire.TypeEndRequest, r.ID, []byte{0, 0, 0})
			})
			time.Sleep(50 * time.Millisecond)
		}, false},
		{"data-record", func(r *fakeReq) {
			raw(r, func(w *wire.Writer) { w.WriteStream(wire.TypeData, r.ID, []byte("x")) })
		}, false},
		{"management-flood", func(r *fakeReq) {
			raw(r, func(w *wire.Writer) {
				for range 1000 {
					w.WriteRecord(wire.TypeGetValuesResult, 0, wire.AppendPair(nil, "FCGI_MAX_REQS", "0"))
				}
			})
			r.Write("\r\nfirst")
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hostile sync.Once
			app := startHostileApp(t, func(r *fakeReq) { hostile.Do(func() { tc.write(r) }) })
			c := newClient(app.Addr)
			c.MaxConnsPerBackend = 1
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := c.Do(ctx, get("/hostile"))
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if tc.ok && (err != nil || string(body) != "first") {
				t.Fatalf("hostile request: %q, %v", body, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("hostile request succeeded: %q", body)
			}
			time.Sleep(100 * time.Millisecond) // let late records arrive
			for range 3 {
				expectServed(t, c)
			}
		})
	}
}

// A backend that sends its answer one byte at a time meets each stage's
// timeout: the header's as a whole, the body's per record.
func TestClientHostileTrickle(t *testing.T) {
	checkLeaks(t)
	trickle := func(r *fakeReq, t wire.Type, p []byte) {
		var rec bytes.Buffer
		w := wire.NewWriter(&rec)
		w.WriteStream(t, r.ID, p)
		w.Flush()
		for _, b := range rec.Bytes() {
			select {
			case <-r.Aborted:
				return
			case <-time.After(30 * time.Millisecond):
			}
			r.conn.wmu.Lock()
			_, err := r.conn.nc.Write([]byte{b})
			r.conn.wmu.Unlock()
			if err != nil {
				return
			}
		}
	}
	for _, tc := range []struct {
		name string
		run  func(r *fakeReq)
		op   string
	}{
		{"header", func(r *fakeReq) { trickle(r, wire.TypeStdout, []byte("X: "+strings.Repeat("y", 200)+"\r\n\r\n")) }, "response header"},
		{"stderr-before-header", func(r *fakeReq) {
			for range 200 {
				select {
				case <-r.Aborted:
					return
				case <-time.After(30 * time.Millisecond):
				}
				r.WriteErr("still here\n")
			}
		}, "response header"},
		{"body", func(r *fakeReq) {
			r.Write("\r\n")
			trickle(r, wire.TypeStdout, bytes.Repeat([]byte("y"), 200))
		}, "read response"},
	} {
		forEachMultiplex(t, tc.name, func(t *testing.T, mpx fcgi.MultiplexMode) {
			app := startHostileApp(t, tc.run)
			c := newClient(app.Addr)
			c.Multiplex = mpx
			c.ResponseHeaderTimeout = 500 * time.Millisecond
			c.ReadTimeout = 500 * time.Millisecond
			c.MaxConnsPerBackend = 1
			defer c.Close()
			resp, err := c.Do(context.Background(), get("/hostile"))
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			var te *fcgi.TimeoutError
			if !errors.As(err, &te) || te.Op != tc.op {
				t.Fatalf("error %v, want a %s timeout", err, tc.op)
			}
			expectServed(t, c)
		})
	}
}

// A backend that took multiplexed requests and then refuses a second one
// with FCGI_CANT_MPX_CONN is no longer multiplexed; its multiplexed
// connection must not hold a slot of MaxConnsPerBackend once its requests
// end, or the refused request, retried on a connection of its own, waits
// for it to idle out.
func TestClientCantMpxConnFreesSlot(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.ID > 1 {
				r.End(0, wire.StatusCantMpxConn)
				return
			}
			if r.Params["REQUEST_URI"] == "/slow" {
				<-release
			}
			r.Write("Content-Type: text/plain\r\n\r\nhello")
		}
	})
	c := newClient(app.Addr)
	c.Multiplex = fcgi.MultiplexOn
	c.MaxConnsPerBackend = 1
	defer c.Close()
	slow := make(chan error, 1)
	go func() {
		resp, err := c.Do(context.Background(), get("/slow"))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	if !eventually(func() bool { return app.requests.Load() == 1 }) {
		t.Fatal("the slow request did not arrive")
	}
	refused := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.Do(ctx, get("/ok"))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		refused <- err
	}()
	if !eventually(func() bool { return app.requests.Load() == 2 }) {
		t.Fatal("the second request did not arrive")
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("slow request: %v", err)
	}
	if err := <-refused; err != nil {
		t.Fatalf("refused request, retried: %v", err)
	}
	expectServed(t, c)
}

// A kept connection answering FCGI_OVERLOADED (an application shutting
// down gracefully) has the request retried on a new connection; at
// MaxConnsPerBackend the retry must not wait for that connection, idle
// again, to time out.
func TestClientOverloadedRetryAtConnLimit(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name   string
		status wire.ProtocolStatus
		mpx    fcgi.MultiplexMode
	}{
		{"overloaded", wire.StatusOverloaded, fcgi.MultiplexOff},
		{"cant-mpx-conn", wire.StatusCantMpxConn, fcgi.MultiplexOff},
		{"overloaded/mpx", wire.StatusOverloaded, fcgi.MultiplexOn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := startFake(t, "unix", func(a *fakeApp) {
				a.Handler = func(r *fakeReq) {
					if r.NthOnConn() == 2 {
						r.End(0, tc.status)
						return
					}
					r.Write("Content-Type: text/plain\r\n\r\nhello")
				}
			})
			c := newClient(app.Addr)
			c.MaxConnsPerBackend = 1
			c.Multiplex = tc.mpx
			defer c.Close()
			doString(t, c, get("/"))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := c.Do(ctx, get("/"))
			if err != nil {
				t.Fatalf("retried request: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "hello" {
				t.Fatalf("body %q", body)
			}
			expectServed(t, c)
		})
	}
}

// lingerAfterBeginConn returns from a write that holds a BEGIN_REQUEST only
// a while after the bytes have left, so that the backend's answer to it is
// read before the writer goes on.
type lingerAfterBeginConn struct{ net.Conn }

func (c lingerAfterBeginConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if len(p) >= 2 && p[1] == byte(wire.TypeBeginRequest) {
		time.Sleep(50 * time.Millisecond)
	}
	return n, err
}

// onlyReader hides a reader's type, so that the client streams it from a
// goroutine rather than sending it with the request's header.
type onlyReader struct{ io.Reader }

// An application may refuse a multiplexed request as soon as its
// BEGIN_REQUEST arrives (fcgikit's Server does with FCGI_OVERLOADED beyond
// MaxRequests), before the client has started sending the body. The request
// ID and its slot on the connection are given back once, not twice: the
// connection then counts its requests right, and serves its limit of them
// concurrently.
func TestClientMpxRefusedAtBegin(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	app := startFake(t, "unix", func(a *fakeApp) {
		a.RefuseAtBegin = func(served int) bool { return served == 1 }
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_URI"] == "/slow" {
				<-release
			}
			r.Write("Content-Type: text/plain\r\n\r\nhello")
		}
	})
	c := newClient(app.Addr)
	c.Multiplex = fcgi.MultiplexOn
	c.MaxMultiplexedRequests = 2
	c.MaxConnsPerBackend = 1
	c.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return lingerAfterBeginConn{nc}, nil
	}
	defer c.Close()
	req := get("/")
	req.Params["REQUEST_METHOD"] = "POST"
	req.Body = onlyReader{strings.NewReader(strings.Repeat("x", 100<<10))}
	if _, err := c.Do(context.Background(), req); !errors.Is(err, fcgi.ErrOverloaded) {
		t.Fatalf("refused request: %v, want ErrOverloaded", err)
	}
	expectServed(t, c)
	// The connection carries two requests at once, and a third waits.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.Do(ctx, get("/slow"))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	if !eventually(func() bool { return app.requests.Load() >= 4 }) {
		t.Fatal("the slow requests did not arrive")
	}
	time.Sleep(50 * time.Millisecond)
	if n := app.maxActive.Load(); n > 2 {
		t.Errorf("%d requests at once on a connection limited to 2", n)
	}
	close(release)
	wg.Wait()
	expectServed(t, c)
}

// Absurd FCGI_GET_VALUES answers: a request limit of zero, below zero, not
// a number or past the 65535 request IDs, and a multiplexing flag that is
// neither 0 nor 1. Requests are served, within the IDs there are.
func TestClientAbsurdGetValues(t *testing.T) {
	checkLeaks(t)
	for _, vals := range []map[string]string{
		{"FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": "0"},
		{"FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": "-7"},
		{"FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": "lots"},
		{"FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": "2147483648"},
		{"FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": "99999999999999999999999"},
		{"FCGI_MPXS_CONNS": "yes", "FCGI_MAX_REQS": "3"},
		{"FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": "1"},
	} {
		t.Run(vals["FCGI_MPXS_CONNS"]+"-"+vals["FCGI_MAX_REQS"], func(t *testing.T) {
			app := startFake(t, "unix", func(a *fakeApp) {
				a.Values = vals
				a.Handler = func(r *fakeReq) {
					time.Sleep(20 * time.Millisecond)
					r.Write("Content-Type: text/plain\r\n\r\nhello")
				}
			})
			c := newClient(app.Addr)
			c.Multiplex = fcgi.MultiplexAuto
			c.MaxConnsPerBackend = 2
			defer c.Close()
			doString(t, c, get("/"))
			if !eventually(func() bool {
				_, err := c.GetValues(context.Background(), app.Addr)
				return err == nil
			}) {
				t.Fatal("GetValues failed")
			}
			time.Sleep(50 * time.Millisecond) // the client's own probe has answered
			var wg sync.WaitGroup
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					resp, err := c.Do(ctx, get("/"))
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}()
			}
			wg.Wait()
			if vals["FCGI_MAX_REQS"] == "1" && app.maxActive.Load() > 1 {
				t.Errorf("%d requests at once on a connection, FCGI_MAX_REQS is 1", app.maxActive.Load())
			}
			expectServed(t, c)
		})
	}
}

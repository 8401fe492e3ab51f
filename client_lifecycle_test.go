package fcgi_test

import (
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

// The life of a Client request, enumerated: a hostile backend takes a
// request to a stage and there ends it, or lets the caller end it, each
// way a request can end. After every cell the pool must hold no request
// and no waiter, every open connection must be idle and usable, a fresh
// request must be served, and Close must close them all.

// hostileBackend serves "/ok" properly and takes "/hostile" to stage,
// where it signals reached and waits for act.
type hostileBackend struct {
	ln      net.Listener
	stage   string // begin, stdin, header, body, done or flood (endless STDOUT)
	reached chan struct{}
	act     chan string // fin, rst, malformed or stall
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]bool
}

func startHostile(t *testing.T, stage string) *hostileBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &hostileBackend{ln: ln, stage: stage, reached: make(chan struct{}, 1), act: make(chan string, 1), conns: make(map[net.Conn]bool)}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[nc] = true
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.serve(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for nc := range b.conns {
			nc.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *hostileBackend) serve(nc net.Conn) {
	defer nc.Close()
	rd := wire.NewReader(nc)
	wr := wire.NewWriter(nc)
	for {
		var id uint16
		var keep bool
		var params []byte
		paramsDone, stdinDone, stdinSeen := false, false, false
		hostile := false
		// at reports whether the request reached st, hostile; the
		// backend then acts and reports whether it goes on serving.
		at := func(st string) (stop bool) {
			if !hostile || b.stage != st {
				return false
			}
			hostile = false // once
			b.reached <- struct{}{}
			switch <-b.act {
			case "fin":
				nc.Close()
			case "rst":
				nc.(*net.TCPConn).SetLinger(0)
				nc.Close()
			case "malformed":
				nc.Write([]byte{9, 9, 9, 9, 9, 9, 9, 9})
				io.Copy(io.Discard, nc)
			default:
				if st == "done" {
					// The caller ends a request already
					// complete: the backend serves on.
					return false
				}
				// Stall: take whatever comes, answer nothing.
				io.Copy(io.Discard, nc)
			}
			return true
		}
		for !stdinDone {
			rec, err := rd.Next()
			if err != nil {
				return
			}
			switch rec.Type {
			case wire.TypeBeginRequest:
				br, _ := wire.ParseBeginRequest(rec.Content)
				id, keep = rec.RequestID, br.KeepConn()
			case wire.TypeParams:
				if len(rec.Content) > 0 {
					params = append(params, rec.Content...)
					continue
				}
				paramsDone = true
				wire.ForEachPair(string(params), func(name, value string) bool {
					if name == "REQUEST_URI" && strings.HasPrefix(value, "/hostile") {
						hostile = true
					}
					return true
				})
				if at("begin") {
					return
				}
			case wire.TypeStdin:
				if !paramsDone {
					return
				}
				if len(rec.Content) == 0 {
					stdinDone = true
					break
				}
				if !stdinSeen {
					stdinSeen = true
					if at("stdin") {
						return
					}
				}
			}
		}
		if at("header") {
			return
		}
		wr.WriteStream(wire.TypeStdout, id, []byte("Content-Type: text/plain\r\n\r\npartial "))
		wr.Flush()
		if hostile && b.stage == "flood" {
			// A body without end, for a client that stops reading: it
			// ends when the other side gives the request up.
			b.reached <- struct{}{}
			chunk := make([]byte, 32<<10)
			for {
				wr.WriteStream(wire.TypeStdout, id, chunk)
				if err := wr.Flush(); err != nil {
					return
				}
			}
		}
		if at("body") {
			return
		}
		wr.WriteStream(wire.TypeStdout, id, []byte("ok"))
		wr.WriteRecord(wire.TypeStdout, id, nil)
		wr.WriteEndRequest(id, 0, wire.StatusRequestComplete)
		if err := wr.Flush(); err != nil {
			return
		}
		if at("done") {
			return
		}
		if !keep {
			return
		}
	}
}

type clientEnding struct {
	name string
	act  string // what the backend does
	// stages the ending applies to; nil for all.
	stages []string
}

var clientStages = []string{"begin", "stdin", "header", "body", "done"}

var clientEndings = []clientEnding{
	{name: "backend-fin", act: "fin"},
	{name: "backend-rst", act: "rst"},
	{name: "backend-malformed", act: "malformed"},
	{name: "cancel", act: "stall"},
	{name: "timeout", act: "stall"},
	{name: "close-body", act: "stall", stages: []string{"body", "done"}},
}

func TestClientRequestEveryStageEveryEnding(t *testing.T) {
	for _, mpx := range []fcgi.MultiplexMode{fcgi.MultiplexOff, fcgi.MultiplexOn} {
		name := map[fcgi.MultiplexMode]string{fcgi.MultiplexOff: "one-per-conn", fcgi.MultiplexOn: "multiplexed"}[mpx]
		for _, stage := range clientStages {
			for _, end := range clientEndings {
				if end.stages != nil && !strings.Contains(strings.Join(end.stages, ","), stage) {
					continue
				}
				t.Run(name+"/"+stage+"/"+end.name, func(t *testing.T) {
					t.Parallel()
					testClientCell(t, mpx, stage, end)
				})
			}
		}
	}
}

func testClientCell(t *testing.T, mpx fcgi.MultiplexMode, stage string, end clientEnding) {
	b := startHostile(t, stage)
	c := &fcgi.Client{Addr: b.ln.Addr().String(), Multiplex: mpx, ErrorLog: quietLog}
	if end.name == "timeout" {
		c.ResponseHeaderTimeout = 300 * time.Millisecond
		c.ReadTimeout = 300 * time.Millisecond
		c.WriteTimeout = 300 * time.Millisecond
	}
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The body comes in two parts: the first before the stage, the rest
	// after the ending, as a caller's upload that goes on would.
	pr, pw := io.Pipe()
	req := &fcgi.Request{
		Params: map[string]string{"REQUEST_METHOD": "POST", "REQUEST_URI": "/hostile", "SCRIPT_FILENAME": "/x"},
		Body:   pr,
	}
	type result struct {
		resp *fcgi.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Do(ctx, req)
		done <- result{resp, err}
	}()
	early := stage == "begin" || stage == "stdin"
	go func() {
		pw.Write([]byte("first "))
		if !early {
			pw.Write([]byte("rest"))
			pw.Close()
		}
	}()
	select {
	case <-b.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend did not reach the stage")
	}

	var resp *fcgi.Response
	var err error
	if stage == "body" || stage == "done" {
		// The header has come: Do returns before the ending.
		r := <-done
		if r.err != nil {
			t.Fatalf("Do before the ending: %v", r.err)
		}
		resp = r.resp
	}
	b.act <- end.act
	switch end.name {
	case "cancel":
		cancel()
	case "close-body":
		resp.Body.Close()
	}
	if early {
		go func() {
			pw.Write([]byte("rest"))
			pw.Close()
		}()
	}
	if resp == nil {
		select {
		case r := <-done:
			resp, err = r.resp, r.err
		case <-time.After(10 * time.Second):
			t.Fatal("Do did not return after the ending")
		}
	}
	var body []byte
	if resp != nil && end.name != "close-body" {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	pr.CloseWithError(errors.New("test over"))
	switch {
	case stage == "done" && end.name == "cancel":
		// As with net/http, the context covers reading the body: a
		// body already buffered may still be read whole, or fail.
		if err != nil && !errors.Is(err, context.Canceled) || err == nil && string(body) != "partial ok" {
			t.Fatalf("a response complete before the cancel: %q, %v", body, err)
		}
	case stage == "done" && end.name != "close-body":
		if err != nil || string(body) != "partial ok" {
			t.Fatalf("a response complete before the ending: %q, %v", body, err)
		}
	case end.name != "close-body":
		if err == nil {
			t.Fatalf("no error from a request ended at %s by %s (body %q)", stage, end.name, body)
		}
	}

	settled := func() bool {
		inflight, waiters, conns, idle, mpx := fcgi.PoolState(c)
		return inflight == 0 && waiters == 0 && conns == idle+mpx
	}
	if !eventually(settled) {
		inflight, waiters, conns, idle, mpx := fcgi.PoolState(c)
		t.Fatalf("pool after the ending: %d in flight, %d waiting, %d open, %d idle, %d multiplexed", inflight, waiters, conns, idle, mpx)
	}
	// A fresh request is served: an idle connection left behind is
	// usable, or known to be dead.
	if _, got := doString(t, c, get("/ok")); got != "partial ok" {
		t.Fatalf("fresh response %q", got)
	}
	c.Close()
	if !eventually(func() bool { _, _, conns, _, _ := fcgi.PoolState(c); return conns == 0 }) {
		_, _, conns, _, _ := fcgi.PoolState(c)
		t.Fatalf("%d connections open after Close", conns)
	}
}

// A request queued for a connection (MaxConnsPerBackend reached), ended
// each way: its own context, Client.Close, or the request holding the
// connection ending by success, cancel or each backend failure. The
// queued request leaves the queue with an error, or is served, and the
// pool settles.
func TestClientQueuedEveryEnding(t *testing.T) {
	endings := []struct {
		name   string
		stage  string // where the holder stops
		act    string // what the backend does then
		served bool   // whether the queued request is served
	}{
		{"cancel", "header", "stall", false},
		{"client-close", "header", "stall", false},
		{"holder-done", "done", "stall", true},
		{"holder-cancel", "header", "stall", true},
		{"holder-backend-fin", "header", "fin", true},
		{"holder-backend-rst", "header", "rst", true},
		{"holder-backend-malformed", "header", "malformed", true},
	}
	for _, mpx := range []fcgi.MultiplexMode{fcgi.MultiplexOff, fcgi.MultiplexOn} {
		name := map[fcgi.MultiplexMode]string{fcgi.MultiplexOff: "one-per-conn", fcgi.MultiplexOn: "multiplexed"}[mpx]
		for _, end := range endings {
			t.Run(name+"/"+end.name, func(t *testing.T) {
				t.Parallel()
				b := startHostile(t, end.stage)
				c := &fcgi.Client{Addr: b.ln.Addr().String(), Multiplex: mpx, MaxConnsPerBackend: 1, MaxMultiplexedRequests: 1, ErrorLog: quietLog}
				defer c.Close()
				hctx, hcancel := context.WithCancel(context.Background())
				defer hcancel()
				held := make(chan error, 1)
				go func() {
					resp, err := c.Do(hctx, &fcgi.Request{Params: map[string]string{"REQUEST_METHOD": "GET", "REQUEST_URI": "/hostile", "SCRIPT_FILENAME": "/x"}})
					if err == nil {
						_, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					held <- err
				}()
				select {
				case <-b.reached:
				case <-time.After(10 * time.Second):
					t.Fatal("the backend did not reach the stage")
				}
				if end.stage == "done" {
					if err := <-held; err != nil {
						t.Fatalf("holder: %v", err)
					}
				}
				qctx, qcancel := context.WithCancel(context.Background())
				defer qcancel()
				type result struct {
					body string
					err  error
				}
				queued := make(chan result, 1)
				go func() {
					resp, err := c.Do(qctx, get("/ok"))
					if err != nil {
						queued <- result{err: err}
						return
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					queued <- result{string(body), err}
				}()
				waitForMsg(t, "the request to queue", func() bool {
					_, waiters, _, _, _ := fcgi.PoolState(c)
					return waiters == 1 || end.stage == "done"
				})
				b.act <- end.act
				switch end.name {
				case "cancel":
					qcancel()
				case "client-close":
					c.Close()
				case "holder-cancel":
					hcancel()
				}
				var r result
				select {
				case r = <-queued:
				case <-time.After(10 * time.Second):
					inflight, waiters, conns, idle, mpxc := fcgi.PoolState(c)
					t.Fatalf("the queued request is still waiting: %d in flight, %d waiting, %d open, %d idle, %d multiplexed", inflight, waiters, conns, idle, mpxc)
				}
				if end.served && (r.err != nil || r.body != "partial ok") {
					t.Fatalf("queued request: %q, %v; want it served", r.body, r.err)
				}
				if !end.served && r.err == nil {
					t.Fatalf("queued request served (%q) after %s", r.body, end.name)
				}
				if end.name == "cancel" && !errors.Is(r.err, context.Canceled) {
					t.Fatalf("queued request after its cancel: %v", r.err)
				}
				if end.name == "client-close" && !errors.Is(r.err, fcgi.ErrClientClosed) {
					t.Fatalf("queued request after Close: %v", r.err)
				}
				hcancel()
				settled := func() bool {
					inflight, waiters, conns, idle, mpx := fcgi.PoolState(c)
					return inflight == 0 && waiters == 0 && conns == idle+mpx
				}
				if end.name != "client-close" {
					if !eventually(settled) {
						inflight, waiters, conns, idle, mpxc := fcgi.PoolState(c)
						t.Fatalf("pool: %d in flight, %d waiting, %d open, %d idle, %d multiplexed", inflight, waiters, conns, idle, mpxc)
					}
					if _, got := doString(t, c, get("/ok")); got != "partial ok" {
						t.Fatalf("fresh response %q", got)
					}
				}
				c.Close()
				if !eventually(func() bool { _, _, conns, _, _ := fcgi.PoolState(c); return conns == 0 }) {
					t.Fatal("connections open after Close")
				}
			})
		}
	}
}

package fcgicaddy_test

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// fakeBackend is a FastCGI application that misbehaves on request: the
// path of REQUEST_URI says how. It records, by the X-Case header of each
// request, the connection it came on, and which connections have closed.
type fakeBackend struct {
	ln   net.Listener
	addr string

	mu       sync.Mutex
	nextConn int
	openConn map[int]bool
	byCase   map[string]int // X-Case → connection of its last attempt
	tries    map[string]int // X-Case → attempts seen
	changed  chan struct{}  // closed and replaced on every change
	hold     chan struct{}  // /hold answers once it is closed
}

func startFakeBackend(t *testing.T) *fakeBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{ln: ln, addr: ln.Addr().String(), openConn: map[int]bool{},
		byCase: map[string]int{}, tries: map[string]int{}, changed: make(chan struct{}), hold: make(chan struct{})}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	// Owned by the test; ends when Cleanup closes the listener.
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(nc, true)
			b.mu.Lock()
			b.nextConn++
			id := b.nextConn
			b.openConn[id] = true
			b.mu.Unlock()
			// Owned by the test; ends when the connection closes.
			wg.Go(func() {
				b.serve(nc, id)
				nc.Close()
				conns.Delete(nc)
				b.update(func() { delete(b.openConn, id) })
			})
		}
	})
	return b
}

func (b *fakeBackend) update(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f()
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *fakeBackend) open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.openConn)
}

func (b *fakeBackend) attempts(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tries[id]
}

// wait waits up to 20s for cond, called with b.mu held, to hold.
func (b *fakeBackend) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		b.mu.Lock()
		ok, ch := cond(), b.changed
		b.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Errorf("backend: %s: not within 20s", what)
			return
		}
	}
}

// isOpen reports whether the connection of the request tagged id is open.
func (b *fakeBackend) isOpen(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.byCase[id]
	return ok && b.openConn[c]
}

// waitRequest waits until the request tagged id has begun.
func (b *fakeBackend) waitRequest(t *testing.T, id string) {
	t.Helper()
	b.wait(t, "request "+id+" arrives", func() bool { return b.tries[id] > 0 })
}

// waitClosed waits until the connection of the request tagged id is
// closed.
func (b *fakeBackend) waitClosed(t *testing.T, id string) {
	t.Helper()
	b.wait(t, "connection of "+id+" closed", func() bool {
		c, ok := b.byCase[id]
		return ok && !b.openConn[c]
	})
}

// serve runs the requests of one connection, one at a time, as PHP-FPM
// does.
func (b *fakeBackend) serve(nc net.Conn, conn int) {
	rd := wire.NewReader(nc)
	defer rd.Release()
	w := wire.NewWriter(nc)
	var (
		id       uint16
		keep     bool
		params   []byte
		env      map[string]string
		stdin    int
		answered bool
	)
	for {
		rec, err := rd.Next()
		if err != nil {
			return
		}
		if rec.RequestID != id && rec.Type != wire.TypeBeginRequest {
			continue // what is left of a request already answered
		}
		switch rec.Type {
		case wire.TypeBeginRequest:
			br, err := wire.ParseBeginRequest(rec.Content)
			if err != nil {
				return
			}
			id, keep, params, env, stdin, answered = rec.RequestID, br.KeepConn(), nil, nil, 0, false
		case wire.TypeParams:
			if len(rec.Content) > 0 {
				params = append(params, rec.Content...)
				continue
			}
			env = map[string]string{}
			wire.ForEachPair(params, func(k, v []byte) bool { env[string(k)] = string(v); return true })
			c := env["HTTP_X_CASE"]
			b.update(func() { b.byCase[c] = conn; b.tries[c]++ })
			if path(env) == "/noread" {
				answered = true
				if !b.answer(w, id, keep, "noread") {
					return
				}
			}
		case wire.TypeStdin:
			if len(rec.Content) > 0 {
				stdin += len(rec.Content)
				continue
			}
			if answered {
				continue
			}
			answered = true
			if !b.respond(nc, w, id, keep, env, stdin) {
				return
			}
		case wire.TypeAbortRequest:
			w.WriteEndRequest(id, 0, wire.StatusRequestComplete)
			if w.Flush() != nil || !keep {
				return
			}
		}
	}
}

func path(env map[string]string) string {
	p, _, _ := strings.Cut(env["REQUEST_URI"], "?")
	return p
}

// respond answers the request whose whole body has arrived; it reports
// whether the connection goes on.
func (b *fakeBackend) respond(nc net.Conn, w *wire.Writer, id uint16, keep bool, env map[string]string, stdin int) bool {
	ok := fmt.Sprintf("stdin=%d cl=%s", stdin, env["CONTENT_LENGTH"])
	switch path(env) {
	case "/hang":
		return true // the next read ends when Caddy gives up
	case "/hold":
		<-b.hold
	case "/big", "/closemid", "/rst":
		w.WriteStream(wire.TypeStdout, id, []byte("Content-Type: text/plain\r\n\r\n"))
		n := 8 << 20
		if path(env) != "/big" {
			n = 100000
		}
		part := bytes.Repeat([]byte{'x'}, 32<<10)
		for sent := 0; sent < n; sent += len(part) {
			w.WriteStream(wire.TypeStdout, id, part)
			if w.Flush() != nil {
				return false
			}
			if sent > n/2 && path(env) != "/big" {
				if path(env) == "/rst" {
					nc.(*net.TCPConn).SetLinger(0)
				}
				return false
			}
		}
		return b.end(w, id, keep)
	case "/503once":
		b.mu.Lock()
		first := b.tries[env["HTTP_X_CASE"]] == 1
		b.mu.Unlock()
		if first {
			w.WriteStream(wire.TypeStdout, id, []byte("Status: 503 Busy\r\n\r\nbusy"))
			return b.end(w, id, keep)
		}
	case "/stderr":
		w.WriteStream(wire.TypeStderr, id, bytes.Repeat([]byte("warning\n"), 40000))
	}
	return b.answer(w, id, keep, ok)
}

func (b *fakeBackend) answer(w *wire.Writer, id uint16, keep bool, body string) bool {
	w.WriteStream(wire.TypeStdout, id, []byte("Content-Type: text/plain\r\n\r\n"+body))
	return b.end(w, id, keep)
}

func (b *fakeBackend) end(w *wire.Writer, id uint16, keep bool) bool {
	w.WriteRecord(wire.TypeStdout, id, nil)
	w.WriteEndRequest(id, 0, wire.StatusRequestComplete)
	return w.Flush() == nil && keep
}

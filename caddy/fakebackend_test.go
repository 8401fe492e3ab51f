package fcgicaddy_test

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// fakeBackend is a FastCGI application that misbehaves on request: the
// path of REQUEST_URI says how. It serves the requests of a connection
// concurrently, each on its own goroutine, so that it multiplexes when the
// client does, and answers FCGI_GET_VALUES with FCGI_MPXS_CONNS=1 and
// FCGI_MAX_REQS=maxReqs. It records, by the X-Case header of each request,
// the connection it came on and the FCGI_ABORT_REQUESTs it got, and which
// connections have closed.
type fakeBackend struct {
	ln      net.Listener
	addr    string
	maxReqs int

	mu       sync.Mutex
	nextConn int
	openConn map[int]bool
	byCase   map[string]int   // X-Case → connection of its last attempt
	connsOf  map[string][]int // X-Case → connection of each attempt
	tries    map[string]int   // X-Case → attempts seen
	aborts   map[string]int   // X-Case → FCGI_ABORT_REQUESTs seen
	probes   int              // FCGI_GET_VALUES answered
	maxMpx   int              // most requests seen at once on one connection
	changed  chan struct{}    // closed and replaced on every change
	holds    map[string]chan struct{}

	// The barrier of /barrier: barrierWant requests wait for each other.
	barrierWant int
	barrierIn   int
	barrierGo   chan struct{}
}

func startFakeBackend(t *testing.T, maxReqs int) *fakeBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{ln: ln, addr: ln.Addr().String(), maxReqs: maxReqs, openConn: map[int]bool{},
		byCase: map[string]int{}, connsOf: map[string][]int{}, tries: map[string]int{}, aborts: map[string]int{},
		changed: make(chan struct{}), holds: map[string]chan struct{}{}, barrierGo: make(chan struct{})}
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
				c := &beConn{b: b, nc: nc, id: id, w: wire.NewWriter(nc), reqs: map[uint16]*beReq{}, last: map[uint16]string{}, closed: make(chan struct{})}
				c.serve()
				nc.Close()
				close(c.closed)
				c.wg.Wait()
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

// conn returns the connection of the request tagged id's last attempt, 0
// if it never arrived.
func (b *fakeBackend) conn(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byCase[id]
}

// conns returns the connections of the attempts of the request tagged id.
func (b *fakeBackend) conns(id string) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.connsOf[id])
}

// sharedWith reports whether an attempt of the request tagged id came on
// the connection of the request tagged other.
func (b *fakeBackend) sharedWith(id, other string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.connsOf[id] {
		if c == b.byCase[other] {
			return true
		}
	}
	return false
}

// hold returns the channel whose close lets /hold and /part of the request
// tagged id answer.
func (b *fakeBackend) hold(id string) chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := b.holds[id]
	if ch == nil {
		ch = make(chan struct{})
		b.holds[id] = ch
	}
	return ch
}

// release lets the held request tagged id answer.
func (b *fakeBackend) release(id string) { close(b.hold(id)) }

// setBarrier makes /barrier requests wait until n of them have arrived.
func (b *fakeBackend) setBarrier(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.barrierWant = n
}

// barrier waits until barrierWant requests wait together, and reports
// whether they did within 20s.
func (b *fakeBackend) barrier(closed chan struct{}) bool {
	b.mu.Lock()
	b.barrierIn++
	ch := b.barrierGo
	if b.barrierIn >= b.barrierWant {
		close(b.barrierGo)
		b.barrierGo = make(chan struct{})
		b.barrierIn = 0
	}
	b.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-closed:
	case <-time.After(20 * time.Second):
	}
	b.mu.Lock()
	if ch == b.barrierGo {
		b.barrierIn--
	}
	b.mu.Unlock()
	return false
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

// waitAborted waits until the request tagged id has been aborted with
// FCGI_ABORT_REQUEST.
func (b *fakeBackend) waitAborted(t *testing.T, id string) {
	t.Helper()
	b.wait(t, "FCGI_ABORT_REQUEST of "+id, func() bool { return b.aborts[id] > 0 })
}

// A beConn is one connection of the backend. Its read loop owns reqs and
// starts a goroutine per request once the request is in; those write
// their records in turn.
type beConn struct {
	b      *fakeBackend
	nc     net.Conn
	id     int
	closed chan struct{} // closed once the read loop has ended
	wg     sync.WaitGroup

	wmu sync.Mutex // guards w
	w   *wire.Writer

	mu   sync.Mutex // guards reqs
	reqs map[uint16]*beReq

	// last is, by request ID, the X-Case of the last request that had it;
	// owned by the read loop.
	last map[uint16]string
}

// A beReq is one request on a beConn.
type beReq struct {
	id      uint16
	keep    bool
	params  []byte
	env     map[string]string
	stdin   int
	started bool          // its goroutine runs; owned by the read loop
	aborted chan struct{} // closed by FCGI_ABORT_REQUEST
}

// serve reads the connection's records until it fails or closes.
func (c *beConn) serve() {
	rd := wire.NewReader(c.nc)
	defer rd.Release()
	for {
		rec, err := rd.Next()
		if err != nil {
			return
		}
		if rec.Type == wire.TypeGetValues {
			if !c.getValues(rec.Content) {
				return
			}
			continue
		}
		c.mu.Lock()
		r := c.reqs[rec.RequestID]
		if rec.Type == wire.TypeBeginRequest {
			br, err := wire.ParseBeginRequest(rec.Content)
			if err != nil {
				c.mu.Unlock()
				return
			}
			r = &beReq{id: rec.RequestID, keep: br.KeepConn(), aborted: make(chan struct{})}
			c.reqs[rec.RequestID] = r
			delete(c.last, rec.RequestID)
			n := len(c.reqs)
			c.mu.Unlock()
			c.b.update(func() { c.b.maxMpx = max(c.b.maxMpx, n) })
			continue
		}
		c.mu.Unlock()
		if r == nil {
			if cs, ok := c.last[rec.RequestID]; ok && rec.Type == wire.TypeAbortRequest {
				// The client gave up on a request the backend has
				// ended, before the end reached it: the ID is not
				// reused until then, so the abort is that request's,
				// and ignored (§5.4).
				c.b.update(func() { c.b.aborts[cs]++ })
			}
			continue // what is left of a request already answered
		}
		switch rec.Type {
		case wire.TypeParams:
			if len(rec.Content) > 0 {
				r.params = append(r.params, rec.Content...)
				continue
			}
			r.env = map[string]string{}
			wire.ForEachPair(r.params, func(k, v []byte) bool { r.env[string(k)] = string(v); return true })
			cs := r.env["HTTP_X_CASE"]
			c.last[r.id] = cs
			c.b.update(func() { c.b.byCase[cs] = c.id; c.b.connsOf[cs] = append(c.b.connsOf[cs], c.id); c.b.tries[cs]++ })
			if path(r.env) == "/noread" {
				c.start(r)
			}
		case wire.TypeStdin:
			if len(rec.Content) > 0 {
				r.stdin += len(rec.Content)
				continue
			}
			c.start(r)
		case wire.TypeAbortRequest:
			select {
			case <-r.aborted:
			default:
				close(r.aborted)
				cs := r.env["HTTP_X_CASE"]
				c.b.update(func() { c.b.aborts[cs]++ })
			}
			// A request aborted before it was in ends at once.
			c.start(r)
		}
	}
}

// getValues answers FCGI_GET_VALUES; it reports whether the connection
// goes on.
func (c *beConn) getValues(content []byte) bool {
	vals := map[string]string{"FCGI_MPXS_CONNS": "1", "FCGI_MAX_REQS": strconv.Itoa(c.b.maxReqs), "FCGI_MAX_CONNS": "100"}
	var out []byte
	wire.ForEachPair(content, func(k, _ []byte) bool {
		if v, ok := vals[string(k)]; ok {
			out = wire.AppendPair(out, string(k), v)
		}
		return true
	})
	c.b.update(func() { c.b.probes++ })
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.w.WriteRecord(wire.TypeGetValuesResult, wire.NullRequestID, out)
	return c.w.Flush() == nil
}

// start runs r's answer on its own goroutine, once.
func (c *beConn) start(r *beReq) {
	if r.started {
		return
	}
	r.started = true
	c.wg.Go(func() {
		if !c.respond(r) {
			c.nc.Close()
		}
	})
}

// send writes records with f and flushes them, in turn with the other
// requests of the connection; it reports whether that worked.
func (c *beConn) send(f func(w *wire.Writer)) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	f(c.w)
	return c.w.Flush() == nil
}

func path(env map[string]string) string {
	p, _, _ := strings.Cut(env["REQUEST_URI"], "?")
	return p
}

// stopped reports whether r was aborted or its connection ended.
func (c *beConn) stopped(r *beReq) bool {
	select {
	case <-r.aborted:
		return true
	case <-c.closed:
		return true
	default:
		return false
	}
}

// respond answers r; it reports whether the connection goes on.
func (c *beConn) respond(r *beReq) bool {
	if c.stopped(r) {
		return c.end(r)
	}
	env := r.env
	ok := "noread" // the read loop may still be counting its body
	if path(env) != "/noread" {
		ok = fmt.Sprintf("stdin=%d cl=%s", r.stdin, env["CONTENT_LENGTH"])
	}
	header := []byte("Content-Type: text/plain\r\n\r\n")
	switch path(env) {
	case "/hang":
		select { // until Caddy gives up
		case <-r.aborted:
		case <-c.closed:
		}
		return c.end(r)
	case "/hold":
		select {
		case <-c.b.hold(env["HTTP_X_CASE"]):
		case <-r.aborted:
			return c.end(r)
		case <-c.closed:
			return false
		}
	case "/part":
		// Half the answer, the rest once released: a request the case
		// shares its connection with, mid-response. Its status is not
		// the 200 handle_response replaces.
		if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.id, []byte("Status: 203 Part\r\n\r\nbegin-")) }) {
			return false
		}
		switch c.dots(r, c.b.hold(env["HTTP_X_CASE"])) {
		case stopAborted:
			return c.end(r)
		case stopBroken:
			return false
		}
		if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.id, []byte("end")) }) {
			return false
		}
		return c.end(r)
	case "/barrier":
		// The header at once, and dots while the barrier waits.
		if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.id, header) }) {
			return false
		}
		met := make(chan bool, 1)
		done := make(chan struct{})
		// Owned by the request; ends within the barrier's 20s.
		go func() {
			met <- c.b.barrier(c.closed)
			close(done)
		}()
		stop := c.dots(r, done)
		if !<-met {
			ok = "barrier not met"
		}
		switch stop {
		case stopAborted:
			return c.end(r)
		case stopBroken:
			return false
		}
		header = nil
	case "/big", "/closemid", "/rst":
		if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.id, header) }) {
			return false
		}
		n := 8 << 20
		if path(env) != "/big" {
			n = 100000
		}
		part := bytes.Repeat([]byte{'x'}, 32<<10)
		for sent := 0; sent < n; sent += len(part) {
			if c.stopped(r) {
				return c.end(r)
			}
			if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.id, part) }) {
				return false
			}
			if sent > n/2 && path(env) != "/big" {
				if path(env) == "/rst" {
					c.nc.(*net.TCPConn).SetLinger(0)
				}
				return false
			}
		}
		return c.end(r)
	case "/503once":
		c.b.mu.Lock()
		first := c.b.tries[env["HTTP_X_CASE"]] == 1
		c.b.mu.Unlock()
		if first {
			if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.id, []byte("Status: 503 Busy\r\n\r\nbusy")) }) {
				return false
			}
			return c.end(r)
		}
	case "/stderr":
		if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStderr, r.id, bytes.Repeat([]byte("warning\n"), 40000)) }) {
			return false
		}
	}
	if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.id, append(header, ok...)) }) {
		return false
	}
	return c.end(r)
}

// How dots stops.
const (
	stopDone    = iota // done closed
	stopAborted        // r was aborted
	stopBroken         // the connection failed
)

// dots writes a dot of r's body every half second, within any
// read_timeout of the test, until done is closed or r or its connection
// ends.
func (c *beConn) dots(r *beReq, done <-chan struct{}) int {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return stopDone
		case <-tick.C:
			if !c.send(func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.id, []byte(".")) }) {
				return stopBroken
			}
		case <-r.aborted:
			return stopAborted
		case <-c.closed:
			return stopBroken
		}
	}
}

// end ends r with FCGI_END_REQUEST; it reports whether the connection goes
// on.
func (c *beConn) end(r *beReq) bool {
	c.mu.Lock()
	if c.reqs[r.id] == r {
		delete(c.reqs, r.id)
	}
	c.mu.Unlock()
	return c.send(func(w *wire.Writer) {
		w.WriteRecord(wire.TypeStdout, r.id, nil)
		w.WriteEndRequest(r.id, 0, wire.StatusRequestComplete)
	}) && r.keep
}

package fcgi_test

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// fakeApp is a small FastCGI application written on internal/wire, for
// testing the client: it multiplexes when asked, answers GET_VALUES the
// way it is told, and can misbehave on purpose.
type fakeApp struct {
	t    testing.TB
	ln   net.Listener
	Addr string

	// Handler serves one request. It runs on its own goroutine.
	Handler func(r *fakeReq)
	// Values answers GET_VALUES; nil never answers.
	Values map[string]string
	// UnknownValues answers GET_VALUES with UNKNOWN_TYPE, as an
	// application that does not implement it should.
	UnknownValues bool
	// CloseAfterValues closes the connection after GET_VALUES_RESULT, as
	// PHP-FPM does.
	CloseAfterValues bool
	// RunOnParams starts the handler when PARAMS end, before STDIN.
	RunOnParams bool
	// MaxRequestsPerConn closes a connection after this many requests
	// (0: never), like a PHP-FPM worker reaching pm.max_requests.
	MaxRequestsPerConn int
	// DropRequestN closes the connection without answering when the
	// Nth request (1-based) on a connection arrives; 0 never.
	DropRequestN int
	// ResetOnDrop makes that close a reset (TCP only): the worker read
	// the request and may have acted on it, then died.
	ResetOnDrop bool
	// DropOnce drops only the first request DropRequestN selects.
	DropOnce bool
	dropped  atomic.Bool
	// NoReadStdin never reads after PARAMS (for write timeouts).
	NoReadStdin bool
	// RefuseAtBegin, if not nil, is asked about the Nth request (1-based)
	// on a connection as its BEGIN_REQUEST arrives; true answers
	// FCGI_OVERLOADED at once, before the rest of the request is read,
	// whose records are then ignored.
	RefuseAtBegin func(served int) bool

	conns      atomic.Int64 // accepted
	open       atomic.Int64 // open now
	maxOpen    atomic.Int64
	requests   atomic.Int64
	maxActive  atomic.Int64 // most requests in flight on one connection
	aborts     atomic.Int64
	idsMu      sync.Mutex
	ids        map[uint16]int // request IDs seen
	flagsMu    sync.Mutex
	flags      []uint8
	paramsRecs atomic.Int64 // non-empty PARAMS records received

	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	nc   map[net.Conn]bool
}

// fakeReq is one request as the fake application sees it.
type fakeReq struct {
	ID      uint16
	Role    wire.Role
	Params  map[string]string
	Stdin   []byte
	Data    []byte
	Aborted chan struct{}

	conn    *fakeConn
	ended   bool
	paramsB []byte
	gotIn   bool
	gotData bool
	started bool
	drop    bool // close the connection once the request is read
	endCh   chan struct{}
	giant   bool // the last PARAMS record was full
}

type fakeConn struct {
	app    *fakeApp
	nc     net.Conn
	wmu    sync.Mutex
	wr     *wire.Writer
	mu     sync.Mutex
	reqs   map[uint16]*fakeReq
	served int
	active int
}

func unixAddr(t testing.TB) (string, string) {
	dir, err := os.MkdirTemp("", "fc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "s")
	return p, "unix:" + p
}

// startFake starts a fake application on network: "tcp" for loopback
// TCP, "unix" for a unix socket.
func startFake(t testing.TB, network string, configure func(a *fakeApp)) *fakeApp {
	a := &fakeApp{t: t, ids: map[uint16]int{}, nc: map[net.Conn]bool{}, done: make(chan struct{})}
	a.Handler = func(r *fakeReq) { r.Write("Content-Type: text/plain\r\n\r\nhello") }
	if configure != nil {
		configure(a)
	}
	var err error
	if network == "unix" {
		var p string
		p, a.Addr = unixAddr(t)
		a.ln, err = net.Listen("unix", p)
	} else {
		a.ln, err = net.Listen("tcp", "127.0.0.1:0")
		a.Addr = a.ln.Addr().String()
	}
	if err != nil {
		t.Fatal(err)
	}
	a.wg.Add(1)
	go a.serve()
	t.Cleanup(a.Close)
	return a
}

func (a *fakeApp) Close() {
	close(a.done)
	a.ln.Close()
	a.mu.Lock()
	for nc := range a.nc {
		nc.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

func (a *fakeApp) serve() {
	defer a.wg.Done()
	for {
		nc, err := a.ln.Accept()
		if err != nil {
			return
		}
		a.conns.Add(1)
		n := a.open.Add(1)
		for {
			m := a.maxOpen.Load()
			if n <= m || a.maxOpen.CompareAndSwap(m, n) {
				break
			}
		}
		a.mu.Lock()
		a.nc[nc] = true
		a.mu.Unlock()
		c := &fakeConn{app: a, nc: nc, wr: wire.NewWriter(nc), reqs: map[uint16]*fakeReq{}}
		a.wg.Add(1)
		go c.serve()
	}
}

func (c *fakeConn) serve() {
	a := c.app
	defer a.wg.Done()
	defer func() {
		c.nc.Close()
		a.open.Add(-1)
		a.mu.Lock()
		delete(a.nc, c.nc)
		a.mu.Unlock()
	}()
	rd := wire.NewReader(c.nc)
	defer rd.Release()
	for {
		rec, err := rd.Next()
		if err != nil {
			return
		}
		if rec.RequestID == 0 {
			if rec.Type == wire.TypeGetValues {
				if a.UnknownValues {
					c.wmu.Lock()
					c.wr.WriteUnknownType(wire.TypeGetValues)
					c.wr.Flush()
					c.wmu.Unlock()
					continue
				}
				if a.Values == nil {
					continue
				}
				var out []byte
				wire.ForEachPair(rec.Content, func(n, _ []byte) bool {
					if v, ok := a.Values[string(n)]; ok {
						out = wire.AppendPair(out, string(n), v)
					}
					return true
				})
				c.wmu.Lock()
				c.wr.WriteRecord(wire.TypeGetValuesResult, 0, out)
				c.wr.Flush()
				c.wmu.Unlock()
				if a.CloseAfterValues {
					return
				}
			}
			continue
		}
		c.mu.Lock()
		r := c.reqs[rec.RequestID]
		c.mu.Unlock()
		switch rec.Type {
		case wire.TypeBeginRequest:
			br, _ := wire.ParseBeginRequest(rec.Content)
			c.mu.Lock()
			c.served++
			served := c.served
			c.mu.Unlock()

			a.requests.Add(1)
			if a.RefuseAtBegin != nil && a.RefuseAtBegin(served) {
				c.wmu.Lock()
				c.wr.WriteEndRequest(rec.RequestID, 0, wire.StatusOverloaded)
				c.wr.Flush()
				c.wmu.Unlock()
				continue
			}
			a.idsMu.Lock()
			a.ids[rec.RequestID]++
			a.idsMu.Unlock()
			a.flagsMu.Lock()
			a.flags = append(a.flags, br.Flags)
			a.flagsMu.Unlock()
			r = &fakeReq{ID: rec.RequestID, Role: br.Role, Params: map[string]string{}, Aborted: make(chan struct{}), conn: c, endCh: make(chan struct{})}
			r.drop = a.DropRequestN > 0 && served == a.DropRequestN && !(a.DropOnce && a.dropped.Swap(true))
			c.mu.Lock()
			c.reqs[rec.RequestID] = r
			c.active++
			if n := int64(c.active); n > a.maxActive.Load() {
				a.maxActive.Store(n)
			}
			c.mu.Unlock()
		case wire.TypeParams:
			if r == nil {
				continue
			}
			if len(rec.Content) == 0 {
				wire.ForEachPair(r.paramsB, func(n, v []byte) bool {
					r.Params[string(n)] = string(v)
					return true
				})
				if a.RunOnParams || a.NoReadStdin {
					c.start(r)
				}
				if a.NoReadStdin {
					// Stop reading the connection altogether.
					<-a.done
					return
				}
				continue
			}
			a.paramsRecs.Add(1)
			// Each PARAMS record must parse on its own, as PHP-FPM needs,
			// unless a pair is longer than a record.
			full := len(rec.Content) == wire.MaxContent
			if !full && !r.giant {
				if err := wire.ForEachPair(rec.Content, func(n, v []byte) bool { return true }); err != nil {
					a.t.Errorf("PARAMS record does not hold whole pairs: %v", err)
				}
			}
			r.giant = full
			r.paramsB = append(r.paramsB, rec.Content...)
		case wire.TypeStdin:
			if r == nil {
				continue
			}
			if len(rec.Content) == 0 {
				r.gotIn = true
				if r.Role != wire.RoleFilter || r.gotData {
					c.start(r)
				}
				continue
			}
			r.Stdin = append(r.Stdin, rec.Content...)
		case wire.TypeData:
			if r == nil {
				continue
			}
			if len(rec.Content) == 0 {
				r.gotData = true
				if r.gotIn {
					c.start(r)
				}
				continue
			}
			r.Data = append(r.Data, rec.Content...)
		case wire.TypeAbortRequest:
			if r != nil {
				a.aborts.Add(1)
				select {
				case <-r.Aborted:
				default:
					close(r.Aborted)
				}
			}
		}
	}
}

func (c *fakeConn) start(r *fakeReq) {
	if r.started {
		return
	}
	r.started = true
	if r.drop {
		// Like a worker that dies with the request read.
		if tc, ok := c.nc.(*net.TCPConn); ok && c.app.ResetOnDrop {
			tc.SetLinger(0)
		}
		c.nc.Close()
		return
	}
	c.app.wg.Add(1)
	go func() {
		defer c.app.wg.Done()
		c.app.Handler(r)
		r.End(0, 0)
	}()
	c.mu.Lock()
	last := c.app.MaxRequestsPerConn > 0 && c.served >= c.app.MaxRequestsPerConn
	c.mu.Unlock()
	if last {
		// Like a PHP-FPM worker at pm.max_requests: read nothing more and
		// close right after the response.
		<-r.endCh
		c.nc.Close()
	}
}

// Write sends s on STDOUT.
func (r *fakeReq) Write(s string) { r.write(wire.TypeStdout, []byte(s)) }

// WriteErr sends s on STDERR.
func (r *fakeReq) WriteErr(s string) { r.write(wire.TypeStderr, []byte(s)) }

func (r *fakeReq) write(t wire.Type, p []byte) {
	c := r.conn
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wr.WriteStream(t, r.ID, p)
	c.wr.Flush()
}

// Dribble sends p on STDOUT every 10 ms until the request is aborted, a
// write fails or 20 s pass: an application whose body never ends.
func (r *fakeReq) Dribble(p []byte) {
	c := r.conn
	for range 2000 {
		select {
		case <-r.Aborted:
			return
		case <-time.After(10 * time.Millisecond):
		}
		c.wmu.Lock()
		err := c.wr.WriteStream(wire.TypeStdout, r.ID, p)
		if err == nil {
			err = c.wr.Flush()
		}
		c.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

// NthOnConn returns how many requests r's connection has begun, r
// included.
func (r *fakeReq) NthOnConn() int {
	r.conn.mu.Lock()
	defer r.conn.mu.Unlock()
	return r.conn.served
}

// End sends the empty STDOUT and END_REQUEST, once.
func (r *fakeReq) End(app uint32, status wire.ProtocolStatus) {
	c := r.conn
	c.wmu.Lock()
	if r.ended {
		c.wmu.Unlock()
		return
	}
	r.ended = true
	c.mu.Lock()
	delete(c.reqs, r.ID)
	c.active--
	c.mu.Unlock()
	if status == wire.StatusRequestComplete {
		c.wr.WriteRecord(wire.TypeStdout, r.ID, nil)
	}
	c.wr.WriteEndRequest(r.ID, app, status)
	c.wr.Flush()
	c.wmu.Unlock()
	close(r.endCh)
}

// KeepConnFlags returns the BEGIN_REQUEST flags seen.
func (a *fakeApp) KeepConnFlags() []uint8 {
	a.flagsMu.Lock()
	defer a.flagsMu.Unlock()
	return append([]uint8(nil), a.flags...)
}

// IDs returns the request IDs seen.
func (a *fakeApp) IDs() map[uint16]int {
	a.idsMu.Lock()
	defer a.idsMu.Unlock()
	m := map[uint16]int{}
	for k, v := range a.ids {
		m[k] = v
	}
	return m
}

// startHostileApp starts a fake application that answers /hostile with
// hostile and every other path with a plain "hello", the request a client
// must still be able to serve after the hostile one.
func startHostileApp(t *testing.T, hostile func(r *fakeReq)) *fakeApp {
	return startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_URI"] == "/hostile" {
				hostile(r)
				return
			}
			r.Write("Content-Type: text/plain\r\n\r\nhello")
		}
	})
}

// forEachMultiplex runs f as a subtest named name with multiplexing off,
// and as name+"/mpx" with it on.
func forEachMultiplex(t *testing.T, name string, f func(t *testing.T, mpx fcgi.MultiplexMode)) {
	for _, mpx := range []fcgi.MultiplexMode{fcgi.MultiplexOff, fcgi.MultiplexOn} {
		n := name
		if mpx == fcgi.MultiplexOn {
			n += "/mpx"
		}
		t.Run(n, func(t *testing.T) { f(t, mpx) })
	}
}

package fcgi

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// A clientConn is one connection to a backend. Without multiplexing it
// carries one request at a time, with request ID 1, and the goroutine reading
// the response reads the socket itself. With multiplexing a read loop
// goroutine routes records to requests by ID.
type clientConn struct {
	b       *backend
	nc      net.Conn
	rd      *wire.Reader
	created time.Time

	served int // responses read to their end; owned by the connection's user
	alive  *aliveChecker

	// Guarded by b.mu.
	inIdle    bool
	idleTimer *time.Timer

	// wmu guards wr and writes to nc: requests of a multiplexed connection
	// write in turn.
	wmu       sync.Mutex
	wr        *wire.Writer
	wdeadline bool // a write deadline is set

	// Multiplexing. Set before the read loop starts, except where noted.
	mpx       bool
	maxReqs   int
	active    atomic.Int32  // requests holding an ID; incremented under b.mu
	calls0    atomic.Int64  // requests ever started on the connection
	mu        sync.Mutex    // guards calls
	calls     []*call       // calls[id-1], nil when the ID is free
	broken    chan struct{} // closed when the connection failed
	brokenErr error         // set before broken is closed
	byClient  bool          // set before broken is closed: the client closed it, for brokenErr
	failOnce  sync.Once
	// retired is set when an aborted request outlived its grace: the
	// connection takes no new request, and is closed once the requests still
	// running on it have ended (see call.graceOver).
	retired atomic.Bool
	// aborting counts the requests aborted and not yet ended by the
	// application. While it is not zero the connection takes no new request:
	// an application that does not answer an abort may be stuck whole, and a
	// request given to it would wait for nothing.
	aborting atomic.Int32
}

func newClientConn(b *backend, nc net.Conn) *clientConn {
	return &clientConn{b: b, nc: nc, rd: wire.NewReader(nc), wr: wire.NewWriter(nc), created: time.Now(), maxReqs: 1}
}

// expired reports whether cc is past MaxLifetime.
func (cc *clientConn) expired(now time.Time) bool {
	l := cc.b.c.MaxLifetime
	return l > 0 && now.Sub(cc.created) > l
}

// closeConn closes the socket and, for a one-request connection, gives the
// read buffer back. Only the connection's owner calls it.
func (cc *clientConn) closeConn() {
	cc.nc.Close()
	if !cc.mpx {
		cc.rd.Release()
	}
}

// aliveForReuse checks that an idle connection was not closed by the backend
// and holds no stray bytes.
func (cc *clientConn) aliveForReuse() bool {
	if cc.rd.Buffered() != 0 {
		return false
	}
	if cc.alive == nil {
		cc.alive = newAliveChecker(cc.nc)
	}
	return cc.alive.check()
}

// setWriteDeadline arms WriteTimeout for the next write, or clears a deadline
// left by an earlier write. Callers hold wmu.
func (cc *clientConn) setWriteDeadline(d time.Duration) {
	if d > 0 {
		cc.nc.SetWriteDeadline(time.Now().Add(d))
		cc.wdeadline = true
	} else if cc.wdeadline {
		cc.nc.SetWriteDeadline(time.Time{})
		cc.wdeadline = false
	}
}

// fail closes a multiplexed connection the backend closed or broke; every
// call on it sees err, as ErrBackendClosed or ErrProtocol.
func (cc *clientConn) fail(err error) { cc.breakOnce(err, false) }

// shut closes a multiplexed connection the client gives up on; the calls
// still on it see why, never ErrBackendClosed: the backend closed nothing.
func (cc *clientConn) shut(why error) {
	cc.breakOnce(fmt.Errorf("fcgi: %s: connection closed by the client: %w", cc.b.addr, why), true)
}

// breakOnce closes a multiplexed connection, the first time only, for err.
func (cc *clientConn) breakOnce(err error, byClient bool) {
	cc.failOnce.Do(func() {
		cc.brokenErr, cc.byClient = err, byClient
		close(cc.broken)
		cc.nc.Close()
		cc.b.mpxConnBroken(cc)
	})
}

// failWrite ends a multiplexed connection after a failed write: a record may
// be cut short, so the stream is lost. A timeout, or a socket the client
// already closed, is the client's doing; anything else the backend's.
func (cc *clientConn) failWrite(err error) {
	switch {
	case isTimeout(err):
		cc.shut(&TimeoutError{Op: "write request", Addr: cc.b.addr})
	case errors.Is(err, net.ErrClosed):
		cc.shut(fmt.Errorf("writing request: %w", err))
	default:
		cc.fail(fmt.Errorf("writing request: %w", err))
	}
}

// closeIfDrained closes a retired connection once no request on it is still
// running: the only ones left, if any, were aborted and their callers are
// gone. It runs whenever a request stops running on a retired connection.
func (cc *clientConn) closeIfDrained() {
	if !cc.retired.Load() {
		return
	}
	cc.mu.Lock()
	for _, cl := range cc.calls {
		if cl != nil && !cl.endSeen.Load() && !isClosed(cl.gone) {
			cc.mu.Unlock()
			return
		}
	}
	cc.mu.Unlock()
	cc.shut(errors.New("retired after an aborted request outlived its grace"))
}

// isClosed reports whether ch is closed; a nil ch is not.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

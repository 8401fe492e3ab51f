package fcgi

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// startMpx makes cc a multiplexed connection and starts its read loop.
func (cc *clientConn) startMpx(maxReqs int) {
	cc.mpx = true
	cc.maxReqs = maxReqs
	cc.calls = make([]*call, maxReqs)
	cc.broken = make(chan struct{})
	// Owned by the connection; ends when the connection fails or is closed
	// (by the idle timer, Client.Close, or fail).
	go cc.readLoop()
}

// newMpxCall takes the lowest free request ID; the caller has already counted
// the request in active. It returns nil if cc broke or was retired.
func (cc *clientConn) newMpxCall() *call {
	cc.mu.Lock()
	if isClosed(cc.broken) || cc.retired.Load() {
		cc.mu.Unlock()
		cc.active.Add(-1)
		return nil
	}
	for i, x := range cc.calls {
		if x == nil {
			cl := newCall(cc)
			cl.id = uint16(i + 1)
			cl.reused = cc.calls0.Add(1) > 1
			cl.events = make(chan event, 8)
			cl.gone = make(chan struct{})
			cl.refs.Store(1)
			cc.calls[i] = cl
			cc.mu.Unlock()
			return cl
		}
	}
	cc.mu.Unlock()
	cc.active.Add(-1)
	panic("fcgi: no free request ID on a multiplexed connection")
}

var (
	smallEventBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
	bigEventBufs   = sync.Pool{New: func() any { b := make([]byte, 0, wire.MaxContent); return &b }}
)

func getEventBuf(p []byte) *[]byte {
	var bp *[]byte
	if len(p) <= 4096 {
		bp = smallEventBufs.Get().(*[]byte)
	} else {
		bp = bigEventBufs.Get().(*[]byte)
	}
	*bp = append((*bp)[:0], p...)
	return bp
}

func putEventBuf(bp *[]byte) {
	if cap(*bp) == 4096 {
		smallEventBufs.Put(bp)
	} else {
		bigEventBufs.Put(bp)
	}
}

// readLoop reads records and routes them to calls by request ID.
func (cc *clientConn) readLoop() {
	for {
		rec, err := cc.rd.Next()
		if err != nil {
			cc.fail(err)
			return
		}
		if rec.RequestID == wire.NullRequestID {
			continue
		}
		cc.mu.Lock()
		var cl *call
		if i := int(rec.RequestID) - 1; i < len(cc.calls) {
			cl = cc.calls[i]
		}
		cc.mu.Unlock()
		if cl == nil || cl.endSeen.Load() {
			// Inactive IDs are ignored (§3.3).
			continue
		}
		switch rec.Type {
		case wire.TypeStdout, wire.TypeStderr, wire.TypeEndRequest:
		default:
			cc.fail(fmt.Errorf("%w: %s: unexpected %v", ErrProtocol, cc.b.addr, rec.Header))
			return
		}
		if !isClosed(cl.gone) {
			ev := event{typ: rec.Type, buf: getEventBuf(rec.Content)}
			select {
			case cl.events <- ev:
			case <-cl.gone:
				putEventBuf(ev.buf)
			}
		}
		if rec.Type == wire.TypeEndRequest {
			cl.endSeen.Store(true)
			cl.abortAnswered()
			cl.releaseRef()
			cc.closeIfDrained()
		}
	}
}

// releaseRef drops one hold on the call's request ID and frees the ID when
// none is left.
func (cl *call) releaseRef() {
	if cl.refs.Add(-1) != 0 {
		return
	}
	cc := cl.cc
	cc.mu.Lock()
	if cc.calls[cl.id-1] == cl {
		cc.calls[cl.id-1] = nil
	}
	cc.mu.Unlock()
	cc.active.Add(-1)
	cc.b.mpxSlotFree(cc)
}

// abort abandons a multiplexed request: it sends FCGI_ABORT_REQUEST, and from
// then on drops the request's records. Its ID stays taken until its
// END_REQUEST arrives, or the connection ends, since the backend may still
// send records with it. See graceOver for an application slow to answer. It
// never waits for the connection's write lock: another request's record may
// be stuck on a backend that stopped reading, and graceOver frees it.
func (cl *call) abort() {
	cl.goneMu.Do(func() {
		close(cl.gone)
		cc := cl.cc
		cc.closeIfDrained()
		if cl.endSeen.Load() || isClosed(cc.broken) {
			return
		}
		cc.aborting.Add(1)
		cl.aborting.Store(true)
		if cl.endSeen.Load() {
			// The END_REQUEST came as the abort was counted.
			cl.abortAnswered()
		}
		time.AfterFunc(cl.c.graceAfterAbort(), cl.graceOver)
		if cc.wmu.TryLock() {
			cl.writeAbort()
			return
		}
		go func() {
			cc.wmu.Lock()
			cl.writeAbort()
		}()
	})
}

// abortAnswered uncounts an aborted request once its END_REQUEST has been
// read (by the read loop, or by abort if it came meanwhile; once either way):
// the connection takes new requests again when none is left.
func (cl *call) abortAnswered() {
	if cl.aborting.CompareAndSwap(true, false) {
		cl.cc.aborting.Add(-1)
	}
}

// graceOver runs on its own goroutine a grace period after abort. An
// application that has not ended the request yet costs that request only: the
// connection is retired, serving the requests on it to their end but no new
// one. If the abort is still waiting to be written, a write of another
// request's is stuck on a backend that stopped reading, and the connection is
// closed, which frees that writer.
func (cl *call) graceOver() {
	cc := cl.cc
	if cl.endSeen.Load() || isClosed(cc.broken) {
		return
	}
	grace := cl.c.graceAfterAbort()
	if !cl.abortSent.Load() {
		cc.shut(fmt.Errorf("FCGI_ABORT_REQUEST not sent within %v: the backend stopped reading", grace))
		return
	}
	if !cc.retired.Swap(true) {
		cl.c.logger().Info("fcgi: aborted request not ended in time; its connection takes no new request", "backend", cl.b.addr, "grace", grace)
	}
	cc.closeIfDrained()
}

// writeAbort sends FCGI_ABORT_REQUEST with cc.wmu held, and unlocks it.
func (cl *call) writeAbort() {
	cc := cl.cc
	if isClosed(cc.broken) || cl.endSeen.Load() {
		// Ended meanwhile: its ID may already be another request's.
		cc.wmu.Unlock()
		return
	}
	cc.setWriteDeadline(cl.c.graceAfterAbort())
	err := cc.wr.WriteRecord(wire.TypeAbortRequest, cl.id, nil)
	if err == nil {
		err = cc.wr.Flush()
	}
	cc.setWriteDeadline(cl.c.writeTimeout())
	cc.wmu.Unlock()
	switch {
	case err == nil:
		cl.abortSent.Store(true)
	case isTimeout(err) || errors.Is(err, net.ErrClosed):
		cc.shut(fmt.Errorf("writing FCGI_ABORT_REQUEST: %w", err))
	default:
		cc.fail(fmt.Errorf("writing FCGI_ABORT_REQUEST: %w", err))
	}
}

// mpxTimers recycles the timers of multiplexed calls' waits: every call needs
// one, since its waits have timeouts by default.
var mpxTimers sync.Pool

// nextMpx is next for multiplexed connections: records come from the read
// loop.
func (cl *call) nextMpx() (wire.Type, []byte, error) {
	cc, c := cl.cc, cl.c
	if cl.cur != nil {
		putEventBuf(cl.cur)
		cl.cur = nil
	}
	for {
		var timeout <-chan time.Time
		var bodySent chan struct{} // set while the header's wait waits for the body
		d := c.readTimeout()
		if !cl.gotStdout {
			d = 0
			if hd := c.responseHeaderTimeout(); hd > 0 {
				if dl, final := cl.headerDeadline(hd); final {
					d = max(time.Until(dl), time.Nanosecond)
				} else {
					bodySent = cl.wdone
				}
			}
		}
		if d > 0 {
			if cl.timer == nil {
				if t, ok := mpxTimers.Get().(*time.Timer); ok {
					t.Reset(d)
					cl.timer = t
				} else {
					cl.timer = time.NewTimer(d)
				}
			} else {
				cl.timer.Reset(d)
			}
			timeout = cl.timer.C
		}
		var ev event
		if cl.havePeeked {
			ev, cl.peeked, cl.havePeeked = cl.peeked, event{}, false
			cl.gotRecord, cl.gotStdout, cl.cur = true, true, ev.buf
			return ev.typ, *ev.buf, nil
		}
		select {
		case ev = <-cl.events:
		case <-cl.gone:
			if err := cl.ctx.Err(); err != nil {
				return 0, nil, err
			}
			if cl.wdone != nil && isClosed(cl.wdone) && cl.werr != nil {
				return 0, nil, cl.werr
			}
			return 0, nil, http.ErrBodyReadAfterClose
		case <-cc.broken:
			select {
			case ev = <-cl.events:
			default:
				if err := cl.ctx.Err(); err != nil {
					return 0, nil, err
				}
				if cl.wdone != nil && isClosed(cl.wdone) && cl.werr != nil {
					return 0, nil, cl.werr
				}
				if cc.byClient || errors.Is(cc.brokenErr, ErrProtocol) {
					return 0, nil, cc.brokenErr
				}
				return 0, nil, fmt.Errorf("%w: %s: %w", ErrBackendClosed, cl.b.addr, cc.brokenErr)
			}
		case <-bodySent:
			continue
		case <-timeout:
			cl.abort()
			if !cl.gotStdout {
				return 0, nil, &TimeoutError{Op: "response header", Addr: cl.b.addr}
			}
			return 0, nil, &TimeoutError{Op: "read response", Addr: cl.b.addr}
		}
		if cl.stderrEvent(ev) {
			continue
		}
		cl.gotStdout = true
		cl.cur = ev.buf
		return ev.typ, *ev.buf, nil
	}
}

// stderrEvent takes ev as a record of the call's, and consumes it if it is
// STDERR: written to the Stderr writer, its buffer returned.
func (cl *call) stderrEvent(ev event) bool {
	cl.gotRecord = true
	if ev.typ != wire.TypeStderr {
		return false
	}
	if cl.stderr != nil && len(*ev.buf) > 0 {
		cl.stderr.Write(*ev.buf)
	}
	putEventBuf(ev.buf)
	return true
}

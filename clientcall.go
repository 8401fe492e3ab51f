package fcgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi/internal/cgihdr"
	"github.com/fcgikit/fcgi/internal/defaults"
	"github.com/fcgikit/fcgi/internal/wire"
)

// A call is one request on a connection, from acquire to the end of its
// response. It is the response Body.
type call struct {
	c      *Client
	b      *backend
	cc     *clientConn
	id     uint16
	reused bool // the connection served earlier requests

	ctx    context.Context
	stop   func() bool // stops the context.AfterFunc, nil without one
	stderr io.Writer

	// Owned by the goroutine reading the response.
	gotRecord  bool         // a record for this request arrived
	sent       time.Time    // when the request began to be written (reused, not multiplexed)
	unsent     bool         // writing the request failed before any byte of it left
	gotStdout  bool         // a STDOUT or END_REQUEST record arrived
	fresh      atomic.Int32 // freshPending, freshCounted (in stallWatch.waiting) or freshDone
	freshTimer *time.Timer  // counts the call as stalled after stallWatch.after
	hdrDL      time.Time    // when ResponseHeaderTimeout expires; zero until known
	rdl        time.Time    // the read deadline set on the socket, zero for none
	hs         cgihdr.Scanner
	header     http.Header         // where the response header goes, nil for a new one
	hints      http.ResponseWriter // where 103 Early Hints go (Gateway), or nil
	pending    []byte              // STDOUT not yet returned by Read
	ended      bool                // END_REQUEST arrived
	end        wire.EndRequest
	err        error // returned by Read once pending is empty
	finished   bool

	// body is the Body's state (bodyIdle...): Close may come from another
	// goroutine while a Read waits, as with net/http, and then leaves
	// ending the call to that Read.
	body atomic.Int32

	// Interim (1xx) header blocks read, and their bytes, which count
	// against the header limit; owned by the reader too.
	interims, interimBytes int

	// The body writer goroutine: wdone is closed when it returns, after
	// setting werr, or bodySent (when the last record went out) if it sent
	// everything.
	wdone    chan struct{}
	werr     error
	bodySent time.Time

	// Multiplexed connections.
	events chan event
	// peeked is an event buffered took off events, for nextMpx to return.
	peeked     event
	havePeeked bool
	cur        *[]byte // buffer of the last event returned
	gone       chan struct{}
	goneMu     sync.Once
	endSeen    atomic.Bool  // END_REQUEST read by the read loop
	abortSent  atomic.Bool  // FCGI_ABORT_REQUEST went out
	aborting   atomic.Bool  // counted in clientConn.aborting
	refs       atomic.Int32 // holders of the ID: read loop until END, writer
	timer      *time.Timer

	resp Response // returned by Do: one allocation for both

	trace  doTrace // for the Observer, when traced
	traced bool
}

// The states of a call's Body.
const (
	bodyIdle    int32 = iota // no Read under way
	bodyReading              // a Read is under way
	bodyClosing              // Close came during a Read, which ends the call
	bodyClosed               // closed: Reads fail
)

// closing reports whether Close came during the Read under way.
func (cl *call) closing() bool { return cl.body.Load() == bodyClosing }

// An event is a record routed to a call by a multiplexed read loop; buf holds
// a copy of its content.
type event struct {
	typ wire.Type
	buf *[]byte
}

func newCall(cc *clientConn) *call {
	return &call{c: cc.b.c, b: cc.b, cc: cc, id: 1}
}

// roundTrip writes the request and reads the response header.
func (cl *call) roundTrip(ctx context.Context, req *Request, body, data io.Reader) (*Response, error) {
	cl.ctx = ctx
	cl.stderr = req.Stderr
	cl.header = req.header
	cl.hints = req.hints
	if ctx.Done() != nil {
		cl.stop = context.AfterFunc(ctx, cl.cancel)
	}
	if cl.reused && !cl.cc.mpx {
		cl.sent = time.Now() // for stallWatch.sample
	}
	if !cl.reused && !cl.cc.mpx {
		cl.watchFresh()
	}
	if err := cl.writeRequest(req, body, data); err != nil {
		cl.finish(false)
		return nil, err
	}
	status, h, err := cl.readHeader()
	if err != nil {
		if cl.reused && !cl.gotRecord && !cl.cc.mpx && errors.Is(err, ErrBackendClosed) {
			cl.b.learnRecycling(cl.cc)
		}
		if !cl.reused && !cl.gotRecord && errors.Is(err, ErrBackendClosed) {
			cl.b.setAside(err)
		}
		if cl.ended && errors.Is(err, ErrCantMpxConn) && cl.cc.mpx {
			cl.b.stopMultiplexing()
		}
		cl.finish(cl.ended)
		return nil, err
	}
	cl.resp = Response{StatusCode: status, Header: h, Body: cl, call: cl}
	return &cl.resp, nil
}

// cancel runs on its own goroutine when ctx ends before the call does.
func (cl *call) cancel() {
	if cl.cc.mpx {
		cl.abort()
		return
	}
	// Wakes the reader and the body writer; the connection is not reused.
	cl.cc.nc.SetDeadline(time.Unix(1, 0))
}

// readErr maps an error reading the connection.
func (cl *call) readErr(err error) error {
	if cl.ctx.Err() != nil {
		return cl.ctx.Err()
	}
	if cl.wdone != nil {
		select {
		case <-cl.wdone:
			if cl.werr != nil {
				return cl.werr
			}
		default:
		}
	}
	if errors.Is(err, wire.ErrVersion) {
		return fmt.Errorf("%w: %s: %w", ErrProtocol, cl.b.addr, err)
	}
	if isTimeout(err) {
		if !cl.gotStdout {
			return &TimeoutError{Op: "response header", Addr: cl.b.addr}
		}
		return &TimeoutError{Op: "read response", Addr: cl.b.addr}
	}
	return fmt.Errorf("%w: %s: %w", ErrBackendClosed, cl.b.addr, err)
}

// next returns the next STDOUT or END_REQUEST record of the call; STDERR goes
// to the Stderr writer on the way. The content is valid until the next call.
func (cl *call) next() (wire.Type, []byte, error) {
	if cl.cc.mpx {
		return cl.nextMpx()
	}
	cc := cl.cc
	for {
		provisional := cl.armRead()
		rec, err := cc.rd.Next()
		if err != nil {
			if provisional && isTimeout(err) && cl.ctx.Err() == nil && !cl.closing() {
				continue // the body is still being sent: the wait has not begun
			}
			return 0, nil, cl.readErr(err)
		}
		if rec.RequestID != cl.id {
			if rec.RequestID == wire.NullRequestID {
				continue // an unsolicited management record
			}
			return 0, nil, fmt.Errorf("%w: %s: %v for a request ID not in use", ErrProtocol, cl.b.addr, rec.Header)
		}
		if !cl.gotRecord {
			cl.gotRecord = true
			cl.notWaiting()
			if cl.reused && cl.wdone == nil {
				// A kept connection has its worker: the wait is the script's
				// alone, never the accept queue's (nor an upload's: streamed
				// bodies are left out).
				cl.b.stalls.sample(time.Since(cl.sent))
			}
		}
		switch rec.Type {
		case wire.TypeStdout, wire.TypeEndRequest:
			cl.gotStdout = true
		}
		switch rec.Type {
		case wire.TypeStderr:
			if cl.stderr != nil && len(rec.Content) > 0 {
				cl.stderr.Write(rec.Content)
			}
		case wire.TypeStdout, wire.TypeEndRequest:
			return rec.Type, rec.Content, nil
		default:
			return 0, nil, fmt.Errorf("%w: %s: unexpected %v", ErrProtocol, cl.b.addr, rec.Header)
		}
	}
}

// readHeader reads STDOUT up to the end of the CGI header.
func (cl *call) readHeader() (int, http.Header, error) {
	limit := limitOrDefault(cl.c.MaxResponseHeaderBytes, defaults.ClientMaxResponseHeaderBytes)
	for {
		typ, content, err := cl.next()
		if err != nil {
			return 0, nil, err
		}
		if typ == wire.TypeEndRequest {
			if err := cl.setEnd(content); err != nil {
				return 0, nil, err
			}
			return 0, nil, fmt.Errorf("%w: %s: response ended inside the header", ErrMalformedResponse, cl.b.addr)
		}
		if len(content) == 0 {
			// STDOUT ended; only END_REQUEST may follow.
			continue
		}
		hdr, rest, done, err := cl.hs.Feed(content, limit-cl.interimBytes)
		for done && err == nil {
			if !cgihdr.IsInterim(hdr) {
				break
			}
			// An interim block (103 Early Hints): delivered, then the next
			// block is looked for in what followed it.
			if err := cl.interim(hdr); err != nil {
				return 0, nil, err
			}
			hdr, rest, done, err = cl.hs.Next(rest, limit-cl.interimBytes)
		}
		if err != nil {
			return 0, nil, headerError(err)
		}
		if done {
			status, h, err := cgihdr.Parse(hdr, cl.header)
			if err != nil {
				return 0, nil, headerError(err)
			}
			cl.pending = rest
			return status, h, nil
		}
	}
}

// setEnd records END_REQUEST and reports a refusal as an error.
func (cl *call) setEnd(content []byte) error {
	end, err := wire.ParseEndRequest(content)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrProtocol, cl.b.addr, err)
	}
	cl.ended, cl.end = true, end
	if end.ProtocolStatus != wire.StatusRequestComplete {
		return &ProtocolStatusError{Addr: cl.b.addr, Status: uint8(end.ProtocolStatus)}
	}
	return nil
}

// headerDeadline returns when the response header timeout d expires, counted
// from when the request has been sent: from the first wait for the response
// when the body went out with the header, else from when the body writer sent
// the last record. Until then final is false, and dl is a provisional
// deadline, d from now, for the caller to look again.
func (cl *call) headerDeadline(d time.Duration) (dl time.Time, final bool) {
	if !cl.hdrDL.IsZero() {
		return cl.hdrDL, true
	}
	start := time.Now()
	if cl.wdone != nil {
		select {
		case <-cl.wdone:
			if !cl.bodySent.IsZero() {
				start = cl.bodySent
			}
		default:
			return start.Add(d), false
		}
	}
	cl.hdrDL = start.Add(d)
	return cl.hdrDL, true
}

// anyRecord is a Reader.Ready test true of any record.
func anyRecord(wire.Header) bool { return true }

// armRead sets the socket's read deadline for the next record of a
// one-request connection: the response header's, or ReadTimeout once the
// response has begun. A record already buffered needs none. It reports
// whether the deadline is provisional (see headerDeadline).
func (cl *call) armRead() (provisional bool) {
	cc, c := cl.cc, cl.c
	if cc.rd.Ready(anyRecord) {
		return false
	}
	var dl time.Time
	if !cl.gotStdout {
		if d := c.responseHeaderTimeout(); d > 0 {
			var final bool
			dl, final = cl.headerDeadline(d)
			provisional = !final
		}
	} else if d := c.readTimeout(); d > 0 {
		dl = time.Now().Add(d)
	}
	if dl.Equal(cl.rdl) {
		return provisional
	}
	cc.nc.SetReadDeadline(dl)
	cl.rdl = dl
	if cl.stop != nil && cl.ctx.Err() != nil || cl.closing() {
		// cancel's or Close's deadline may have just been replaced.
		cc.nc.SetReadDeadline(time.Unix(1, 0))
	}
	return provisional
}

func (cl *call) appStatus() (uint32, bool) { return cl.end.AppStatus, cl.ended }

// Read reads the response body: STDOUT after the CGI header.
func (cl *call) Read(p []byte) (int, error) {
	if !cl.body.CompareAndSwap(bodyIdle, bodyReading) {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := cl.read(p)
	if !cl.body.CompareAndSwap(bodyReading, bodyIdle) {
		// bodyClosing: Close came meanwhile.
		cl.body.Store(bodyClosed)
		cl.abandon()
		return 0, http.ErrBodyReadAfterClose
	}
	return n, err
}

func (cl *call) read(p []byte) (int, error) {
	for len(cl.pending) == 0 {
		if cl.err != nil {
			return 0, cl.err
		}
		typ, content, err := cl.next()
		if err == nil && typ == wire.TypeEndRequest {
			if err = cl.setEnd(content); err == nil {
				err = io.EOF
			}
			cl.err = err
			cl.finish(cl.ended)
			return 0, err
		}
		if err != nil {
			cl.err = err
			if !cl.closing() { // else the caller gave up: no failure of the backend's
				cl.b.stats.count(outcomeOf(cl.ctx, err))
			}
			cl.finish(false)
			return 0, err
		}
		cl.pending = content
	}
	n := copy(p, cl.pending)
	cl.pending = cl.pending[n:]
	return n, nil
}

// buffered reports whether the next Read would return without waiting for the
// backend: body bytes are in hand, or a record that ends the wait (body or
// END_REQUEST) has arrived whole, after any STDERR. The Gateway flushes only
// when it would not, sending a small response in one write while a stream
// still reaches the client as it comes.
func (cl *call) buffered() bool {
	if len(cl.pending) > 0 || cl.err != nil {
		return true
	}
	if !cl.cc.mpx {
		return cl.cc.rd.Ready(func(h wire.Header) bool {
			switch {
			case h.RequestID == wire.NullRequestID, h.Type == wire.TypeStderr:
				return false
			case h.Type == wire.TypeStdout && h.ContentLength == 0:
				return false
			}
			return true
		})
	}
	for !cl.havePeeked {
		select {
		case ev := <-cl.events:
			if cl.stderrEvent(ev) {
				continue
			}
			if ev.typ == wire.TypeStdout && len(*ev.buf) == 0 {
				putEventBuf(ev.buf) // the end of STDOUT: END_REQUEST follows
				continue
			}
			cl.peeked, cl.havePeeked = ev, true
		default:
			return false
		}
	}
	return true
}

// Close ends the response. Before io.EOF it abandons the request. During a
// Read on another goroutine it wakes that Read, which then abandons the
// request and returns [http.ErrBodyReadAfterClose].
func (cl *call) Close() error {
	for {
		switch cl.body.Load() {
		case bodyIdle:
			if cl.body.CompareAndSwap(bodyIdle, bodyClosed) {
				cl.abandon()
				return nil
			}
		case bodyReading:
			if cl.body.CompareAndSwap(bodyReading, bodyClosing) {
				if cl.cc.mpx {
					cl.abort()
				} else {
					cl.cc.nc.SetReadDeadline(time.Unix(1, 0))
				}
				return nil
			}
		default:
			return nil
		}
	}
}

// abandon ends a call whose body is closed, unless it has ended already.
func (cl *call) abandon() {
	if !cl.finished {
		cl.err = http.ErrBodyReadAfterClose
		cl.pending = nil
		cl.finish(false)
	}
}

// finish ends the call once: the connection goes back to the pool when reuse
// is true and nothing forbids it, and is closed otherwise.
func (cl *call) finish(reuse bool) {
	if cl.finished {
		return
	}
	cl.finished = true
	cl.notWaiting()
	if cl.traced {
		cl.observeEnd()
	}
	defer cl.b.inflight.Add(-1)
	if cl.stop != nil && !cl.stop() {
		reuse = false // the context ended: deadlines are spoiled, or an abort was sent
	}
	cc := cl.cc
	if cc.mpx {
		if cl.cur != nil {
			putEventBuf(cl.cur)
			cl.cur = nil
		}
		if cl.havePeeked {
			putEventBuf(cl.peeked.buf)
			cl.peeked, cl.havePeeked = event{}, false
		}
		if cl.timer != nil {
			cl.timer.Stop() // nothing stale can be read from it after Stop
			mpxTimers.Put(cl.timer)
			cl.timer = nil
		}
		if !cl.ended {
			cl.abort()
		}
		return
	}
	if reuse && cl.wdone != nil {
		select {
		case <-cl.wdone:
		default:
			// The response ended while the body was still being sent; give
			// the writer a moment to finish its last record.
			t := time.NewTimer(50 * time.Millisecond)
			select {
			case <-cl.wdone:
			case <-t.C:
				reuse = false
			}
			t.Stop()
		}
		if reuse && cl.werr != nil {
			reuse = false
		}
	}
	cl.pending = nil
	if reuse && cl.c.maxIdle() > 0 && cc.rd.Buffered() == 0 {
		if !cl.rdl.IsZero() {
			cc.nc.SetReadDeadline(time.Time{})
		}
		cl.b.putIdle(cc)
		return
	}
	cc.closeConn()
	cl.b.connGone()
}

// The CGI response header (RFC 3875 §6) is parsed by internal/cgihdr, which
// the fcgi command uses too; its rules are in that package's comment.
// headerError gives an error of cgihdr the package's sentinel.
func headerError(err error) error {
	if errors.Is(err, cgihdr.ErrTooLarge) {
		return ErrResponseHeaderTooLarge
	}
	if he := (*cgihdr.Error)(nil); errors.As(err, &he) {
		return fmt.Errorf("%w: %s", ErrMalformedResponse, he.Detail)
	}
	return err
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

package fcgi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi/internal/cgihdr"
	"github.com/fcgikit/fcgi/internal/wire"
)

// A clientConn is one connection to a backend. Without multiplexing it
// carries one request at a time, with request ID 1, and the goroutine
// reading the response reads the socket itself. With multiplexing a read
// loop goroutine routes records to requests by ID.
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
	// connection takes no new request, and is closed once the requests
	// still running on it have ended (see call.graceOver).
	retired atomic.Bool
	// aborting counts the requests aborted and not yet ended by the
	// application. While it is not zero the connection takes no new
	// request: an application that does not answer an abort may be
	// stuck whole, and a request given to it would wait for nothing.
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

// aliveForReuse checks that an idle connection was not closed by the
// backend and holds no stray bytes.
func (cc *clientConn) aliveForReuse() bool {
	if cc.rd.Buffered() != 0 {
		return false
	}
	if cc.alive == nil {
		cc.alive = newAliveChecker(cc.nc)
	}
	return cc.alive.check()
}

// setWriteDeadline arms WriteTimeout for the next write, or clears a
// deadline left by an earlier write. Callers hold wmu.
func (cc *clientConn) setWriteDeadline(d time.Duration) {
	if d > 0 {
		cc.nc.SetWriteDeadline(time.Now().Add(d))
		cc.wdeadline = true
	} else if cc.wdeadline {
		cc.nc.SetWriteDeadline(time.Time{})
		cc.wdeadline = false
	}
}

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
	fresh      atomic.Int32 // freshPending, freshCounted (in backend.freshWaiting) or freshDone
	freshTimer *time.Timer  // counts the call as stalled after freshStall
	hdrDL      time.Time    // when ResponseHeaderTimeout expires; zero until known
	rdl        time.Time    // the read deadline set on the socket, zero for none
	hs         cgihdr.Scanner
	header     http.Header // where the response header goes, nil for a new one
	pending    []byte      // STDOUT not yet returned by Read
	ended      bool        // END_REQUEST arrived
	end        wire.EndRequest
	err        error // returned by Read once pending is empty
	finished   bool

	// The body writer goroutine: wdone is closed when it returns, after
	// setting werr, or bodySent (when the last record went out) if it
	// sent everything.
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
}

// An event is a record routed to a call by a multiplexed read loop; buf
// holds a copy of its content.
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
	if ctx.Done() != nil {
		cl.stop = context.AfterFunc(ctx, cl.cancel)
	}
	if cl.reused && !cl.cc.mpx {
		cl.sent = time.Now() // for sampleFirstRecord
	}
	if !cl.reused && !cl.cc.mpx {
		// Counted only once it has waited well past the backend's usual
		// time to first output: a healthy backend answers a new
		// connection as fast as a kept one, and counting those would
		// close kept connections under ordinary load.
		b := cl.b
		cl.freshTimer = time.AfterFunc(b.freshStall(), func() {
			if cl.fresh.CompareAndSwap(freshPending, freshCounted) {
				b.freshWaiting.Add(1)
				if b.c.MaxConnsPerBackend <= 0 {
					b.freeWorkers()
				}
			}
		})
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

var paramBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeRequest sends BEGIN_REQUEST and PARAMS, and the body: inline when
// there is none, else from a goroutine, so that the response can be read
// while the body is still being sent.
func (cl *call) writeRequest(req *Request, body, data io.Reader) error {
	cc := cl.cc
	role := wire.Role(req.Role)
	if role == 0 {
		role = wire.RoleResponder
	}
	var flags uint8
	if cc.mpx || cl.c.maxIdle() > 0 {
		flags = wire.FlagKeepConn
	}
	if body == http.NoBody {
		body = nil
	}
	bp := paramBufs.Get().(*[]byte)
	pk := pairPacker{buf: (*bp)[:0]}
	for k, v := range req.Params {
		pk.add(k, v, false)
	}
	for _, p := range req.env {
		pk.add(p.name, p.value, p.header)
	}
	if pk.err != nil {
		*bp = pk.buf[:0]
		paramBufs.Put(bp)
		cl.unsentMpx()
		return pk.err
	}
	buf, cuts, paramsEnd := pk.buf, pk.cuts, len(pk.buf)
	// A small in-memory body goes out with the header in one write, with
	// no goroutine: the socket buffer holds it even if the backend answers
	// before reading it.
	var small []byte
	if data == nil {
		if n, ok := smallBodyLen(body); ok {
			start := len(buf)
			buf = append(buf, make([]byte, n)...)
			if _, err := io.ReadFull(body, buf[start:]); err != nil {
				*bp = buf[:0]
				paramBufs.Put(bp)
				cl.unsentMpx()
				return fmt.Errorf("fcgi: reading request body: %w", err)
			}
			small, body = buf[start:], nil
		}
	}

	cc.wmu.Lock()
	cc.setWriteDeadline(cl.c.writeTimeout())
	wr := cc.wr
	before := wr.Written()
	err := wr.WriteBeginRequest(cl.id, role, flags)
	prev := 0
	for _, cut := range cuts {
		if err == nil {
			err = wr.WriteStream(wire.TypeParams, cl.id, buf[prev:cut])
		}
		prev = cut
	}
	if err == nil {
		err = wr.WriteStream(wire.TypeParams, cl.id, buf[prev:paramsEnd])
	}
	if err == nil {
		err = wr.WriteRecord(wire.TypeParams, cl.id, nil)
	}
	inline := body == nil && data == nil
	if inline && err == nil {
		err = wr.WriteStream(wire.TypeStdin, cl.id, small)
	}
	if inline && err == nil {
		err = wr.WriteRecord(wire.TypeStdin, cl.id, nil)
		if err == nil && role == wire.RoleFilter {
			err = wr.WriteRecord(wire.TypeData, cl.id, nil)
		}
	}
	if err == nil {
		err = wr.Flush()
	} else {
		wr.Reset(cc.nc)
	}
	sentNothing := wr.Written() == before
	cc.wmu.Unlock()
	if cap(buf) <= 64<<10 {
		*bp = buf[:0]
		paramBufs.Put(bp)
	}
	if err != nil {
		// Only if not a byte left: a backend may start a request as
		// soon as its PARAMS end, and a larger request leaves in
		// several writes.
		cl.unsent = sentNothing
		werr := cl.writeErr(err)
		if cc.mpx {
			cc.failWrite(err)
		}
		return werr
	}
	if !inline {
		cl.wdone = make(chan struct{})
		if cc.mpx {
			cl.refs.Add(1)
		}
		// Owned by the call; ends when the body (and data) are sent, or
		// at the first read or write error.
		go cl.writeBody(body, data, role == wire.RoleFilter)
	}
	return nil
}

// unsentMpx frees the request ID of a multiplexed call whose request was
// never written: no record of the backend's can come for it, and an abort
// would hold the ID for an END_REQUEST that never comes.
func (cl *call) unsentMpx() {
	if cl.cc.mpx {
		cl.endSeen.Store(true)
		cl.releaseRef()
	}
}

// maxInlineBody is the largest body sent with the request header.
const maxInlineBody = 16 << 10

// A pairPacker encodes PARAMS pairs into runs that each fit one record,
// never splitting a pair across two: PHP-FPM parses each PARAMS record on
// its own.
type pairPacker struct {
	buf   []byte
	cuts  []int // where each full run ends in buf; nil for the usual one run
	start int   // where the current run starts
	err   error
}

// add appends a pair; with header set, name is an HTTP field name sent as
// its CGI variable (HTTP_USER_AGENT for User-Agent).
func (pk *pairPacker) add(name, value string, header bool) {
	nameLen := len(name)
	if header {
		nameLen += len(cgiHeaderPrefix)
	}
	if nameLen > wire.MaxPairPart || len(value) > wire.MaxPairPart {
		if pk.err == nil {
			pk.err = fmt.Errorf("fcgi: parameter %q too long", clip(name))
		}
		return
	}
	if len(pk.buf) > pk.start && len(pk.buf)-pk.start+wire.PairSize(nameLen, len(value)) > wire.MaxContent {
		pk.cuts = append(pk.cuts, len(pk.buf))
		pk.start = len(pk.buf)
	}
	pk.buf = wire.AppendPairLens(pk.buf, nameLen, len(value))
	if header {
		pk.buf = appendCGIHeaderName(pk.buf, name)
	} else {
		pk.buf = append(pk.buf, name...)
	}
	pk.buf = append(pk.buf, value...)
}

// smallBodyLen reports the length of a body held in memory by one of the
// standard readers, when it is small enough to send inline.
func smallBodyLen(r io.Reader) (int, bool) {
	var n int
	switch b := r.(type) {
	case *bytes.Reader:
		n = b.Len()
	case *strings.Reader:
		n = b.Len()
	case *bytes.Buffer:
		n = b.Len()
	default:
		return 0, false
	}
	return n, n <= maxInlineBody
}

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeBody streams body as STDIN and data as DATA.
func (cl *call) writeBody(body, data io.Reader, filter bool) {
	cc := cl.cc
	bp := bodyBufs.Get().(*[]byte)
	err := cl.writeStream(wire.TypeStdin, body, *bp)
	if err == nil && (data != nil || filter) {
		err = cl.writeStream(wire.TypeData, data, *bp)
	}
	bodyBufs.Put(bp)
	failed := err != nil && err != errCallOver
	if failed {
		cl.werr = err
	} else if err == nil {
		cl.bodySent = time.Now()
	}
	close(cl.wdone)
	if failed {
		if cc.mpx {
			cl.abort()
		} else {
			// Wake the reader: the backend may be waiting for the rest of
			// the body forever.
			cc.nc.Close()
		}
	}
	if cc.mpx {
		cl.releaseRef()
	}
}

// errCallOver stops a body writer whose request has already ended.
var errCallOver = errors.New("fcgi: request over")

func (cl *call) writeStream(t wire.Type, r io.Reader, buf []byte) error {
	for r != nil {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := cl.writeLocked(func(wr *wire.Writer) error {
				return wr.WriteStream(t, cl.id, buf[:n])
			}); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("fcgi: reading request body: %w", rerr)
		}
	}
	return cl.writeLocked(func(wr *wire.Writer) error { return wr.WriteRecord(t, cl.id, nil) })
}

// writeLocked runs fn and flushes, holding the connection's write lock.
func (cl *call) writeLocked(fn func(*wire.Writer) error) error {
	cc := cl.cc
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.mpx && (cl.endSeen.Load() || isClosed(cl.gone)) {
		return errCallOver
	}
	if !cc.mpx && cl.stop != nil && cl.ctx.Err() != nil {
		return cl.ctx.Err() // cancel's deadline is not to be replaced
	}
	cc.setWriteDeadline(cl.c.writeTimeout())
	err := fn(cc.wr)
	if err == nil {
		err = cc.wr.Flush()
	} else {
		cc.wr.Reset(cc.nc)
	}
	if err != nil {
		werr := cl.writeErr(err)
		if cc.mpx {
			cc.failWrite(err)
		}
		return werr
	}
	return nil
}

// writeErr maps a write error.
func (cl *call) writeErr(err error) error {
	if cl.ctx.Err() != nil {
		return cl.ctx.Err()
	}
	if cc := cl.cc; cc.mpx && isClosed(cc.broken) && cc.byClient {
		return cc.brokenErr // the write failed because the client closed the connection
	}
	if isTimeout(err) {
		return &TimeoutError{Op: "write request", Addr: cl.b.addr}
	}
	return fmt.Errorf("%w: %s: writing request: %w", ErrBackendClosed, cl.b.addr, err)
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

// next returns the next STDOUT or END_REQUEST record of the call; STDERR
// goes to the Stderr writer on the way. The content is valid until the
// next call.
func (cl *call) next() (wire.Type, []byte, error) {
	if cl.cc.mpx {
		return cl.nextMpx()
	}
	cc := cl.cc
	for {
		provisional := cl.armRead()
		rec, err := cc.rd.Next()
		if err != nil {
			if provisional && isTimeout(err) && cl.ctx.Err() == nil {
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
				// A kept connection has its worker: the wait is the
				// script's alone, never the accept queue's (nor an
				// upload's: streamed bodies are left out).
				cl.b.sampleFirstRecord(time.Since(cl.sent))
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
	limit := limitOrDefault(cl.c.MaxResponseHeaderBytes, DefaultClientMaxResponseHeaderBytes)
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
		hdr, rest, done, err := cl.hs.Feed(content, limit)
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

// States of call.fresh.
const (
	freshPending = iota
	freshCounted
	freshDone
)

// A request on a new connection counts as stalled behind the backend's
// accept queue (see backend.freshWaiting) once it has waited for its first
// record four times the backend's usual wait (scripts that think before
// they print are no stall), within these bounds.
const (
	minFreshStall = 250 * time.Millisecond
	maxFreshStall = 2 * time.Second
)

// notWaiting ends the call's count in backend.freshWaiting.
func (cl *call) notWaiting() {
	if cl.freshTimer == nil {
		return
	}
	cl.freshTimer.Stop()
	if cl.fresh.Swap(freshDone) == freshCounted {
		cl.b.freshWaiting.Add(-1)
	}
}

// headerDeadline returns when the response header timeout d expires,
// counted from when the request has been sent: from the first wait for the
// response when the body went out with the header, else from when the body
// writer sent the last record. Until then final is false, and dl is a
// provisional deadline, d from now, for the caller to look again.
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
	if cl.stop != nil && cl.ctx.Err() != nil {
		// cancel's deadline may have just been replaced.
		cc.nc.SetReadDeadline(time.Unix(1, 0))
	}
	return provisional
}

func (cl *call) appStatus() (uint32, bool) { return cl.end.AppStatus, cl.ended }

// Read reads the response body: STDOUT after the CGI header.
func (cl *call) Read(p []byte) (int, error) {
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
			cl.finish(false)
			return 0, err
		}
		cl.pending = content
	}
	n := copy(p, cl.pending)
	cl.pending = cl.pending[n:]
	return n, nil
}

// buffered reports whether the next Read would return without waiting for
// the backend: body bytes are in hand, or a record that ends the wait (body
// or END_REQUEST) has arrived whole, after any STDERR. The Gateway flushes
// only when it would not, sending a small response in one write while a
// stream still reaches the client as it comes.
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

// Close ends the response. Before io.EOF it abandons the request.
func (cl *call) Close() error {
	if !cl.finished {
		cl.err = http.ErrBodyReadAfterClose
		cl.pending = nil
		cl.finish(false)
	}
	return nil
}

// finish ends the call once: the connection goes back to the pool when
// reuse is true and nothing forbids it, and is closed otherwise.
func (cl *call) finish(reuse bool) {
	if cl.finished {
		return
	}
	cl.finished = true
	cl.notWaiting()
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
			// The response ended while the body was still being sent;
			// give the writer a moment to finish its last record.
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

// Multiplexed connections.

// startMpx makes cc a multiplexed connection and starts its read loop.
func (cc *clientConn) startMpx(maxReqs int) {
	cc.mpx = true
	cc.maxReqs = maxReqs
	cc.calls = make([]*call, maxReqs)
	cc.broken = make(chan struct{})
	// Owned by the connection; ends when the connection fails or is
	// closed (by the idle timer, Client.Close, or fail).
	go cc.readLoop()
}

// newMpxCall takes the lowest free request ID; the caller has already
// counted the request in active. It returns nil if cc broke or was
// retired.
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

// releaseRef drops one hold on the call's request ID and frees the ID
// when none is left.
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

// failWrite ends a multiplexed connection after a failed write: a record
// may be cut short, so the stream is lost. A timeout, or a socket the
// client already closed, is the client's doing; anything else the
// backend's.
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

// closeIfDrained closes a retired connection once no request on it is
// still running: the only ones left, if any, were aborted and their
// callers are gone. It runs whenever a request stops running on a retired
// connection.
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

// abort abandons a multiplexed request: it sends FCGI_ABORT_REQUEST, and
// from then on drops the request's records. Its ID stays taken until its
// END_REQUEST arrives, or the connection ends, since the backend may still
// send records with it. See graceOver for an application slow to answer.
// It never waits for the connection's write lock: another request's record
// may be stuck on a backend that stopped reading, and graceOver frees it.
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
// read (by the read loop, or by abort if it came meanwhile; once either
// way): the connection takes new requests again when none is left.
func (cl *call) abortAnswered() {
	if cl.aborting.CompareAndSwap(true, false) {
		cl.cc.aborting.Add(-1)
	}
}

// graceOver runs on its own goroutine a grace period after abort. An
// application that has not ended the request yet costs that request only:
// the connection is retired, serving the requests on it to their end but
// no new one. If the abort is still waiting to be written, a write of
// another request's is stuck on a backend that stopped reading, and the
// connection is closed, which frees that writer.
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

// mpxTimers recycles the timers of multiplexed calls' waits: every call
// needs one, since its waits have timeouts by default.
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

// isClosed reports whether ch is closed; a nil ch is not.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// GetValues asks the backend at addr for the values of the named
// variables with FCGI_GET_VALUES (§4.1), on a connection of its own that is
// closed afterwards, and returns those the backend reported. With no names
// it asks for FCGI_MAX_CONNS, FCGI_MAX_REQS and FCGI_MPXS_CONNS. The
// exchange is bounded by ctx and by ProbeTimeout; a backend that does not
// answer in time gives a [*TimeoutError], one that answers UNKNOWN_TYPE an
// error wrapping [ErrProtocol].
func (c *Client) GetValues(ctx context.Context, addr string, names ...string) (map[string]string, error) {
	if len(names) == 0 {
		names = []string{wire.ValueMaxConns, wire.ValueMaxReqs, wire.ValueMpxsConns}
	}
	if d := c.probeTimeout(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	nc, err := c.dial(ctx, addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, &TimeoutError{Op: "get values", Addr: addr}
		}
		return nil, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var content []byte
	for _, n := range names {
		content = wire.AppendPair(content, n, "")
	}
	wr := wire.NewWriter(nc)
	if err = wr.WriteStream(wire.TypeGetValues, wire.NullRequestID, content); err == nil {
		err = wr.Flush()
	}
	rd := wire.NewReader(nc)
	defer rd.Release()
	for err == nil {
		var rec wire.Record
		rec, err = rd.Next()
		if err != nil {
			break
		}
		if rec.RequestID != wire.NullRequestID {
			continue
		}
		if rec.Type == wire.TypeUnknownType {
			if t, _ := wire.ParseUnknownType(rec.Content); t == wire.TypeGetValues {
				return nil, fmt.Errorf("%w: %s does not understand FCGI_GET_VALUES (UNKNOWN_TYPE)", ErrProtocol, addr)
			}
		}
		if rec.Type != wire.TypeGetValuesResult {
			continue
		}
		vals := make(map[string]string)
		if err := wire.ForEachPair(rec.Content, func(n, v []byte) bool {
			vals[string(n)] = string(v)
			return true
		}); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrProtocol, addr, err)
		}
		return vals, nil
	}
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &TimeoutError{Op: "get values", Addr: addr}
		}
		return nil, ctx.Err()
	}
	if errors.Is(err, wire.ErrVersion) {
		return nil, fmt.Errorf("%w: %s: %w", ErrProtocol, addr, err)
	}
	return nil, fmt.Errorf("%w: %s: %v", ErrBackendClosed, addr, err)
}

package fcgi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

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
	// A small in-memory body goes out with the header in one write, with no
	// goroutine: the socket buffer holds it even if the backend answers
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

	inline := body == nil && data == nil
	if !inline && cc.mpx {
		// The body writer's hold on the ID, taken before the backend can
		// see the request: an answer to its BEGIN_REQUEST alone (an
		// FCGI_OVERLOADED at once) must not free the ID, and count the
		// request out of the connection, before the writer holds it.
		cl.refs.Add(1)
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
		// Only if not a byte left: a backend may start a request as soon as
		// its PARAMS end, and a larger request leaves in several writes.
		cl.unsent = sentNothing
		werr := cl.writeErr(err)
		if cc.mpx {
			cc.failWrite(err)
			if !inline {
				cl.releaseRef() // no writer takes the hold
			}
		}
		return werr
	}
	if !inline {
		cl.wdone = make(chan struct{})
		// Owned by the call; ends when the body (and data) are sent, or at
		// the first read or write error.
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

// A pairPacker encodes PARAMS pairs into runs that each fit one record, never
// splitting a pair across two: PHP-FPM parses each PARAMS record on its own.
type pairPacker struct {
	buf   []byte
	cuts  []int // where each full run ends in buf; nil for the usual one run
	start int   // where the current run starts
	err   error
}

// add appends a pair; with header set, name is an HTTP field name sent as its
// CGI variable (HTTP_USER_AGENT for User-Agent).
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
			// Wake the reader: the backend may be waiting for the rest of the
			// body forever.
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

package fcgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// conn is one accepted connection from a web server. Its serve goroutine
// reads records and dispatches them; each request's handler runs on its own
// goroutine and writes through the shared, mutex-guarded Writer.
type conn struct {
	// Immutable after newConn.
	srv *Server
	rwc net.Conn

	// Owned by the serve goroutine.
	rd      wire.Reader
	drained int64 // bytes read while closing
	// The stages of a closing connection (see nextStage), each ending at
	// stageEnd; drainMax is set by startDrain.
	stage    closeStage
	stageEnd time.Time
	drainMax int64
	// multiplexed is set once two requests were in flight at once, or one
	// used an ID other than 1: the web server multiplexes (HAProxy). Set by
	// begin.
	multiplexed bool

	// wmu guards wr, werr and every write to rwc.
	wmu  sync.Mutex
	wr   wire.Writer
	werr error
	// writeDeadline is rwc's write deadline. It is moved only when less than
	// half of WriteTimeout is left, not on every write; exact says a
	// request's own deadline set it, so the next write sets its own.
	writeDeadline time.Time
	exact         bool
	// unflushed is set, under wmu, when answers of the serve goroutine's wait
	// in wr (see answer); the serve goroutine reads it without the lock.
	unflushed atomic.Bool

	// mu guards the fields below. Lock order: wmu, then mu.
	mu      sync.Mutex
	reqs    map[uint16]*request // active request IDs (§3.3)
	closing bool                // serve no new requests; close when reqs is empty
	closed  bool
	cancel  context.CancelCauseFunc
	// readDeadline is rwc's read deadline. It is moved only when it must come
	// earlier, not on every request; when it passes, expire looks at what is
	// really due and sets the next one. idleSince is when the connection last
	// became idle, zero while requests are in flight.
	readDeadline time.Time
	idleSince    time.Time
	// lastReq is the request that left the connection idle, for startDrain:
	// the web server may still be sending its input.
	lastReq *request
	// draining is set once the connection is to be closed: the serve
	// goroutine reads on, under a deadline and up to drainMax bytes, and then
	// closes.
	draining atomic.Bool
}

func newConn(s *Server, rwc net.Conn) *conn {
	c := &conn{srv: s, rwc: rwc, reqs: make(map[uint16]*request)}
	c.rd.Reset(rwc)
	c.wr.Reset(rwc)
	return c
}

// serve runs on the connection's own goroutine, started by Server.Serve; it
// returns when the connection is closed.
func (c *conn) serve(ctx context.Context) {
	ctx, cancel := context.WithCancelCause(ctx)
	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()
	cause := ErrConnClosed
	defer func() {
		c.flushAnswers()
		c.close(cause)
		c.dropUnstarted()
		c.rd.Release()
		c.srv.trackConn(c, false)
		c.srv.setState(c.rwc, StateClosed)
	}()
	c.mu.Lock()
	c.armIdleLocked()
	c.mu.Unlock()
	for {
		if c.unflushed.Load() && !c.rd.Ready(anyRecord) {
			c.flushAnswers()
		}
		rec, err := c.rd.Next()
		draining := c.draining.Load()
		if err != nil {
			timeout := isTimeout(err)
			switch {
			case timeout && draining && time.Now().Before(c.stageEnd):
				// A wake-up (finish's) before the stage's end.
				c.setReadDeadline(c.stageEnd)
				continue
			case timeout && draining && c.nextStage():
				continue
			case timeout && !draining:
				if c.expire() {
					continue
				}
				// IdleTimeout: the web server kept the connection and sent
				// nothing more, which is no fault of its own.
				c.srv.logger().Debug("fcgi: idle connection closed", "remote", c.remoteAddr())
				return
			}
			if !draining && !isClosedConnError(err) {
				c.srv.stats.protocolErrors.Add(1)
				c.logProtocolError(err)
			}
			return
		}
		if draining {
			if c.stage == stageOpen {
				c.nextStage()
			}
			if c.stage == stageGrace {
				// A web server that multiplexes may have sent requests before
				// our last END_REQUEST reached it: each is told it did not
				// run (it is resent, where a close would lose a POST).
				if rec.Type == wire.TypeBeginRequest && rec.RequestID != wire.NullRequestID {
					c.refuseBegin(rec.RequestID, wire.StatusOverloaded)
				}
				continue
			}
			// Only what the web server sent before it saw our FIN: discard
			// it, within bounds.
			if c.drained += int64(wire.HeaderLen + len(rec.Content)); c.drained > c.drainMax {
				return
			}
			continue
		}
		if err := c.dispatch(ctx, rec); err != nil {
			c.srv.stats.protocolErrors.Add(1)
			c.logProtocolError(err)
			return
		}
	}
}

// armIdleLocked starts the idle period of a connection with no request in
// flight. c.mu must be held: read deadlines are set under it, so that the
// serve goroutine and a finishing handler cannot overwrite each other's with
// stale state.
func (c *conn) armIdleLocked() {
	if c.closing {
		return
	}
	c.idleSince = time.Now()
	if t := c.srv.idleTimeout(); t > 0 {
		c.lowerReadDeadlineLocked(c.idleSince.Add(t))
	}
}

// lowerReadDeadlineLocked makes sure the read deadline comes no later than d.
// A deadline that is earlier already stays: it costs a spurious wake-up at
// worst, where moving it would cost a timer update per request.
func (c *conn) lowerReadDeadlineLocked(d time.Time) {
	if c.readDeadline.IsZero() || d.Before(c.readDeadline) {
		c.readDeadline = d
		c.rwc.SetReadDeadline(d)
	}
}

// isClosedConnError reports the ways a web server ends a connection that are
// not protocol errors: a close, or a reset (HAProxy resets a backend
// connection when its client aborts).
func isClosedConnError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

func (c *conn) logProtocolError(err error) {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		c.srv.logger().Debug("fcgi: connection closed inside a record", "remote", c.remoteAddr())
		return
	}
	c.srv.logger().Warn("fcgi: closing connection", "remote", c.remoteAddr(), "err", err)
}

func (c *conn) remoteAddr() string {
	// A unix socket's peer has no name: its address prints as "" or "@".
	if a := c.rwc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return "unix"
}

// dispatch handles one record. An error ends the connection.
func (c *conn) dispatch(ctx context.Context, rec wire.Record) error {
	if rec.RequestID == wire.NullRequestID {
		return c.management(rec)
	}
	if rec.Type == wire.TypeBeginRequest {
		return c.begin(ctx, rec)
	}
	// Records for an inactive ID are ignored (§3.3), and so are types an
	// application never receives (STDOUT, END_REQUEST...) or does not know.
	req := c.lookup(rec.RequestID)
	if req == nil {
		return nil
	}
	switch rec.Type {
	case wire.TypeParams:
		c.params(req, rec.Content)
	case wire.TypeStdin:
		c.stdin(req, rec.Content)
	case wire.TypeAbortRequest:
		c.abort(req)
	case wire.TypeData:
		c.data(req, rec.Content)
	}
	return nil
}

func (c *conn) lookup(id uint16) *request {
	c.mu.Lock()
	req := c.reqs[id]
	c.mu.Unlock()
	return req
}

// management answers records with request ID 0 (§4).
func (c *conn) management(rec wire.Record) error {
	switch rec.Type {
	case wire.TypeGetValues:
		return c.getValues(rec.Content)
	case wire.TypeGetValuesResult, wire.TypeUnknownType:
		// Answers, not questions: answering them could loop between two
		// confused peers.
		return nil
	}
	// Any other type with ID 0, BEGIN_REQUEST included, is a management
	// record this application does not understand (§4.2).
	return c.answer(func(w *wire.Writer) error { return w.WriteUnknownType(rec.Type) })
}

// getValues answers GET_VALUES with one GET_VALUES_RESULT holding the
// variables asked for that this server knows (§4.1).
func (c *conn) getValues(content []byte) error {
	// Each name is answered once, however often it is asked.
	var maxConns, maxReqs, mpxsConns bool
	// A malformed query is answered as far as it could be read.
	_ = wire.ForEachPair(content, func(name, _ []byte) bool {
		switch string(name) {
		case wire.ValueMaxConns:
			maxConns = true
		case wire.ValueMaxReqs:
			maxReqs = true
		case wire.ValueMpxsConns:
			mpxsConns = true
		}
		return !(maxConns && maxReqs && mpxsConns)
	})
	var out [128]byte
	res := out[:0]
	s := c.srv
	// A server without a limit has none to tell: the web server keeps its
	// own.
	if n := s.maxConns(); maxConns && n != math.MaxInt {
		res = wire.AppendPair(res, wire.ValueMaxConns, strconv.Itoa(n))
	}
	if n := s.maxRequests(); maxReqs && n != math.MaxInt {
		res = wire.AppendPair(res, wire.ValueMaxReqs, strconv.Itoa(n))
	}
	if mpxsConns {
		mpxs := "1"
		if s.maxRequestsPerConn() == 1 {
			mpxs = "0"
		}
		res = wire.AppendPair(res, wire.ValueMpxsConns, mpxs)
	}
	return c.answer(func(w *wire.Writer) error {
		return w.WriteRecord(wire.TypeGetValuesResult, wire.NullRequestID, res)
	})
}

// refuseBegin answers a BEGIN_REQUEST that is not taken with END_REQUEST
// alone: the ID never became active, so nothing else is owed for it.
func (c *conn) refuseBegin(id uint16, status wire.ProtocolStatus) error {
	c.srv.stats.requests.Add(1)
	if status == wire.StatusOverloaded || status == wire.StatusCantMpxConn {
		c.srv.stats.overloaded.Add(1)
	}
	return c.answer(func(w *wire.Writer) error { return w.WriteEndRequest(id, 0, status) })
}

// begin starts a request (§5.1).
func (c *conn) begin(ctx context.Context, rec wire.Record) error {
	br, err := wire.ParseBeginRequest(rec.Content)
	if err != nil {
		return err
	}
	id := rec.RequestID
	s := c.srv
	status := wire.StatusRequestComplete
	c.mu.Lock()
	switch _, dup := c.reqs[id]; {
	case dup:
		c.mu.Unlock()
		return fmt.Errorf("%w: request ID %d", errDuplicateRequest, id)
	case c.closing:
		// Sent before the web server could see our last END_REQUEST (finish
		// has not begun the drain, or this would have been discarded): it
		// multiplexes or pipelines, and OVERLOADED tells it the request did
		// not run. fcgikit's Client resends.
		status = wire.StatusOverloaded
	case s.roleHandler(Role(br.Role)) == nil:
		status = wire.StatusUnknownRole
	case len(c.reqs) >= s.maxRequestsPerConn():
		status = wire.StatusOverloaded
		if s.maxRequestsPerConn() == 1 {
			status = wire.StatusCantMpxConn
		}
	case s.requests.Add(1) > int64(s.maxRequests()):
		s.requests.Add(-1)
		status = wire.StatusOverloaded
	}
	if status != wire.StatusRequestComplete {
		c.mu.Unlock()
		return c.refuseBegin(id, status)
	}
	req := &request{conn: c, id: id, role: Role(br.Role), keepConn: br.KeepConn()}
	req.ctx, req.cancel = context.WithCancelCause(ctx)
	c.reqs[id] = req
	c.lastReq = nil
	first := len(c.reqs) == 1
	if len(c.reqs) > 1 || id != 1 {
		// Web servers that do not multiplex (nginx, Apache, lighttpd) use ID
		// 1 for everything.
		c.multiplexed = true
	}
	c.idleSince = time.Time{}
	if t := s.readTimeout(); t > 0 {
		req.deadline = time.Now().Add(t)
		c.lowerReadDeadlineLocked(req.deadline)
	}
	if first {
		// Under c.mu, so that it cannot pass the StateIdle of the request
		// that just ended.
		s.setState(c.rwc, StateActive)
	}
	c.mu.Unlock()
	s.stats.requests.Add(1)
	return nil
}

// params collects the PARAMS stream and starts the handler at its end.
func (c *conn) params(req *request, content []byte) {
	if req.paramsDone {
		return
	}
	if len(content) == 0 {
		req.paramsDone = true
		headers, err := req.parseParams(c.srv.maxParamsBytes())
		if err != nil {
			c.refuse(req, err)
			return
		}
		if !c.holdParams(req, headers*headerCost) {
			c.overload(req)
			return
		}
		// Without CONTENT_LENGTH only STDIN tells whether a body comes; web
		// servers send it at once, so wait for its first record.
		if req.contentLength >= 0 {
			c.start(req)
		}
		return
	}
	if len(req.params)+len(req.env)+len(content) > c.srv.maxParamsBytes() {
		req.paramsDone = true
		c.refuse(req, errParamsTooLarge)
		return
	}
	if !c.holdParams(req, len(content)) {
		c.overload(req)
		return
	}
	// Web servers send all PARAMS in one record: keep it as the string it
	// will become. A stream in several records is gathered in params.
	switch {
	case req.env == "" && req.params == nil:
		req.env = string(content)
	case req.params == nil:
		req.params = append([]byte(req.env), content...)
		req.env = ""
	default:
		req.params = append(req.params, content...)
	}
}

// stdin feeds the request body.
func (c *conn) stdin(req *request, content []byte) {
	if !req.paramsDone || req.inputDone.Load() {
		return
	}
	if !req.started {
		if len(content) == 0 {
			req.contentLength = 0
		}
		c.start(req)
	}
	if len(content) == 0 {
		req.inputDone.Store(true)
		if req.body != nil {
			req.body.closeWrite()
		}
		return
	}
	if req.body == nil {
		return
	}
	// The write may wait for the handler: answers must not wait with it.
	c.flushAnswers()
	if !req.body.write(content) {
		c.inputLate(req)
	}
}

// start runs the request's handler on a goroutine of its own, which ends when
// the handler returns and the request is answered.
func (c *conn) start(req *request) {
	req.started = true
	hr, err := req.httpRequest(c.srv, c.srv.maxBodyBuffer(), c.srv.MaxRequestBodyBytes)
	if err != nil {
		c.refuse(req, err)
		return
	}
	if req.role == RoleFilter {
		c.filterData(req)
	}
	go c.runHandler(req, hr)
}

// refuse answers a request whose handler could not be run, from the serve
// goroutine.
func (c *conn) refuse(req *request, err error) {
	req.started = true
	code := http.StatusBadRequest
	switch {
	case errors.Is(err, errParamsTooLarge):
		code = http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, ErrReadTimeout):
		code = http.StatusRequestTimeout
	case errors.As(err, new(*http.MaxBytesError)):
		code = http.StatusRequestEntityTooLarge
	}
	c.srv.logger().Debug("fcgi: refusing request", "remote", c.remoteAddr(), "id", req.id, "err", err)
	body := http.StatusText(code) + "\n"
	out := fmt.Appendf(nil, "Status: %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s", code, http.StatusText(code), len(body), body)
	req.cancel(err)
	c.endByReader(req, out, true, wire.StatusRequestComplete)
}

// abort handles ABORT_REQUEST: the handler's context is cancelled and its
// body and response fail with ErrRequestAborted. The END_REQUEST comes from
// the handler's return. A request whose handler has not started yet is ended
// here.
func (c *conn) abort(req *request) {
	c.srv.stats.aborted.Add(1)
	req.aborted.Store(true)
	req.cancel(ErrRequestAborted)
	if req.body != nil {
		req.body.closeWithError(ErrRequestAborted)
	}
	if !req.started {
		req.started = true
		c.endByReader(req, nil, false, wire.StatusRequestComplete)
	}
}

// endRequest sends the rest of a request's STDOUT (hdr and out), the empty
// STDOUT record that ends the stream when endStdout is set, and END_REQUEST
// with status, in one write. The ID and the request's slot are released
// before the END_REQUEST can reach the web server, so a new BEGIN_REQUEST
// sent the moment it is read is accepted, whether it reuses the ID or takes
// the last slot of MaxRequests.
func (c *conn) endRequest(req *request, hdr, out []byte, appStatus uint32, endStdout bool, status wire.ProtocolStatus) {
	c.endRequestBy(false, req, hdr, out, appStatus, endStdout, status)
}

// endByReader is endRequest for a request the serve goroutine ends itself
// (refused, aborted or shut down before its handler started): as its other
// answers (see answer), the records wait in the Writer while more records
// wait to be read, unless the connection is to close after them.
func (c *conn) endByReader(req *request, out []byte, endStdout bool, status wire.ProtocolStatus) {
	c.endRequestBy(true, req, nil, out, 0, endStdout, status)
}

func (c *conn) endRequestBy(reader bool, req *request, hdr, out []byte, appStatus uint32, endStdout bool, status wire.ProtocolStatus) {
	c.wmu.Lock()
	c.mu.Lock()
	delete(c.reqs, req.id)
	c.srv.requests.Add(-1)
	c.releaseParams(req)
	idle := len(c.reqs) == 0
	if idle {
		c.lastReq = req // for startDrain, should the connection close now
	}
	if !req.keepConn {
		c.closing = true
	}
	closing := c.closing
	c.mu.Unlock()
	// c.rd is the serve goroutine's: only it may look.
	hold := reader && !(idle && closing) && c.rd.Ready(anyRecord)
	if hold {
		c.unflushed.Store(true)
	}
	_ = c.writeRecords(func(w *wire.Writer) error {
		if err := w.WriteStream(wire.TypeStdout, req.id, hdr); err != nil {
			return err
		}
		if err := w.WriteStream(wire.TypeStdout, req.id, out); err != nil {
			return err
		}
		if endStdout {
			if err := w.WriteRecord(wire.TypeStdout, req.id, nil); err != nil {
				return err
			}
		}
		if err := req.endStderr(w); err != nil {
			return err
		}
		return w.WriteEndRequest(req.id, appStatus, status)
	}, time.Time{}, !hold)
	if idle && closing {
		// Right after END_REQUEST went out: what the web server sends from
		// now on was sent after it could have read it, on a connection it
		// took for kept (nginx). It is discarded, and the FIN that follows
		// makes it fail before any answer, which nginx retries on a kept
		// connection, where OVERLOADED would become a 502.
		c.draining.Store(true)
	}
	c.wmu.Unlock()
	c.released(req, idle, closing)
}

// abandonRequest ends a request whose response is broken (its handler
// panicked after output went out): the web server must not take it for
// complete. Alone on its connection, the connection is closed, which is what
// every web server understands; beside other requests, they are spared and
// END_REQUEST goes without the empty STDOUT that would complete the response,
// with appStatus set.
func (c *conn) abandonRequest(req *request, appStatus uint32) {
	if appStatus == 0 {
		appStatus = 1
	}
	c.wmu.Lock()
	c.mu.Lock()
	delete(c.reqs, req.id)
	c.srv.requests.Add(-1)
	c.releaseParams(req)
	idle := len(c.reqs) == 0
	if !req.keepConn {
		c.closing = true // once the others are done
	}
	c.mu.Unlock()
	if idle {
		c.wmu.Unlock()
		c.close(ErrConnClosed)
	} else {
		_ = c.writeLocked(func(w *wire.Writer) error {
			if err := req.endStderr(w); err != nil {
				return err
			}
			return w.WriteEndRequest(req.id, appStatus, wire.StatusRequestComplete)
		})
		c.wmu.Unlock()
	}
	c.released(req, false, false)
}

// released follows a request out of the connection's table (its slot already
// given back): its body's buffer is freed, and a connection it left idle is
// finished or kept.
func (c *conn) released(req *request, idle, closing bool) {
	if req.body != nil {
		req.body.closeRead()
	}
	if req.filter != nil {
		req.filter.pipe.closeRead()
	}
	if !idle {
		return
	}
	if closing {
		c.finish()
		return
	}
	c.mu.Lock()
	if len(c.reqs) == 0 && !c.closing {
		c.armIdleLocked()
		c.srv.setState(c.rwc, StateIdle)
	}
	c.mu.Unlock()
}

// finish closes a connection that has no request left and serves no more. It
// wakes the serve goroutine, which ends our side of the connection
// (startDrain) once it has answered what it already read, and then reads and
// discards what the web server still sends until it closes its end (or the
// drain's time or size runs out), so that the web server reads our last bytes
// rather than a reset.
func (c *conn) finish() {
	c.draining.Store(true)
	c.setReadDeadline(time.Now())
}

// setReadDeadline sets the connection's read deadline. Under c.mu, as every
// read deadline, so that expire cannot replace one with a deadline computed
// before draining began.
func (c *conn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	c.readDeadline = t
	c.rwc.SetReadDeadline(t)
	c.mu.Unlock()
}

// runHandler runs on the request's own goroutine, started by start; it ends
// once the request is answered.
func (c *conn) runHandler(req *request, hr *http.Request) {
	w := req.newResponse(hr)
	defer func() {
		if p := recover(); p != nil {
			w.recovered(p)
		}
		w.finish()
		req.cancel(context.Canceled)
		w.release()
	}()
	c.srv.roleHandler(req.role).ServeHTTP(w, hr)
}

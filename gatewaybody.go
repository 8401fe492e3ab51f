package fcgi

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi/internal/defaults"
	"github.com/fcgikit/fcgi/internal/spool"
	"github.com/fcgikit/fcgi/internal/wire"
)

// streamFrom is the size above which a body of known length is streamed when
// [Gateway.StreamRequestBody] is set; smaller ones are read first so that the
// request can be replayed.
const streamFrom = 64 << 10

var (
	errTooLarge       = &httpError{code: http.StatusRequestEntityTooLarge, msg: "fcgi: request body too large"}
	errHeaderTooLarge = &httpError{code: http.StatusRequestHeaderFieldsTooLarge, msg: "fcgi: request header field too large for the application"}
	errURITooLong     = &httpError{code: http.StatusRequestURITooLong, msg: "fcgi: request URI too long for the application"}
	errSpool          = &httpError{code: http.StatusInternalServerError, msg: "fcgi: cannot buffer the request body"}
	errBodyTimeout    = &httpError{code: http.StatusRequestTimeout, msg: "fcgi: request body timed out"}
)

func (g *Gateway) maxBody() int64 {
	if g.MaxBodyBytes == 0 {
		return defaults.GatewayMaxBodyBytes
	}
	return g.MaxBodyBytes
}

func (g *Gateway) bodyReadTimeout() time.Duration {
	return durationOrDefault(g.BodyReadTimeout, defaults.GatewayBodyReadTimeout)
}

func (g *Gateway) maxMemory() int64 {
	if g.MaxMemoryBytes == 0 {
		return defaults.GatewayMaxMemoryBytes
	}
	return g.MaxMemoryBytes
}

// reserve accounts n more bytes of bodies in memory, if the Gateway-wide
// bound allows.
func (g *Gateway) reserve(n int64) bool {
	limit := g.MaxTotalMemoryBytes
	if limit == 0 {
		limit = defaults.GatewayMaxTotalMemoryBytes
	}
	return spool.Reserve(&g.bodyMem, limit, n)
}

// gatewayBudget is a Gateway as the spool.Budget its MaxTotalMemoryBytes
// sets.
type gatewayBudget Gateway

func (b *gatewayBudget) Reserve(n int64) bool { return (*Gateway)(b).reserve(n) }
func (b *gatewayBudget) Unreserve(n int64)    { b.bodyMem.Add(-n) }

// checkParams refuses a request one of whose parameters would be longer than
// MaxParamPairBytes as a name-value pair: 414 for those the request target
// makes, 431 for the others (header fields and what derives from them).
func (g *Gateway) checkParams(env cgiEnv) error {
	limit := g.MaxParamPairBytes
	if limit == 0 {
		limit = defaults.GatewayMaxParamPairBytes
	}
	if limit < 0 {
		return nil
	}
	for i := range env {
		p := &env[i]
		nameLen := len(p.name)
		if p.header {
			nameLen += len(cgiHeaderPrefix)
		}
		if wire.PairSize(nameLen, len(p.value)) <= limit {
			continue
		}
		switch {
		case p.header:
		case p.name == "QUERY_STRING", p.name == "REQUEST_URI", p.name == "DOCUMENT_URI",
			p.name == "SCRIPT_NAME", p.name == "SCRIPT_FILENAME", p.name == "PATH_INFO":
			return errURITooLong
		}
		return errHeaderTooLarge
	}
	return nil
}

// body prepares r's body as req.Body and returns CONTENT_LENGTH ("" for no
// body). The body is read whole before the request is sent, into b, unless
// StreamRequestBody lets a large one of known length stream; the caller
// releases b however the request ends.
func (g *Gateway) body(w http.ResponseWriter, r *http.Request, req *Request, b *bodyBuffer) (string, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return "", nil
	}
	limit := g.maxBody()
	if limit >= 0 && r.ContentLength > limit {
		return "", errTooLarge
	}
	rc := http.NewResponseController(w)
	var body io.Reader = r.Body
	var clock *bodyClock
	if d := g.bodyReadTimeout(); d > 0 {
		clock = newBodyClock(rc, d)
		body = &timedBody{r: r.Body, c: clock}
	}
	if g.StreamRequestBody && r.ContentLength > streamFrom {
		// The client may still be sending it when the response has ended, so
		// reads stop when ServeHTTP returns.
		gb := &guardedBody{r: body, rc: rc}
		b.stop, b.clock = gb.stop, clock
		req.Body = gb
		return strconv.FormatInt(r.ContentLength, 10), nil
	}
	if clock != nil {
		defer clock.stop() // a panicking read must not leave it running
	}
	b.MemMax, b.Budget, b.TempDir, b.Prefix = g.maxMemory(), (*gatewayBudget)(g), g.TempDir, "fcgi-body-"
	err := b.Fill(body, r.ContentLength, limit)
	if clock != nil && clock.stop() && err != nil {
		return "", errBodyTimeout
	}
	if err != nil {
		return "", g.spoolErr(err)
	}
	if b.Size() == 0 {
		return "", nil
	}
	req.Body = b.Reader()
	req.GetBody = func() (io.Reader, error) { return b.Reader(), nil }
	return strconv.FormatInt(b.Size(), 10), nil
}

// spoolErr is the answer to a body spool.Buffer.Fill could not hold.
func (g *Gateway) spoolErr(err error) error {
	var re *spool.ReadError
	switch {
	case err == spool.ErrTooLarge:
		return errTooLarge
	case errors.As(err, &re):
		return readErr(re.Err)
	}
	g.logger().Error("fcgi: gateway: buffering a request body", "err", err)
	return errSpool
}

// closeUnreadBody makes the answer to r, given without reading r's body to its
// end, the last on its HTTP/1 connection. Otherwise net/http reads up to
// 256 KiB of the rest before it sends the answer, to keep the connection, with
// no deadline: a client that stops sending keeps it waiting, and the answer
// unsent, for as long as it likes. HTTP/2 has no such wait, and a Connection
// field there would close every stream of the connection.
func closeUnreadBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		w.Header().Set("Connection", "close")
	}
}

// A bodyBuffer is a request body read before it is sent, or, for one that
// streams, what stops its reading. Its zero value is empty.
type bodyBuffer struct {
	spool.Buffer
	stop  func()     // for a streamed body: stops reading it
	clock *bodyClock // for a streamed body: its BodyReadTimeout
}

// readErr is the answer to a failed read of the client's body: 413 when a
// middleware's http.MaxBytesReader stopped it, 400 otherwise (the client
// broke off, or sent a malformed chunked body).
func readErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errTooLarge
	}
	return &httpError{code: http.StatusBadRequest, msg: "fcgi: reading request body: " + err.Error()}
}

// release gives back what b holds: its memory, its temporary file, the
// client's body when it streams.
func (b *bodyBuffer) release() {
	if b.stop != nil {
		b.stop()
	}
	if b.clock != nil {
		b.clock.stop()
	}
	b.Release()
}

// serveStreamed serves req, whose body streams, as g.serve does, and answers
// 408 if the client stopped sending the body before anything was answered:
// the read deadline that cut it off has cancelled the request, and a request
// cancelled without an answer would otherwise get net/http's empty 200.
func (g *Gateway) serveStreamed(w http.ResponseWriter, r *http.Request, req *Request, b *bodyBuffer) {
	// The application may answer while the body still streams to it: an
	// HTTP/1 server of net/http, unless told so, locks the request body to
	// write the response header, and a body read waiting for the client
	// holds that lock until the client sends more, or for good. HTTP/2 is
	// full duplex already, and says the call is not supported.
	http.NewResponseController(w).EnableFullDuplex()
	tw := &writeTracker{ResponseWriter: w}
	g.serve(tw, r, req)
	if !tw.wrote && b.clock.hasFired() {
		g.fail(w, r, errBodyTimeout)
	}
}

// writeTracker records whether anything was written to its ResponseWriter.
type writeTracker struct {
	http.ResponseWriter
	wrote bool
}

func (t *writeTracker) WriteHeader(code int) {
	// An interim 103 is not the answer: a 408 may still follow it.
	t.wrote = t.wrote || code >= 200 || code == http.StatusSwitchingProtocols
	t.ResponseWriter.WriteHeader(code)
}

func (t *writeTracker) Write(p []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(p)
}

func (t *writeTracker) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// A bodyClock breaks off a read of the client's body that has waited too
// long, by moving the connection's read deadline to now. It runs only while a
// read waits, as nginx's client_body_timeout does, so time spent on the disk
// or waiting for the application to take a streamed body does not count. The
// http.Server's own deadlines are left alone unless it fires, and after stop
// it never touches the connection again, which may by then serve another
// request.
type bodyClock struct {
	rc    *http.ResponseController
	d     time.Duration
	t     *time.Timer
	mu    sync.Mutex
	fired bool
	done  bool
}

func newBodyClock(rc *http.ResponseController, d time.Duration) *bodyClock {
	c := &bodyClock{rc: rc, d: d}
	c.t = time.AfterFunc(time.Hour, c.expire)
	c.t.Stop()
	return c
}

func (c *bodyClock) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.fired = true
	// A ResponseWriter without deadlines (a test's recorder) cannot be
	// interrupted: the read goes on waiting.
	c.rc.SetReadDeadline(time.Now())
}

// hasFired reports whether the clock has fired.
func (c *bodyClock) hasFired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired
}

// stop ends the clock and reports whether it fired.
func (c *bodyClock) stop() bool {
	c.t.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	return c.fired
}

// timedBody runs its clock during each read.
type timedBody struct {
	r io.Reader
	c *bodyClock
}

func (b *timedBody) Read(p []byte) (int, error) {
	b.c.t.Reset(b.c.d)
	n, err := b.r.Read(p)
	b.c.t.Stop()
	return n, err
}

// guardedBody passes a request body to the client's body writer until stop,
// after which reads fail with http.ErrBodyReadAfterClose: net/http forbids
// reading a request body after ServeHTTP has returned.
type guardedBody struct {
	mu      sync.Mutex // held during a read
	r       io.Reader
	rc      *http.ResponseController
	stopped atomic.Bool
}

func (b *guardedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.r.Read(p)
}

// stop ends reading, and waits for a read in progress. That read may be
// waiting for a client that has stopped sending, when the response needs no
// more of the body: the connection's read deadline, moved to now, ends it
// (and the connection, which has a body half read).
func (b *guardedBody) stop() {
	b.stopped.Store(true)
	if !b.mu.TryLock() {
		b.rc.SetReadDeadline(time.Now())
		b.mu.Lock()
	}
	b.mu.Unlock()
}

package fcgi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi/internal/defaults"
	"github.com/fcgikit/fcgi/internal/wire"
)

// streamFrom is the size above which a body of known length is streamed when
// [Gateway.StreamRequestBody] is set; smaller ones are read first so that the
// request can be replayed.
const streamFrom = 64 << 10

// The chunks a body is held in grow from firstChunk to maxChunk bytes as the
// data arrives: a body that stalls holds little more than it sent, and one
// that grows is never copied to a larger buffer.
const (
	firstChunk = 4 << 10
	maxChunk   = 64 << 10
)

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
	for {
		cur := g.bodyMem.Load()
		if limit >= 0 && cur+n > limit {
			return false
		}
		if g.bodyMem.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

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
	b.g = g
	err := b.fill(body, r.ContentLength, limit)
	if clock != nil && clock.stop() && err != nil {
		return "", errBodyTimeout
	}
	if err != nil {
		return "", err
	}
	if b.size == 0 {
		return "", nil
	}
	req.Body = b.reader()
	req.GetBody = func() (io.Reader, error) { return b.reader(), nil }
	return strconv.FormatInt(b.size, 10), nil
}

// A bodyBuffer holds a request body read before it is sent: in memory, in
// chunks allocated as the data arrives, while the Gateway's memory bounds
// allow, and otherwise in a temporary file. Its zero value is empty.
type bodyBuffer struct {
	g      *Gateway
	chunks [][]byte // the last one may have room left
	held   int64    // bytes accounted in g.bodyMem: the chunks' capacity
	size   int64    // bytes of body, in chunks or in file
	file   *os.File
	stop   func()     // for a streamed body: stops reading it
	clock  *bodyClock // for a streamed body: its BodyReadTimeout

	unlinked bool // file's name is gone already
}

// fill reads r to its end: length bytes, or up to EOF when length is negative
// (unknown). A body longer than limit (when limit >= 0) is refused with 413.
func (b *bodyBuffer) fill(r io.Reader, length, limit int64) error {
	memMax := b.g.maxMemory()
	if length > 0 && memMax >= 0 && length > memMax {
		if err := b.spill(); err != nil {
			return err
		}
		return b.fillFile(r, length, limit)
	}
	for {
		if length >= 0 && b.size == length {
			return nil
		}
		c := b.room(length, memMax)
		if c == nil {
			// No memory to be had: read on into a scratch buffer to learn
			// whether there is more, and if so move to disk.
			bp := copyBufs.Get().(*[]byte)
			p := *bp
			if length >= 0 {
				p = p[:min(int64(len(p)), length-b.size)]
			}
			n, err := io.ReadAtLeast(r, p, 1)
			if err == nil {
				if err = b.spill(); err == nil {
					err = b.write(p[:n], limit)
				}
			}
			copyBufs.Put(bp)
			switch {
			case err == io.EOF && length < 0:
				return nil
			case err == io.EOF:
				return readErr(io.ErrUnexpectedEOF)
			case errors.Is(err, errTooLarge), errors.Is(err, errSpool):
				return err
			case err != nil:
				return readErr(err)
			}
			return b.fillFile(r, length, limit)
		}
		last := len(b.chunks) - 1
		n, err := r.Read(c[len(c):cap(c)])
		b.chunks[last] = c[:len(c)+n]
		b.size += int64(n)
		if limit >= 0 && b.size > limit {
			return errTooLarge
		}
		if done, err := readEnd(err, length, b.size); done {
			return err
		}
	}
}

// room returns the chunk to read into next, allocating one if the last is
// full, or nil when the memory bounds allow no more.
func (b *bodyBuffer) room(length, memMax int64) []byte {
	if n := len(b.chunks); n > 0 {
		if c := b.chunks[n-1]; len(c) < cap(c) {
			return c
		}
	}
	size := int64(firstChunk)
	if n := len(b.chunks); n > 0 {
		size = min(2*int64(cap(b.chunks[n-1])), maxChunk)
	} else if length > 0 {
		size = min(length, maxChunk) // a small body in one piece
	}
	if length >= 0 {
		size = min(size, length-b.size)
	}
	if memMax >= 0 {
		size = min(size, memMax-b.held)
	}
	if size <= 0 || !b.g.reserve(size) {
		return nil
	}
	b.held += size
	c := make([]byte, 0, size)
	b.chunks = append(b.chunks, c)
	return c
}

// spill moves the body to a new temporary file and gives its memory back.
func (b *bodyBuffer) spill() error {
	f, err := os.CreateTemp(b.g.TempDir, "fcgi-body-")
	if err != nil {
		b.g.logger().Error("fcgi: gateway: buffering a request body", "err", err)
		return errSpool
	}
	b.file = f
	// Unlinked at once where the system allows it, as nginx does: the open
	// file lives on, and nothing is left behind even if the process dies.
	// Elsewhere (Windows) release removes it.
	b.unlinked = os.Remove(f.Name()) == nil
	for _, c := range b.chunks {
		if _, err := f.Write(c); err != nil {
			b.g.logger().Error("fcgi: gateway: buffering a request body", "err", err)
			return errSpool
		}
	}
	b.freeMemory()
	return nil
}

// fillFile reads the rest of r into the file.
func (b *bodyBuffer) fillFile(r io.Reader, length, limit int64) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for length < 0 || b.size < length {
		p := buf
		if length >= 0 && length-b.size < int64(len(p)) {
			p = p[:length-b.size]
		}
		n, err := r.Read(p)
		if werr := b.write(p[:n], limit); werr != nil {
			return werr
		}
		if done, err := readEnd(err, length, b.size); done {
			return err
		}
	}
	return nil
}

// readEnd tells whether a read of a body of length bytes (negative: unknown)
// that returned err, size bytes in, ends the body, and with what error: EOF
// before length is an unexpected EOF.
func readEnd(err error, length, size int64) (bool, error) {
	switch {
	case err == io.EOF && length >= 0 && size < length:
		return true, readErr(io.ErrUnexpectedEOF)
	case err == io.EOF:
		return true, nil
	case err != nil:
		return true, readErr(err)
	}
	return false, nil
}

func (b *bodyBuffer) write(p []byte, limit int64) error {
	if len(p) == 0 {
		return nil
	}
	b.size += int64(len(p))
	if limit >= 0 && b.size > limit {
		return errTooLarge
	}
	if _, err := b.file.Write(p); err != nil {
		b.g.logger().Error("fcgi: gateway: buffering a request body", "err", err)
		return errSpool
	}
	return nil
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

// reader returns a reader of the whole body.
func (b *bodyBuffer) reader() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.size)
	}
	if len(b.chunks) == 1 {
		// A bytes.Reader lets the client send a small body together with the
		// request's header.
		return bytes.NewReader(b.chunks[0])
	}
	return &chunksReader{chunks: b.chunks}
}

func (b *bodyBuffer) freeMemory() {
	if b.held != 0 {
		b.g.bodyMem.Add(-b.held)
	}
	b.held, b.chunks = 0, nil
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
	if b.file != nil {
		b.file.Close()
		if !b.unlinked {
			os.Remove(b.file.Name())
		}
		b.file = nil
	}
	if b.g != nil {
		b.freeMemory()
	}
}

// serveStreamed serves req, whose body streams, as g.serve does, and answers
// 408 if the client stopped sending the body before anything was answered:
// the read deadline that cut it off has cancelled the request, and a request
// cancelled without an answer would otherwise get net/http's empty 200.
func (g *Gateway) serveStreamed(w http.ResponseWriter, r *http.Request, req *Request, b *bodyBuffer) {
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

// chunksReader reads a body held in chunks.
type chunksReader struct {
	chunks [][]byte
	i, off int
}

func (r *chunksReader) Read(p []byte) (int, error) {
	for r.i < len(r.chunks) && r.off == len(r.chunks[r.i]) {
		r.i, r.off = r.i+1, 0
	}
	if r.i == len(r.chunks) {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[r.i][r.off:])
	r.off += n
	return n, nil
}

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

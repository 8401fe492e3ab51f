package fcgi

import (
	"context"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fcgikit/fcgi/internal/cgihdr"
	"github.com/fcgikit/fcgi/internal/wire"
)

// outBufSize is how much response body is buffered before it is sent. A
// response that fits is sent with the empty STDOUT and END_REQUEST in one
// write, with a Content-Length the web server can pass on.
const outBufSize = 8 << 10

var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, outBufSize); return &b }}

// response is the http.ResponseWriter of one request. It writes a CGI
// response (a Status: line, headers, a blank line, the body) on STDOUT. It
// belongs to the handler's goroutine.
type response struct {
	req    *request
	hr     *http.Request
	header http.Header
	status int

	wroteHeader bool // the status is fixed
	hdr         []byte
	hdrReady    bool   // hdr holds the encoded CGI header
	hdrSent     bool   // hdr went to the connection
	sentAny     bool   // some STDOUT went to the connection
	out         []byte // body not yet sent
	outp        *[]byte
	done        bool // the handler returned
	abandon     bool // end without completing STDOUT: the response is broken
	// writeDeadline is set by http.ResponseController.SetWriteDeadline.
	writeDeadline time.Time
	appStatus     uint32
	hdrArr        [256]byte
}

func (req *request) newResponse(hr *http.Request) *response {
	w := &req.resp
	w.req, w.hr, w.header = req, hr, make(http.Header)
	w.hdr = w.hdrArr[:0]
	return w
}

// Header implements http.ResponseWriter.
func (w *response) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter. As with net/http, an
// informational status other than 101 (such as 103 Early Hints) is sent at
// once, with the fields of Header set so far, and the handler goes on to
// write its final status; Header keeps those fields for the final response.
// It goes out as an interim CGI header block (see docs/early-hints.md), and
// only when the web server announced with EarlyHintsParam that it passes
// such blocks on: to any other (nginx, Apache, lighttpd) the first block
// would be the response, so there the informational status is dropped, as
// net/http drops it for an HTTP/1.0 client.
func (w *response) WriteHeader(code int) {
	if w.wroteHeader || w.done {
		return
	}
	if code < 100 || code > 999 {
		panic("fcgi: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		if w.req.earlyHints {
			w.writeInterim(code)
		}
		return
	}
	if code < 200 {
		return // 101: a CGI response cannot switch protocols
	}
	w.wroteHeader = true
	w.status = code
}

func (w *response) bodyAllowed() bool {
	return w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

// err reports why the response can no longer be written.
func (w *response) err() error {
	if w.req.aborted.Load() {
		return ErrRequestAborted
	}
	if w.req.ctx.Err() != nil {
		if cause := context.Cause(w.req.ctx); cause == ErrConnClosed || cause == ErrRequestAborted {
			return cause
		}
	}
	return nil
}

// prepare fixes the status and checks that body bytes may be written. A HEAD
// response buffers its body like any other, so that its header gets the
// Content-Type and Content-Length a GET would; the bytes are dropped when
// sent.
func (w *response) prepare() error {
	if w.done {
		return http.ErrHandlerTimeout
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		return http.ErrBodyNotAllowed
	}
	if err := w.err(); err != nil {
		return err
	}
	if w.outp == nil {
		w.outp = outBufs.Get().(*[]byte)
		w.out = (*w.outp)[:0]
	}
	return nil
}

// Write implements http.ResponseWriter.
func (w *response) Write(p []byte) (int, error) {
	if err := w.prepare(); err != nil {
		return 0, err
	}
	if len(w.out)+len(p) <= cap(w.out) {
		w.out = append(w.out, p...)
		return len(p), nil
	}
	if !w.hdrReady {
		w.encodeHeader(p, -1)
	}
	if err := w.send(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteString lets io.WriteString skip a conversion.
func (w *response) WriteString(s string) (int, error) {
	if err := w.prepare(); err != nil {
		return 0, err
	}
	if len(w.out)+len(s) <= cap(w.out) {
		w.out = append(w.out, s...)
		return len(s), nil
	}
	return w.Write([]byte(s))
}

// Flush implements http.Flusher: the header, and what body there is, go to
// the web server now. Flushing before any Write sends the header alone, so a
// server-sent events stream starts at once.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush returning its error, for http.ResponseController.
func (w *response) FlushError() error {
	if w.done {
		return http.ErrHandlerTimeout
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.err(); err != nil {
		return err
	}
	if !w.hdrReady {
		w.encodeHeader(nil, -1)
	}
	return w.send(nil)
}

// SetReadDeadline, for http.ResponseController, makes reads of the request
// body fail with os.ErrDeadlineExceeded from t on; the zero time removes the
// deadline. It does not limit how long the web server may take to send the
// body: that is Server.ReadTimeout.
func (w *response) SetReadDeadline(t time.Time) error {
	if w.req.body != nil {
		w.req.body.setDeadline(t)
	}
	return nil
}

// SetWriteDeadline, for http.ResponseController, makes writes that cannot
// start by t fail with os.ErrDeadlineExceeded, and bounds each write by t. A
// write cut off half-way breaks the connection, which the web server shares
// with other requests only when it multiplexes. The zero time removes the
// deadline.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.writeDeadline = t
	return nil
}

// EnableFullDuplex lets http.ResponseController callers know that reading the
// body after writing is allowed here (though nginx stops sending the body
// once the response header has gone out).
func (w *response) EnableFullDuplex() error { return nil }

// send writes the header if not yet sent, the buffered body and p as STDOUT
// records, and flushes them.
func (w *response) send(p []byte) error {
	c := w.req.conn
	id := w.req.id
	body := w.out
	if w.hr.Method == http.MethodHead {
		body, p = nil, nil
	}
	c.wmu.Lock()
	err := c.writeRecords(func(wr *wire.Writer) error {
		if !w.hdrSent {
			if err := wr.WriteStream(wire.TypeStdout, id, w.hdr); err != nil {
				return err
			}
		}
		if err := wr.WriteStream(wire.TypeStdout, id, body); err != nil {
			return err
		}
		return wr.WriteStream(wire.TypeStdout, id, p)
	}, w.writeDeadline, true)
	c.wmu.Unlock()
	if err == os.ErrDeadlineExceeded {
		// Nothing was written: the response can go on after the handler moves
		// the deadline.
		return err
	}
	w.hdrSent, w.sentAny = true, true
	w.out = w.out[:0]
	return err
}

// encodeHeader fixes the CGI header. sniff is body not yet buffered that may
// be needed to detect the content type; contentLength, when not negative, is
// a Content-Length to add.
func (w *response) encodeHeader(sniff []byte, contentLength int64) {
	w.hdrReady = true
	h := w.header
	b := append(w.hdr, "Status: "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(w.status)...)
	b = append(b, "\r\n"...)
	// Headers the server adds are written, not stored in the handler's map:
	// that would cost allocations for nothing.
	if _, haveType := h["Content-Type"]; !haveType && w.bodyAllowed() && len(w.out)+len(sniff) > 0 {
		// Sniff the buffered body in place when it suffices, so no 512-byte
		// copy escapes to the heap.
		data := w.out
		if len(data) < 512 && len(sniff) > 0 {
			data = append(append(make([]byte, 0, 512), w.out...), sniff[:min(len(sniff), 512-len(w.out))]...)
		}
		b = append(b, "Content-Type: "...)
		b = append(b, http.DetectContentType(data)...)
		b = append(b, "\r\n"...)
	}
	if contentLength >= 0 {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, contentLength, 10)
		b = append(b, "\r\n"...)
	}
	var keyArr [32]string
	keys := keyArr[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !cgihdr.ValidName(k) || strings.EqualFold(k, "Transfer-Encoding") || strings.EqualFold(k, "Status") {
			continue
		}
		for _, v := range h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendHeaderValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	w.hdr = append(b, "\r\n"...)
}

// appendHeaderValue appends v with line breaks turned into spaces, as
// net/http does, so a value cannot inject headers.
func appendHeaderValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// finish completes the response once the handler has returned: the rest of
// the body, the empty STDOUT and END_REQUEST, in one write.
func (w *response) finish() {
	if w.done {
		return
	}
	w.done = true
	req := w.req
	c := req.conn
	if w.abandon {
		c.abandonRequest(req, w.appStatus)
		return
	}
	if w.err() != nil {
		// Aborted or disconnected: the web server wants END_REQUEST alone
		// (§5.4), if it still listens.
		c.endRequest(req, nil, nil, w.appStatus, false, wire.StatusRequestComplete)
		return
	}
	if !w.wroteHeader {
		w.wroteHeader, w.status = true, http.StatusOK
	}
	if !w.hdrReady {
		h := w.header
		cl := int64(-1)
		// As net/http: a HEAD response gets a Content-Length only if its
		// handler wrote the body it would have sent.
		head := w.hr.Method == http.MethodHead
		if w.bodyAllowed() && (!head || len(w.out) > 0) && h.Get("Content-Length") == "" && h.Get("Transfer-Encoding") == "" {
			cl = int64(len(w.out))
		}
		w.encodeHeader(nil, cl)
	}
	if w.hr.Method == http.MethodHead {
		w.out = w.out[:0]
	}
	var hdr []byte
	switch {
	case w.hdrSent:
	case len(w.out) > 0 && len(w.hdr)+len(w.out) <= cap(w.out):
		// Header and body in one STDOUT record.
		n := len(w.out)
		w.out = w.out[:n+len(w.hdr)]
		copy(w.out[len(w.hdr):], w.out[:n])
		copy(w.out, w.hdr)
	default:
		hdr = w.hdr
	}
	c.endRequest(req, hdr, w.out, w.appStatus, true, wire.StatusRequestComplete)
}

// recovered deals with a handler panic: logged (unless it is
// http.ErrAbortHandler), then a 500 if nothing was sent yet, or else the
// response is abandoned so the web server does not take it as complete.
func (w *response) recovered(p any) {
	w.req.conn.srv.stats.panics.Add(1)
	if p != http.ErrAbortHandler {
		buf := make([]byte, 64<<10)
		buf = buf[:runtime.Stack(buf, false)]
		w.req.conn.srv.logger().Error("fcgi: panic serving request", "remote", w.hr.RemoteAddr, "uri", w.hr.RequestURI, "panic", p, "stack", string(buf))
	}
	if w.sentAny || p == http.ErrAbortHandler {
		w.abandon = true
		return
	}
	w.header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "X-Content-Type-Options": {"nosniff"}}
	w.hdr, w.hdrReady = w.hdrArr[:0], false
	w.out = w.out[:0]
	w.wroteHeader, w.status = true, http.StatusInternalServerError
	w.WriteString(http.StatusText(http.StatusInternalServerError) + "\n")
}

// release gives the body buffer back once the request is answered.
func (w *response) release() {
	if w.outp != nil {
		*w.outp = (*w.outp)[:0]
		outBufs.Put(w.outp)
		w.outp, w.out = nil, nil
	}
}

package fcgi

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// request is one active request ID on a connection.
type request struct {
	// Immutable after begin.
	conn     *conn
	id       uint16
	role     Role
	keepConn bool
	ctx      context.Context
	cancel   context.CancelCauseFunc

	// Owned by the serve goroutine until the handler starts; the handler then
	// only reads env.
	params        []byte
	env           string // the PARAMS stream as one string; variables are substrings
	contentLength int64  // from CONTENT_LENGTH; -1 when absent
	// earlyHints is set when the web server announces, with
	// EarlyHintsParam, that it passes interim header blocks on.
	earlyHints bool
	paramsDone bool
	started    bool
	// held is what the request's PARAMS count in Server.MaxBufferedBytes,
	// given back when it leaves its connection's table (releaseParams).
	held int64
	body *bodyPipe // nil when the request has no body

	// resp is the request's ResponseWriter, kept here to save an allocation;
	// it belongs to the handler's goroutine.
	resp response

	deadline  time.Time   // input must have arrived by then; zero for none
	inputDone atomic.Bool // the empty STDIN record arrived, or the input timed out
	aborted   atomic.Bool // ABORT_REQUEST arrived

	// filter is the FCGI_DATA stream of a Filter request, set by the serve
	// goroutine before the handler starts (see roles.go).
	filter *FilterData
	// stderr is set, under conn.wmu, once STDERR content went out: the stream
	// then needs its empty end record (see stderr.go).
	stderr bool
}

// headerCost is what holding a header made from an HTTP_ variable costs on
// top of its bytes in the PARAMS stream: its http.Header entry, its canonical
// name and its value's slice. MaxParamsBytes counts it, so that a stream cut
// into tiny variables costs no more than the limit says.
const headerCost = 112

// parseParams checks the PARAMS stream and keeps it as one string, so the
// variables and headers made from it are substrings that cost nothing. A
// stream whose headers would cost more than maxBytes to hold gives
// errParamsTooLarge. It returns the number of headers.
func (req *request) parseParams(maxBytes int) (int, error) {
	if req.params != nil {
		req.env = string(req.params)
		req.params = nil
	}
	req.contentLength = -1
	req.earlyHints = false
	var err error
	headers := 0
	perr := wire.ForEachPair(req.env, func(name, value string) bool {
		if strings.HasPrefix(name, "HTTP_") {
			headers++
		}
		if name == EarlyHintsParam {
			req.earlyHints = value == "1"
		}
		if name == "CONTENT_LENGTH" && value != "" {
			req.contentLength, err = strconv.ParseInt(value, 10, 64)
			if err != nil || req.contentLength < 0 {
				err = errors.New("fcgi: bad CONTENT_LENGTH " + strconv.Quote(value))
				return false
			}
		}
		return true
	})
	if perr != nil {
		return 0, perr
	}
	if headers > (maxBytes-len(req.env))/headerCost {
		return 0, errParamsTooLarge
	}
	if req.role == RoleAuthorizer {
		// An Authorizer gets no body (§6.3), whatever CONTENT_LENGTH the web
		// server passed on from the client's request.
		req.contentLength = 0
	}
	return headers, err
}

// envKey is the context key under which a request is kept for ProcessEnv,
// RoleOf and FilterDataOf.
type envKey struct{}

// httpRequest builds the *http.Request a handler sees from the CGI variables,
// the way net/http's server would have built it from the client's request.
func (req *request) httpRequest(srv *Server, maxBodyBuffer int, maxBody int64) (*http.Request, error) {
	if maxBody > 0 && req.contentLength > maxBody {
		return nil, &http.MaxBytesError{Limit: maxBody}
	}
	// The ctx field can only be set by WithContext, which copies: copying
	// from a zero Request on the stack costs one allocation, not two.
	r := (&http.Request{}).WithContext(context.WithValue(req.ctx, envKey{}, req))
	r.Method = "GET"
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0
	r.ContentLength = req.contentLength
	var (
		nheaders                                int
		remoteAddr, remotePort, https           string
		serverName, serverPort                  string
		scriptName, pathInfo, query, requestURI string
		contentType                             string
	)
	wire.ForEachPair(req.env, func(name, value string) bool {
		if strings.HasPrefix(name, "HTTP_") {
			nheaders++
			return true
		}
		switch name {
		case "REQUEST_METHOD":
			if value != "" {
				r.Method = value
			}
		case "SERVER_PROTOCOL":
			if major, minor, ok := http.ParseHTTPVersion(value); ok {
				r.Proto, r.ProtoMajor, r.ProtoMinor = value, major, minor
			}
		case "REQUEST_URI":
			requestURI = value
		case "SCRIPT_NAME":
			scriptName = value
		case "PATH_INFO":
			pathInfo = value
		case "QUERY_STRING":
			query = value
		case "REMOTE_ADDR":
			remoteAddr = value
		case "REMOTE_PORT":
			remotePort = value
		case "HTTPS":
			https = value
		case "SERVER_NAME":
			serverName = value
		case "SERVER_PORT":
			serverPort = value
		case "CONTENT_TYPE":
			contentType = value
		}
		return true
	})

	if requestURI == "" {
		// A web server that sends no REQUEST_URI (cgi-fcgi passes only what
		// it is given) still names the script and the query.
		requestURI = scriptName + pathInfo
		if query != "" {
			requestURI += "?" + query
		}
	}
	if requestURI == "" {
		requestURI = "/"
	}
	u, err := parseRequestURI(requestURI)
	if err != nil {
		return nil, errors.New("fcgi: bad REQUEST_URI " + strconv.Quote(requestURI))
	}
	r.URL = u
	r.RequestURI = requestURI

	h := make(http.Header, nheaders+1)
	// One backing array for all header values: one allocation, not one per
	// header.
	vals := make([]string, 0, nheaders+1)
	wire.ForEachPair(req.env, func(name, value string) bool {
		key, ok := strings.CutPrefix(name, "HTTP_")
		if !ok {
			return true
		}
		if key == "HOST" {
			r.Host = value
			return true
		}
		vals = append(vals, value)
		h[headerKey(key)] = vals[len(vals)-1 : len(vals) : len(vals)]
		return true
	})
	if contentType != "" {
		vals = append(vals, contentType)
		h["Content-Type"] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	r.Header = h
	if r.Host == "" {
		r.Host = serverName
		if serverPort != "" && serverPort != "80" && serverPort != "443" {
			r.Host = net.JoinHostPort(serverName, serverPort)
		}
	}
	if remotePort != "" {
		r.RemoteAddr = net.JoinHostPort(remoteAddr, remotePort)
	} else {
		r.RemoteAddr = remoteAddr
	}
	if strings.EqualFold(https, "on") {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true, ServerName: serverName}
	}

	switch {
	case req.contentLength == 0:
		r.Body = http.NoBody
	default:
		body := newBodyPipe(srv, req.contentLength, maxBodyBuffer)
		body.maxBytes = maxBody
		body.inputDeadline = req.deadline
		// The body fails as soon as the request is cancelled (abort, closed
		// connection, even one closed before the handler starts), so a
		// handler never waits on a body nobody will finish.
		context.AfterFunc(req.ctx, func() { body.closeWithError(context.Cause(req.ctx)) })
		req.body = body
		r.Body = body
	}
	return r, nil
}

// parseRequestURI is url.ParseRequestURI with a fast path for the common
// origin-form URI that needs no unescaping, which it parses with one
// allocation and the same result.
func parseRequestURI(uri string) (*url.URL, error) {
	if len(uri) == 0 || uri[0] != '/' || strings.HasPrefix(uri, "//") {
		return url.ParseRequestURI(uri)
	}
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c >= 0x7f || c == '%' || c == '#' {
			return url.ParseRequestURI(uri)
		}
	}
	path, query, hasQuery := strings.Cut(uri, "?")
	return &url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}, nil
}

// ProcessEnv returns the FastCGI variables of r that have no place in an
// http.Request: REMOTE_USER, SCRIPT_FILENAME, DOCUMENT_ROOT, SERVER_SOFTWARE
// and the like, as net/http/fcgi's ProcessEnv does. Variables that made r's
// method, URL, headers, body length, remote address or TLS state are left
// out. It returns nil for a request that did not come through this package.
// The map is built on each call, so a handler that never asks pays nothing.
func ProcessEnv(r *http.Request) map[string]string {
	return params(r, func(name string) bool {
		switch name {
		case "CONTENT_LENGTH", "CONTENT_TYPE", "HTTPS", "PATH_INFO", "QUERY_STRING",
			"REMOTE_ADDR", "REMOTE_HOST", "REMOTE_PORT", "REQUEST_METHOD",
			"REQUEST_URI", "SCRIPT_NAME", "SERVER_PROTOCOL":
			return false
		}
		return !strings.HasPrefix(name, "HTTP_")
	})
}

// Params returns every FastCGI variable of r (its PARAMS stream) as the web
// server sent them, HTTP_* headers and those that made r's method, URL and
// body included: what a CGI wrapper passes on as the script's environment. It
// returns nil for a request that did not come through this package.
func Params(r *http.Request) map[string]string {
	return params(r, func(string) bool { return true })
}

// params returns the variables of r that keep accepts, or nil for a request
// that did not come through this package.
func params(r *http.Request, keep func(name string) bool) map[string]string {
	req := requestOf(r)
	if req == nil {
		return nil
	}
	m := make(map[string]string)
	wire.ForEachPair(req.env, func(name, value string) bool {
		if keep(name) {
			m[name] = value
		}
		return true
	})
	return m
}

// headerKey turns the part of a CGI variable after HTTP_ into a canonical
// header name: ACCEPT_LANGUAGE becomes Accept-Language. Common names come
// from a table and cost no allocation.
func headerKey(cgi string) string {
	if k, ok := commonHeaders[cgi]; ok {
		return k
	}
	b := []byte(cgi)
	upper := true
	for i, c := range b {
		switch {
		case c == '_':
			b[i] = '-'
			upper = true
			continue
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - ('a' - 'A')
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c + ('a' - 'A')
		}
		upper = false
	}
	return string(b)
}

var commonHeaders = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Connection", "Content-Length", "Content-Type", "Cookie", "Dnt", "Forwarded",
		"If-Match", "If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since",
		"Origin", "Pragma", "Range", "Referer", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Te", "Upgrade",
		"Upgrade-Insecure-Requests", "User-Agent", "Via", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id", "X-Requested-With",
	} {
		m[strings.ToUpper(strings.ReplaceAll(k, "-", "_"))] = k
	}
	return m
}()

// bodyPipe carries a request body from the serve goroutine, which writes
// STDIN content into it, to the handler, which reads. It buffers up to a
// limit so the serve goroutine does not wait for the handler; past the limit
// it does (see Server.MaxBodyBuffer). What it holds counts in its server's
// MaxBufferedBytes, by the capacity of its buffer.
type bodyPipe struct {
	srv    *Server
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte
	off    int
	limit  int
	remain int64 // bytes CONTENT_LENGTH still allows; -1 when unknown
	done   bool  // the empty STDIN arrived
	err    error // abort or connection error, returned at once
	closed bool  // the handler returned or closed the body

	maxBytes int64 // Server.MaxRequestBodyBytes; 0 for none
	total    int64 // bytes written
	tooBig   bool  // the body went past maxBytes

	deadline time.Time   // set by http.ResponseController.SetReadDeadline
	timer    *time.Timer // wakes readers at the deadline

	// inputDeadline is when the request's input must have arrived
	// (Server.ReadTimeout), zero for never: a write waiting for room gives
	// up then, so that a handler that does not read cannot keep the
	// connection's reader from seeing an abort or a close for longer.
	inputDeadline time.Time
}

func newBodyPipe(srv *Server, contentLength int64, limit int) *bodyPipe {
	p := &bodyPipe{srv: srv, limit: limit, remain: contentLength}
	p.cond.L = &p.mu
	return p
}

// write appends STDIN content, waiting while the buffer is full, until
// inputDeadline at most. It reports false when that passed first: the input
// is late. Called by the serve goroutine.
func (p *bodyPipe) write(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.remain >= 0 && int64(len(b)) > p.remain {
		// A Responder reads at most CONTENT_LENGTH bytes (§6.2).
		b = b[:p.remain]
	}
	var wake *time.Timer
	for p.full(len(b)) && !p.closed && p.err == nil {
		if !p.inputDeadline.IsZero() {
			d := time.Until(p.inputDeadline)
			if d <= 0 {
				if wake != nil {
					wake.Stop()
				}
				return false
			}
			if wake == nil {
				// Only a write that has to wait pays for a timer.
				wake = time.AfterFunc(d, func() {
					p.mu.Lock()
					p.cond.Broadcast()
					p.mu.Unlock()
				})
			}
		}
		p.cond.Wait()
	}
	if wake != nil {
		wake.Stop()
	}
	if p.closed || p.err != nil || p.tooBig || len(b) == 0 {
		return true
	}
	if p.maxBytes > 0 && p.total+int64(len(b)) > p.maxBytes {
		b = b[:p.maxBytes-p.total]
		p.tooBig = true
	}
	p.total += int64(len(b))
	if p.off > 0 && len(p.buf)+len(b) > cap(p.buf) {
		n := copy(p.buf, p.buf[p.off:])
		p.buf, p.off = p.buf[:n], 0
	}
	// The budget counts the buffer's capacity, which is what it costs, and
	// only changes when the buffer grows: reads cost no atomic operation.
	was := cap(p.buf)
	p.buf = append(p.buf, b...)
	if grown := cap(p.buf) - was; grown != 0 {
		p.srv.buffered.Add(int64(grown))
	}
	if p.remain >= 0 {
		p.remain -= int64(len(b))
	}
	p.cond.Broadcast()
	return true
}

// dropBuffer gives the buffer back to the server's budget. p.mu must be
// held.
func (p *bodyPipe) dropBuffer() {
	p.srv.buffered.Add(-int64(cap(p.buf)))
	p.buf, p.off = nil, 0
}

// full reports whether a write of n bytes must wait for the handler to read:
// the buffer holds its limit, or the server's budget is spent and n more
// bytes would take it past bodyFloor. p.mu must be held.
func (p *bodyPipe) full(n int) bool {
	held := len(p.buf) - p.off
	if held >= p.limit {
		return true
	}
	// The budget is looked at only past the floor, which most bodies never
	// reach.
	return held > 0 && held+n > bodyFloor && p.srv.overBudget(n)
}

// allArrived reports whether the whole body has come: the empty STDIN, or
// every byte CONTENT_LENGTH declared (the empty STDIN may then still be on
// its way, but nothing else).
func (p *bodyPipe) allArrived() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done || p.remain == 0
}

// closeWrite marks the end of STDIN.
func (p *bodyPipe) closeWrite() {
	p.mu.Lock()
	p.done = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// closeWithError fails reads with err at once: the request was aborted, its
// connection closed or its input is late. Nothing can read the buffer any
// more, so it goes back to the budget now rather than when the handler
// returns.
func (p *bodyPipe) closeWithError(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.dropBuffer()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// closeRead drops the buffer and lets the serve goroutine discard the rest of
// the body. Called when the handler closes the body or returns.
func (p *bodyPipe) closeRead() {
	p.mu.Lock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.dropBuffer()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Read implements io.Reader for the handler.
func (p *bodyPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case p.err != nil:
			return 0, p.err
		case p.closed:
			return 0, http.ErrBodyReadAfterClose
		case !p.deadline.IsZero() && !time.Now().Before(p.deadline):
			return 0, os.ErrDeadlineExceeded
		case p.off < len(p.buf):
			n := copy(b, p.buf[p.off:])
			p.off += n
			if p.off == len(p.buf) {
				p.buf, p.off = p.buf[:0], 0
				if cap(p.buf) > bodyFloor {
					// A buffer grown past the floor by a handler that
					// read late goes back to the budget once empty.
					p.dropBuffer()
				}
			}
			p.cond.Broadcast()
			return n, nil
		case p.tooBig:
			return 0, &http.MaxBytesError{Limit: p.maxBytes}
		case p.done:
			if p.remain > 0 {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, io.EOF
		case p.remain == 0:
			return 0, io.EOF
		}
		p.cond.Wait()
	}
}

// setDeadline makes reads fail with os.ErrDeadlineExceeded from t on; the
// zero time removes the deadline.
func (p *bodyPipe) setDeadline(t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deadline = t
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if !t.IsZero() {
		p.timer = time.AfterFunc(time.Until(t), func() {
			p.mu.Lock()
			p.cond.Broadcast()
			p.mu.Unlock()
		})
	}
	p.cond.Broadcast()
}

// Close implements io.Closer: the rest of the body is discarded.
func (p *bodyPipe) Close() error {
	p.closeRead()
	return nil
}

package fcgi

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi/internal/fpmhint"
)

// A Gateway is an [http.Handler] that serves a FastCGI application, PHP-FPM
// typically, the way nginx does with fastcgi_pass and fastcgi_params:
//
//	root /srv/app/public;
//	index index.php;
//	location / { try_files $uri $uri/ /index.php$is_args$args; }
//	location ~ [^/]\.php(/|$) {
//	    fastcgi_split_path_info ^(.+?\.php)(/.*)$;
//	    try_files $fastcgi_script_name =404;
//	    fastcgi_param PATH_INFO $fastcgi_path_info;
//	    include fastcgi_params;
//	    fastcgi_pass ...;
//	}
//
// A path whose first segment ending in ScriptExt (in any case) names a
// script inside Root runs that script, the rest of the path being
// PATH_INFO. Otherwise a file is served directly when ServeStatic is set, a
// directory runs its Index file, and anything else runs FrontController.
// Symbolic links are followed, as by nginx; a path with control bytes gets
// 400, and a file the process may not read gets 403 and a log line, as from
// nginx. With PassThrough set, every request goes to the application.
//
// The application receives nginx's CGI environment: QUERY_STRING,
// REQUEST_METHOD, CONTENT_TYPE, CONTENT_LENGTH, SCRIPT_NAME, SCRIPT_FILENAME,
// PATH_INFO, REQUEST_URI, DOCUMENT_URI, DOCUMENT_ROOT, SERVER_PROTOCOL,
// REQUEST_SCHEME, HTTPS (only over TLS), GATEWAY_INTERFACE, SERVER_SOFTWARE,
// REMOTE_ADDR, REMOTE_PORT, REMOTE_USER, SERVER_ADDR, SERVER_PORT,
// SERVER_NAME, REDIRECT_STATUS=200, and HTTP_* for every request header but
// Proxy (httpoxy) and those with names of anything but ASCII letters, digits
// and '-': nginx drops names with "_" (X_Real_IP would pass for X-Real-IP),
// and PHP folds '.', ' ' and '[' into '_' as well.
//
// A request body is read whole before a backend connection is taken, as
// nginx does (fastcgi_request_buffering on), so that a slow client ties up a
// buffer, never one of the application's workers; CONTENT_LENGTH is then
// exact, a chunked body's too, and the request can be retried. A body is held
// in memory within MaxMemoryBytes and MaxTotalMemoryBytes, and otherwise in a
// temporary file that no ending of the request leaves behind.
//
// The response is streamed, flushed whenever the application has nothing
// more ready (so server-sent events work), and sent in one write with a
// Content-Length when it arrives whole; for HEAD the backend request ends
// once the header is sent, as with nginx. Hop-by-hop header fields are
// dropped; a header an HTTP client could not act on (a 1xx status,
// Content-Length fields that disagree) gets 502. Backend failures give 502,
// 503 (FCGI_OVERLOADED) or 504 (a [Client] timeout), with a log line that
// says why; the application's stderr is logged with its request, up to
// 64 KiB a request.
//
// A zero limit or timeout means the default its field states, a negative one
// none. A Gateway must not be changed or copied after it starts serving; it
// is safe for concurrent use.
type Gateway struct {
	// Client sends the requests; it is required.
	Client *Client

	// Root is the document root: DOCUMENT_ROOT, and the directory scripts and
	// static files are looked up in. A relative Root is taken from the
	// working directory; zero means the working directory itself.
	Root string

	// Index is the file run for a directory. Zero means "index.php".
	Index string

	// FrontController, if not empty, is the script (a slash path under Root,
	// "/index.php" typically) that runs for paths matching no file. Empty
	// means 404 for those.
	FrontController string

	// ScriptExt is the extension of scripts. Zero means ".php".
	ScriptExt string

	// ServeStatic serves files that are not scripts directly, with
	// http.ServeContent, instead of passing the request to the front
	// controller.
	ServeStatic bool

	// PassThrough sends every request to the application, which routes by
	// REQUEST_URI itself (Go, Python, Node), as nginx does with
	// "location / { include fastcgi_params; fastcgi_pass ...; }". Nothing is
	// looked up under Root, so Index, FrontController, ScriptExt and
	// ServeStatic do not apply: SCRIPT_NAME and DOCUMENT_URI are the cleaned
	// request path ("/a//b/../c" is "/a/c"), SCRIPT_FILENAME is Root followed
	// by it, and PATH_INFO is not sent ("/x.php/y" is one SCRIPT_NAME).
	PassThrough bool

	// Params holds more parameters to send with every request (APP_ENV,
	// PHP_VALUE, ...). Those the gateway computes take precedence, and
	// FCGI_EARLY_HINTS is the gateway's alone (docs/early-hints.md).
	Params map[string]string

	// ServerName is SERVER_NAME. Zero means the host of the request's Host
	// header.
	ServerName string

	// ServerSoftware is SERVER_SOFTWARE. Zero means "fcgikit".
	ServerSoftware string

	// MaxBodyBytes bounds request bodies; a longer one gets 413, before any
	// of it is read when its length is declared. Zero means 64 MiB; negative,
	// no limit.
	MaxBodyBytes int64

	// MaxMemoryBytes bounds the memory one request body is buffered in, taken
	// a few KiB at a time as it arrives; the rest goes to a temporary file in
	// TempDir. Zero means 1 MiB; negative, no limit but MaxTotalMemoryBytes.
	MaxMemoryBytes int64

	// MaxTotalMemoryBytes bounds the memory all buffered request bodies hold
	// together; beyond it, bodies go to temporary files. Zero means 64 MiB;
	// negative, no limit.
	MaxTotalMemoryBytes int64

	// TempDir is where bodies are buffered when they are not in memory. Zero
	// means os.TempDir().
	TempDir string

	// BodyReadTimeout bounds each wait for more of a request body, as nginx's
	// client_body_timeout does: a client that sends nothing for this long
	// gets 408, and its buffer is given back. It needs a ResponseWriter with
	// read deadlines, as net/http's server gives. Zero means 1 minute;
	// negative, no limit.
	BodyReadTimeout time.Duration

	// StreamRequestBody sends a request body of known length over 64 KiB to
	// the application as it arrives rather than buffering it. A slow client
	// then holds a backend connection, and a PHP-FPM worker, until it has sent
	// it all: set it only on a Gateway, with its own Client, for routes that
	// need it (an upload with progress, a streaming API). Bodies of unknown
	// length are always buffered, for CONTENT_LENGTH.
	StreamRequestBody bool

	// MaxParamPairBytes bounds each parameter sent, as an encoded FastCGI
	// name-value pair (a header field X-Foo is HTTP_X_FOO, its values
	// joined); a request that would need a longer one gets 431, or 414 when
	// its URL does. Zero means 65535, one record's content: PHP-FPM decodes
	// each FCGI_PARAMS record on its own and drops the connection when a
	// pair straddles two. Negative, no limit, suits applications that
	// reassemble pairs, as fcgikit's Server does.
	MaxParamPairBytes int

	// SendTimeout bounds each write of the response to the HTTP client, as
	// nginx's send_timeout does: a client that takes nothing for this long
	// has its connection closed and its backend request abandoned, so that
	// it holds no PHP worker. Static files are sent in pieces of 64 KiB, each
	// held to it. A ResponseWriter that cannot set write deadlines (see
	// [http.ResponseController]) is written without one. Zero means 1 minute;
	// negative, no limit.
	SendTimeout time.Duration

	// Sendfile, if not nil, serves the files the application names with
	// X-Accel-Redirect or X-Sendfile.
	Sendfile *Sendfile

	// ErrorPages holds the responses to errors the Gateway makes itself
	// (502, 503, 504, 413, 431, ...), by status; [ErrorPageFile] makes one
	// from a file. The response keeps the error's status whatever the
	// handler writes. The application's own responses, errors or not, are
	// never replaced. A status with no entry gets a line of text.
	ErrorPages map[int]http.Handler

	// ErrorLog receives backend errors and the application's stderr. Nil
	// means slog.Default().
	ErrorLog *slog.Logger

	// LearnEarlyHints makes the Gateway remember the Link fields with
	// rel=preload or rel=preconnect of each route's last 2xx answer to a
	// navigation, and send them as a 103 Early Hints response on the next
	// navigation to that route, while the application works. It sends them
	// only to HTTP/2 (and later) clients, and only for navigations
	// (Sec-Fetch-Mode: navigate or Sec-Fetch-Dest: document), as nginx's
	// notes on early hints advise: HTTP/1.1 clients and proxies mishandle
	// interim responses more often, and only a page has subresources worth
	// hinting. See docs/early-hints.md for the bounds.
	LearnEarlyHints bool

	local   atomic.Pointer[hostPort] // the last local address, formatted
	bodyMem atomic.Int64             // bytes of request bodies held in memory
	stats   gatewayStats
	hints   learnedHints
}

func (g *Gateway) logger() *slog.Logger {
	if g.ErrorLog != nil {
		return g.ErrorLog
	}
	return slog.Default()
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ServeHTTP serves r through the FastCGI application.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.stats.begin()
	defer g.stats.end()
	if g.Client == nil {
		g.fail(w, r, ErrNoBackend)
		return
	}
	rt, err := g.route(r.URL.Path)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if rt.script == "" {
		closeUnreadBody(w, r) // a file or a 404 needs no body
		f, fi, err := openRegular(rt.file)
		if err != nil {
			if !g.forbidden(w, r, err) {
				g.stats.answered(http.StatusNotFound)
				http.NotFound(w, r)
			}
			return
		}
		defer f.Close()
		g.stats.static.Add(1)
		sw := &sendWriter{ResponseWriter: w, sd: g.sendDeadline(w, r)}
		http.ServeContent(sw, r, fi.Name(), fi.ModTime(), f)
		if sw.err != nil {
			g.clientGone(r, &sw.sd, sw.err)
		}
		return
	}
	g.forward(w, r, rt, &Request{}, nil)
}

// openRegular opens name if it is a regular file.
func openRegular(name string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("fcgi: not a regular file")
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// forbidden answers 403 Forbidden, and logs which file, when err says a
// file may not be read, as nginx does; it reports whether it did. Any
// other error is the caller's to answer (404: no such file).
func (g *Gateway) forbidden(w http.ResponseWriter, r *http.Request, err error) bool {
	if !errors.Is(err, os.ErrPermission) {
		return false
	}
	closeUnreadBody(w, r)
	g.stats.answered(http.StatusForbidden)
	g.logger().Error("fcgi: gateway: file not readable", "method", r.Method, "uri", r.RequestURI, "status", http.StatusForbidden, "err", err)
	http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
	return true
}

// forward completes req for r, routed to rt, and serves it: the CGI
// environment with extra added and the variables an [Gateway.Authorizer]
// passed on, and the body, buffered (see [Gateway.body]).
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, rt route, req *Request, extra map[string]string) {
	env := getEnv()
	defer putEnv(env)
	*env = g.params(*env, r, rt, "")
	g.sendfileParams(env)
	for k, v := range extra {
		env.set(k, v)
	}
	if vars, ok := r.Context().Value(authVarsKey{}).(map[string]string); ok {
		// Over what the gateway computed from the request: the authorizer is
		// trusted, the client is not (REMOTE_USER from Basic credentials
		// nobody checked, say).
		for k, v := range vars {
			env.set(k, v)
		}
	}
	// Only the Gateway announces that it passes interim blocks on
	// (hintsContext), and only to a client that can receive them (not
	// HTTP/1.0): not Params, not an authorizer's variables.
	env.del(EarlyHintsParam)
	if r.ProtoAtLeast(1, 1) {
		env.add(EarlyHintsParam, "1")
	}
	// Checked before the body is read: a request refused for its header
	// wastes no upload.
	if err := g.checkParams(*env); err != nil {
		g.fail(w, r, err)
		return
	}
	var body bodyBuffer
	defer body.release()
	cl, err := g.body(w, r, req, &body)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	env.set("CONTENT_LENGTH", cl)
	req.env = *env
	req.Stderr = &stderrLog{log: g.logger(), r: r}
	if body.clock != nil {
		g.serveStreamed(w, r, req, &body)
		return
	}
	g.serve(w, r, req)
}

// serve sends req and copies the response to w.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, req *Request) {
	// The application's header goes straight into w's when nothing was set
	// there before (by a middleware): a map and a copy fewer.
	h := w.Header()
	direct := len(h) == 0
	if direct {
		req.header = h
	}
	g.sendLearnedHints(w, r)
	if r.ProtoAtLeast(1, 1) {
		req.hints = w // HTTP/1.0 has no interim responses
	}
	resp, err := g.Client.Do(r.Context(), req)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	defer resp.Body.Close()
	if g.sendfile(w, r, resp) {
		return
	}
	if direct {
		for k := range h { // the application's few fields, not the list
			if isHopByHop(k) {
				delete(h, k)
			}
		}
	} else {
		copyHeader(h, resp.Header)
	}
	noBuffering := accelNoBuffering(h)
	g.learnHints(r, resp.StatusCode, h)
	w.WriteHeader(resp.StatusCode)
	g.copyBody(w, r, resp, noBuffering)
}

// copyBody streams resp's body to w, under SendTimeout. It flushes only when
// the backend has nothing more in hand: a stream (SSE, a slow page) reaches
// the client as it comes, while a response that arrived whole leaves in one
// write, with a Content-Length rather than chunked. With noBuffering
// (X-Accel-Buffering: no) it flushes after every read.
func (g *Gateway) copyBody(w http.ResponseWriter, r *http.Request, resp *Response, noBuffering bool) {
	if r.Method == http.MethodHead {
		// net/http sends no body for HEAD and drops what is written: the
		// backend is let go once its header is out, as nginx does, not read
		// to the end of a body that may never end.
		discardBuffered(resp)
		return
	}
	sd := g.sendDeadline(w, r)
	waiting := func() bool { return noBuffering || !resp.Buffered() }
	if waiting() {
		if err := sd.flush(); err != nil {
			g.clientGone(r, &sd, err)
			return
		}
		sd.idle()
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var written int64
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			sd.extend()
			_, werr := w.Write(buf[:n])
			written += int64(n)
			if werr == nil && waiting() {
				if werr = sd.flush(); werr == nil {
					sd.idle()
				}
			}
			if errors.Is(werr, http.ErrBodyNotAllowed) {
				// A 204 or 304 with a body: drop it, and keep the connection
				// unless the body goes on and on.
				io.Copy(io.Discard, io.LimitReader(resp.Body, maxIgnoredBody))
				return
			}
			if werr != nil {
				// The caller's Close abandons the backend request.
				g.clientGone(r, &sd, werr)
				return
			}
		}
		if err == io.EOF {
			g.checkLength(w, r, resp.StatusCode, written)
			sd.extend() // net/http writes the end of the response
			return
		}
		if err != nil {
			if r.Context().Err() == nil {
				g.logger().Error("fcgi: gateway: response truncated", "method", r.Method, "uri", r.RequestURI, "err", err)
			}
			// Tell net/http the response is incomplete.
			panic(http.ErrAbortHandler)
		}
	}
}

// discardBuffered reads and drops the part of resp's body already in hand, up
// to maxIgnoredBody, without waiting for the backend: a body that has arrived
// whole keeps its connection, and the caller's Close abandons any other.
func discardBuffered(resp *Response) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for n := 0; n < maxIgnoredBody && resp.Buffered(); {
		m, err := resp.Body.Read(*bp)
		n += m
		if err != nil {
			return
		}
	}
}

// checkLength logs a body that ended short of the application's own
// Content-Length, the application's fault. The client can tell: net/http
// closes an HTTP/1 connection after a short body, and an HTTP/2 client checks
// the length itself.
func (g *Gateway) checkLength(w http.ResponseWriter, r *http.Request, status int, written int64) {
	v := w.Header()["Content-Length"]
	if len(v) == 0 || r.Method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified {
		return
	}
	if cl, err := strconv.ParseInt(v[0], 10, 64); err == nil && written < cl {
		g.logger().Error("fcgi: gateway: response shorter than its Content-Length", "method", r.Method, "uri", r.RequestURI, "content_length", cl, "sent", written)
	}
}

// clientGone logs a failed write to the client.
func (g *Gateway) clientGone(r *http.Request, sd *sendDeadline, err error) {
	g.stats.gone.Add(1)
	if errors.Is(err, http.ErrContentLength) {
		g.logger().Error("fcgi: gateway: response longer than its Content-Length", "method", r.Method, "uri", r.RequestURI)
		return
	}
	if sd.d > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		g.logger().Info("fcgi: gateway: client timed out reading the response", "method", r.Method, "uri", r.RequestURI, "send_timeout", sd.d)
		return
	}
	g.logger().Debug("fcgi: gateway: client went away", "method", r.Method, "uri", r.RequestURI, "err", err)
}

// copyHeader copies the application's header to the response, leaving out
// hop-by-hop fields (RFC 9110 §7.6.1): framing and connection management
// belong to net/http.
func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		if !isHopByHop(k) {
			dst[k] = vs
		}
	}
}

// isHopByHop reports whether the canonical field name k is hop-by-hop.
func isHopByHop(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Te", "Trailer", "Upgrade":
		return true
	}
	return false
}

// fail answers an error and logs why.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	var te *TimeoutError
	code := http.StatusBadGateway
	switch {
	case errors.As(err, &he):
		// The gateway's own refusals come before, or in the middle of,
		// reading the body.
		closeUnreadBody(w, r)
		g.stats.answered(he.code)
		g.errorPage(w, r, he.code)
		return
	case r.Context().Err() != nil:
		// The client is gone; nobody reads the answer.
		g.stats.gone.Add(1)
		g.logger().Debug("fcgi: gateway: client went away", "method", r.Method, "uri", r.RequestURI, "err", err)
		return
	case errors.As(err, &te):
		code = http.StatusGatewayTimeout
	case errors.Is(err, ErrOverloaded), errors.Is(err, ErrClientClosed):
		code = http.StatusServiceUnavailable
	}
	g.stats.answered(code)
	g.logger().Error("fcgi: gateway: backend failed", "method", r.Method, "uri", r.RequestURI, "status", code, "err", err)
	g.errorPage(w, r, code)
}

// maxStderrLog bounds the stderr of one request that is logged, as the Caddy
// transport bounds what it captures: an application that warns in a loop, or
// a hostile one, costs a bounded log per request rather than one line per
// record for as long as it goes on.
const maxStderrLog = 64 << 10

// stderrLog logs the application's stderr with the request it belongs to, up
// to maxStderrLog bytes, then one line saying the rest is dropped. The Client
// writes it from the goroutine reading the response only.
type stderrLog struct {
	log       *slog.Logger
	r         *http.Request
	logged    int  // bytes of stderr logged
	truncated bool // the bound was reached: nothing more is logged
}

func (s *stderrLog) Write(p []byte) (int, error) {
	if s.truncated {
		return len(p), nil
	}
	q := p
	if room := maxStderrLog - s.logged; len(q) > room {
		q, s.truncated = q[:room], true
	}
	s.logged += len(q)
	msg := strings.TrimRight(string(q), "\n")
	if msg != "" {
		args := []any{"method", s.r.Method, "uri", s.r.RequestURI, "stderr", msg}
		if h := fpmhint.For(msg); h != "" {
			args = append(args, "hint", h)
		}
		s.log.Warn("fcgi: backend stderr", args...)
	}
	if s.truncated {
		s.log.Warn("fcgi: backend stderr truncated: the rest of this request's is not logged", "method", s.r.Method, "uri", s.r.RequestURI, "logged_bytes", maxStderrLog)
	}
	return len(p), nil
}

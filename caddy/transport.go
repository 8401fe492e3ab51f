// Package fcgicaddy puts fcgikit's FastCGI client inside Caddy: a
// reverse_proxy transport, http.reverse_proxy.transport.fcgikit, that takes
// the place of Caddy's fastcgi transport, and a Caddyfile directive,
// php_fcgikit, that expands as php_fastcgi does but with that transport.
//
// The transport sends the CGI environment Caddy's fastcgi transport sends,
// over connections it keeps open ([fcgi.Client]): PHP-FPM's pm.max_requests
// recycling is learned and never answered with an error, idempotent requests
// are retried when a kept connection turns out closed, max_conns bounds the
// connections to each upstream and makes the requests above it wait, and a
// body of unknown length (chunked, HTTP/2 or HTTP/3 without Content-Length) is
// spooled, in memory and then in a temporary file, so that PHP-FPM gets the
// CONTENT_LENGTH it needs instead of Caddy answering 411.
//
// Build Caddy with it, in this module's directory of a checkout, with
//
//	xcaddy build v2.11.9 --with github.com/fcgikit/fcgi/caddy@v0.0.0=. --replace github.com/fcgikit/fcgi@v0.0.0=..
//
// (both modules replaced by the checkout at exactly the version v0.0.0 the
// build requires, so that the go command never looks them up), or from this
// module's cmd/caddy. Once the modules are published, the line is
//
//	xcaddy build --with github.com/fcgikit/fcgi/caddy
package fcgicaddy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/defaults"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is a reverse_proxy transport that speaks FastCGI through an
// [fcgi.Client] per upstream address. Its first fields are those of Caddy's
// fastcgi transport, with the same JSON names and meanings.
type Transport struct {
	// Root is the document root; placeholders are expanded per request.
	// Default: {http.vars.root}, the root of the site.
	Root string `json:"root,omitempty"`

	// SplitPath lists the extensions, ASCII and matched case-insensitively,
	// that end SCRIPT_NAME: what follows the first match is PATH_INFO.
	SplitPath []string `json:"split_path,omitempty"`

	// ResolveRootSymlink evaluates symbolic links in Root, so that
	// DOCUMENT_ROOT is the real directory.
	ResolveRootSymlink bool `json:"resolve_root_symlink,omitempty"`

	// EnvVars are variables added to the environment, over those built
	// from the request; values may hold placeholders.
	EnvVars map[string]string `json:"env,omitempty"`

	// DialTimeout bounds making a connection. Default: 3s, as Caddy's
	// fastcgi transport, so that a load balancer moves on quickly.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// ReadTimeout bounds the wait for the response to begin, once the
	// request has been sent, and then each wait for more of it. Default:
	// none, as Caddy's fastcgi transport.
	ReadTimeout caddy.Duration `json:"read_timeout,omitempty"`

	// WriteTimeout bounds each write of the request to the upstream.
	// Default: none, as Caddy's fastcgi transport.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// CaptureStderr logs what the application writes to FCGI_STDERR: at
	// WARN level, or ERROR when the response status is 4xx or 5xx.
	CaptureStderr bool `json:"capture_stderr,omitempty"`

	// MaxConns bounds the connections to each upstream; requests above it
	// wait, in order, until one is free. With PHP-FPM set it to
	// pm.max_children, since each kept connection holds a worker. Zero
	// means no limit.
	MaxConns int `json:"max_conns,omitempty"`

	// MaxIdleConns bounds the idle connections kept per upstream. Zero
	// means 16; negative, none: every connection closes after its request.
	MaxIdleConns int `json:"max_idle_conns,omitempty"`

	// KeepaliveTimeout closes a connection idle this long. Default: 30s.
	KeepaliveTimeout caddy.Duration `json:"keepalive_timeout,omitempty"`

	// Multiplex is "off" (the default), "on" or "auto" (ask the upstream
	// with FCGI_GET_VALUES whether it multiplexes). PHP-FPM does not.
	Multiplex string `json:"multiplex,omitempty"`

	// BodyMemory bounds the memory in which a body of unknown length is
	// spooled before it goes to a temporary file. Zero means 1 MiB.
	BodyMemory int64 `json:"body_memory,omitempty"`

	// MaxTotalMemory bounds the memory the spooled bodies of all requests
	// hold together; past it, a body goes to a temporary file. Zero means
	// 64 MiB, as the Gateway's MaxTotalMemoryBytes; negative, no bound.
	MaxTotalMemory int64 `json:"max_total_memory,omitempty"`

	// MaxBody bounds a spooled body of unknown length; a longer one is
	// answered 413. Zero means 64 MiB; negative, no limit. Bodies of known
	// length are streamed and bounded only by Caddy's request_body.
	MaxBody int64 `json:"max_body,omitempty"`

	// TempDir is where spooled bodies go. Default: os.TempDir().
	TempDir string `json:"temp_dir,omitempty"`

	serverSoftware string
	split          []string
	logger         *zap.Logger

	upstreams *upstreams
	bodyMem   *memBudget // the spooled bodies' memory, against MaxTotalMemory
}

// upstreams holds a Transport's Clients, by fcgi address ("unix:/path" or
// "host:port").
type upstreams struct {
	mu      sync.Mutex
	clients map[string]*fcgi.Client
	closed  bool
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.fcgikit",
		New: func() caddy.Module { return new(Transport) },
	}
}

// Provision checks t and fills in its defaults.
func (t *Transport) Provision(ctx caddy.Context) error {
	t.logger = ctx.Logger()
	if t.Root == "" {
		t.Root = "{http.vars.root}"
	}
	version, _ := caddy.Version()
	t.serverSoftware = "Caddy/" + version
	if t.DialTimeout == 0 {
		t.DialTimeout = caddy.Duration(3 * time.Second)
	}
	t.split = make([]string, len(t.SplitPath))
	for i, s := range t.SplitPath {
		for j := 0; j < len(s); j++ {
			if s[j] >= utf8.RuneSelf {
				return fmt.Errorf("split path %q: not ASCII", s)
			}
		}
		t.split[i] = strings.ToLower(s)
	}
	if _, err := t.multiplexMode(); err != nil {
		return err
	}
	if t.BodyMemory < 0 {
		return fmt.Errorf("body_memory %d: negative", t.BodyMemory)
	}
	t.upstreams = &upstreams{clients: make(map[string]*fcgi.Client)}
	limit := t.MaxTotalMemory
	if limit == 0 {
		limit = defaults.GatewayMaxTotalMemoryBytes
	}
	t.bodyMem = &memBudget{limit: limit}
	return nil
}

func (t *Transport) multiplexMode() (fcgi.MultiplexMode, error) {
	switch t.Multiplex {
	case "", "off":
		return fcgi.MultiplexOff, nil
	case "on":
		return fcgi.MultiplexOn, nil
	case "auto":
		return fcgi.MultiplexAuto, nil
	}
	return 0, fmt.Errorf("multiplex %q: want off, on or auto", t.Multiplex)
}

// Cleanup closes the idle connections of every upstream; requests in flight
// finish on theirs. Caddy calls it when the configuration is replaced.
func (t *Transport) Cleanup() error {
	u := t.upstreams
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	for _, c := range u.clients {
		c.Close()
	}
	u.clients = nil
	return nil
}

// timeout turns a Caddy duration, where zero is no limit, into an
// fcgi.Client one, where zero is the default and negative no limit.
func timeout(d caddy.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return time.Duration(d)
}

// client returns the Client of the upstream at network and address, making
// it on first use: upstreams may come and go (dynamic upstreams), and Caddy,
// not the Client, chooses among them.
func (t *Transport) client(network, address string) (*fcgi.Client, error) {
	addr := address
	switch network {
	case "unix":
		addr = "unix:" + address
	case "tcp", "tcp4", "tcp6", "":
	default:
		return nil, fmt.Errorf("fcgikit: network %q: want tcp or unix", network)
	}
	u := t.upstreams
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, fcgi.ErrClientClosed
	}
	if c := u.clients[addr]; c != nil {
		return c, nil
	}
	mode, _ := t.multiplexMode()
	c := &fcgi.Client{
		Addr:                   addr,
		MaxConnsPerBackend:     t.MaxConns,
		MaxIdleConnsPerBackend: t.MaxIdleConns,
		IdleTimeout:            time.Duration(t.KeepaliveTimeout),
		DialTimeout:            time.Duration(t.DialTimeout),
		WriteTimeout:           timeout(t.WriteTimeout),
		ResponseHeaderTimeout:  timeout(t.ReadTimeout),
		ReadTimeout:            timeout(t.ReadTimeout),
		Multiplex:              mode,
		// Caddy sets failing upstreams aside itself (passive health
		// checks); the Client has one backend and must keep trying it.
		BackendCooldown: -1,
	}
	u.clients[addr] = c
	return c, nil
}

// RoundTrip sends r to the upstream Caddy chose for it and returns the
// application's response.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	// A NUL in the path could make PHP run a file that is not a script.
	if strings.Contains(r.URL.Path, "\x00") {
		return nil, caddyhttp.Error(http.StatusBadRequest, errors.New("invalid request path"))
	}
	network, address := "tcp", r.URL.Host
	if di, ok := reverseproxy.GetDialInfo(r.Context()); ok {
		network, address = di.Network, di.Address
	}
	c, err := t.client(network, address)
	if err != nil {
		return nil, err
	}

	req := &fcgi.Request{}
	var spool *spooled
	length := r.ContentLength
	switch {
	case r.Body == nil || r.Body == http.NoBody || length == 0:
		length = 0
	case length < 0:
		// PHP-FPM reads exactly CONTENT_LENGTH bytes of FCGI_STDIN: a body
		// of unknown length is read to its end first.
		spool, err = t.requestSpool(r)
		if err != nil {
			return nil, err
		}
		length = spool.size
		req.Body = spool.reader()
		req.GetBody = func() (io.Reader, error) { return spool.reader(), nil }
	default:
		body, err := t.sizedBody(r)
		if err != nil {
			return nil, err
		}
		req.Body = body
	}

	// As Caddy's transport: the Content-Length the client sent, and none
	// for a request without a body; for a spooled body, its length.
	contentLength := r.Header.Get("Content-Length")
	if spool != nil {
		contentLength = strconv.FormatInt(length, 10)
	}
	env, err := t.buildEnv(r, contentLength)
	if err != nil {
		spool.endAttempt()
		return nil, err
	}
	req.Params = env

	var stderr *stderrBuffer
	if t.CaptureStderr {
		stderr = new(stderrBuffer)
		req.Stderr = stderr
	}

	if c := t.logger.Check(zapcore.DebugLevel, "roundtrip"); c != nil {
		c.Write(zap.String("dial", address), zap.Object("env", loggableEnv(env)))
	}

	resp, err := c.Do(r.Context(), req)
	if err != nil {
		spool.endAttempt()
		var te *fcgi.TimeoutError
		if errors.Is(err, fcgi.ErrDial) || errors.As(err, &te) && te.Op == "dial" {
			// So that Caddy retries the request on another upstream
			// (lb_retries) and counts the failure against this one.
			return nil, reverseproxy.NewDialError(err)
		}
		return nil, err
	}

	hr := &http.Response{
		Status:        strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode),
		StatusCode:    resp.StatusCode,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        resp.Header,
		ContentLength: -1,
		Request:       r,
	}
	if cl := resp.Header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			hr.ContentLength = n
		}
	}
	var body io.Reader = resp.Body
	if hr.ContentLength < 0 {
		// reverse_proxy flushes after every write of a body of unknown
		// length. A response that has arrived whole, the common small
		// page, is read here instead: it gets its length and leaves in one
		// write. One still coming streams as the application flushes it.
		var n int64
		if n, body = readAhead(resp); n >= 0 {
			hr.ContentLength = n
			if r.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
				hr.Header.Set("Content-Length", strconv.FormatInt(n, 10))
			}
		}
	}
	rb := &responseBody{
		t:      t,
		body:   body,
		closer: resp.Body,
		spool:  spool,
		stderr: stderr,
		status: resp.StatusCode,
		uri:    r.RequestURI,
	}
	// reverse_proxy closes the body on every path it knows, but a handler
	// of handle_response that panics, or a module holding the response,
	// may not: the end of the request closes it, so that its connection
	// (a PHP-FPM worker) goes back to max_conns.
	rb.stop = context.AfterFunc(r.Context(), func() { rb.release() })
	hr.Body = rb
	return hr, nil
}

// sentVar is the request variable recording which body of known length an
// attempt began to send.
const sentVar = "fcgikit.body_sent"

// bodySent records that an attempt read from body, which a later attempt
// cannot send again.
type bodySent struct {
	body io.ReadCloser
	sent atomic.Bool // set by the body writer's goroutine
}

// errBodySent refuses a retry whose body of known length an earlier attempt
// streamed: what is left of it is not the body.
var errBodySent = errors.New("fcgikit: the request body went to an earlier attempt and cannot be sent again; request_buffers lets such requests be retried")

// sizedBody returns r's body of known length to stream. reverse_proxy
// retries with the same body, read by the first attempt: the retry is
// refused before anything reaches the upstream, and a body that ends short
// of its length fails the request rather than reaching the application as
// a whole one. A retry with a fresh body (request_buffers gives one per
// attempt) streams it.
func (t *Transport) sizedBody(r *http.Request) (io.Reader, error) {
	ctx := r.Context()
	bs, _ := caddyhttp.GetVar(ctx, sentVar).(*bodySent)
	if bs != nil && sameBody(bs.body, r.Body) {
		if bs.sent.Load() {
			return nil, errBodySent
		}
	} else {
		bs = &bodySent{body: r.Body}
		caddyhttp.SetVar(ctx, sentVar, bs)
	}
	return &sizedBody{r: r.Body, left: r.ContentLength, sent: &bs.sent}, nil
}

// sameBody reports whether a and b are the same body; values of a type
// that == cannot compare are taken as different.
func sameBody(a, b io.ReadCloser) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta != nil && ta.Comparable() && a == b
}

// sizedBody reads a body of known length: left bytes, and an error if it
// ends before.
type sizedBody struct {
	r    io.Reader
	left int64
	sent *atomic.Bool
}

func (b *sizedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	if n > 0 {
		b.sent.Store(true)
	}
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// maxReadAhead bounds what readAhead holds of a response.
const maxReadAhead = 64 << 10

// readAhead reads resp's body while it is in hand, up to maxReadAhead, and
// returns its length when that reached its end, else -1, with a reader of
// the whole body.
func readAhead(resp *fcgi.Response) (int64, io.Reader) {
	if !resp.Buffered() {
		return -1, resp.Body
	}
	buf := make([]byte, 0, 4<<10)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= maxReadAhead {
				break
			}
			buf = slices.Grow(buf, len(buf))
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return int64(len(buf)), bytes.NewReader(buf)
		}
		if err != nil || !resp.Buffered() {
			break // the error comes again from resp.Body
		}
	}
	return -1, io.MultiReader(bytes.NewReader(buf), resp.Body)
}

// responseBody is the response body Caddy copies to the client. Closing it
// ends the attempt: it gives the connection back, logs the captured
// FCGI_STDERR and ends the attempt's hold on the spooled request body.
type responseBody struct {
	t      *Transport
	body   io.Reader // what readAhead left of closer
	closer io.ReadCloser
	spool  *spooled
	stderr *stderrBuffer
	status int
	uri    string
	stop   func() bool // stops the release at the request's end

	// The release at the request's end runs on its own goroutine, maybe
	// during a Read: fcgi's Response.Body allows that Close, as net/http's
	// does, and wakes the Read.
	once   sync.Once
	closed atomic.Bool
	err    error // set by release, in once
}

func (b *responseBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.body.Read(p)
}

func (b *responseBody) Close() error {
	b.stop()
	return b.release()
}

// release ends the attempt, once: Close, or the request's end.
func (b *responseBody) release() error {
	b.once.Do(func() {
		b.closed.Store(true)
		b.err = b.closer.Close()
		b.spool.endAttempt()
		b.logStderr()
	})
	return b.err
}

// logStderr logs what the application wrote to FCGI_STDERR, if captured.
func (b *responseBody) logStderr() {
	if b.stderr == nil {
		return
	}
	b.stderr.mu.Lock()
	msg, truncated := b.stderr.buf.String(), b.stderr.truncated
	b.stderr.mu.Unlock()
	if msg == "" {
		return
	}
	level := zapcore.WarnLevel
	if b.status >= 400 {
		level = zapcore.ErrorLevel
	}
	if c := b.t.logger.Check(level, "stderr"); c != nil {
		c.Write(zap.String("uri", b.uri), zap.String("body", msg), zap.Bool("truncated", truncated))
	}
}

// maxStderr bounds the FCGI_STDERR output kept for the log per request.
const maxStderr = 64 << 10

// stderrBuffer keeps the first maxStderr bytes of a request's FCGI_STDERR.
type stderrBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	truncated bool
}

func (s *stderrBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	room := maxStderr - s.buf.Len()
	if len(p) > room {
		s.buf.Write(p[:room])
		s.truncated = true
	} else {
		s.buf.Write(p)
	}
	return len(p), nil
}

// loggableEnv logs an environment without the credentials it may hold.
type loggableEnv map[string]string

func (env loggableEnv) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for k, v := range env {
		switch k {
		case "HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION":
			v = ""
		}
		enc.AddString(k, v)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner  = (*Transport)(nil)
	_ caddy.CleanerUpper = (*Transport)(nil)
	_ http.RoundTripper  = (*Transport)(nil)
)

package fcgi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi/internal/defaults"
	"github.com/fcgikit/fcgi/internal/wire"
)

// MultiplexMode says whether a [Client] runs several requests at once on one
// connection.
type MultiplexMode int

const (
	// MultiplexOff runs one request at a time on each connection, with
	// request ID 1, as nginx does. It is the zero value, and what PHP-FPM
	// needs.
	MultiplexOff MultiplexMode = iota
	// MultiplexAuto asks each backend with FCGI_GET_VALUES, on a connection
	// of its own and within ProbeTimeout, and multiplexes when it answers
	// FCGI_MPXS_CONNS=1. Until the answer, and when the backend says 0 or
	// does not answer, it behaves as MultiplexOff.
	MultiplexAuto
	// MultiplexOn multiplexes without asking. A request whose Body is not
	// read holds up the others on its connection once a few of its records
	// are queued. An abandoned request is aborted with FCGI_ABORT_REQUEST,
	// and its ID is reused once the application ends it; an application that
	// takes more than 2 seconds to do so costs that request only: the
	// connection takes no new request and closes when those on it end.
	MultiplexOn
)

// defaultAbortGrace is how long a multiplexed connection waits for
// END_REQUEST after sending FCGI_ABORT_REQUEST before it stops taking new
// requests.
const defaultAbortGrace = 2 * time.Second

// A Client sends requests to FastCGI applications, the way a web server does:
// it keeps connections open (FCGI_KEEP_CONN) and reuses them, bounds them per
// backend, balances several backends, and optionally multiplexes.
//
// The zero value is usable once Addr or Backends is set. Fields must not be
// changed after the first request. A Client is safe for concurrent use by
// multiple goroutines and should be reused rather than created per request.
//
// A zero limit or timeout means the default its field states, a negative
// one none. By default a request fails with a [*TimeoutError] (a 504 from
// [Gateway]) when the application stops reading the request for a minute,
// has not started its response a minute after it had the whole request, or
// pauses its response for a minute, as behind nginx.
//
// # Retries
//
// A request is sent again, once, only when it cannot have run:
//
//   - On a new connection, when a reused one fails before any byte of the
//     response arrives, if its body is replayable (nil, [http.NoBody], or
//     [Request.GetBody] set) and it is idempotent ([Request.Idempotent]) or
//     its very first write was reset, which proves the backend read none of
//     it. A later reset proves nothing: a POST is never run twice.
//   - On a new connection, idempotent or not, when a reused connection
//     answers FCGI_OVERLOADED, as an application shutting down gracefully
//     does.
//   - On a connection of its own, when a multiplexed connection answers
//     FCGI_CANT_MPX_CONN; the backend is no longer multiplexed.
//   - On the next healthy backend, when the dial fails, or, for an idempotent
//     request, when its new connection closes before any response byte.
//
// Idle connections are checked before use, and the client learns after how
// many responses a backend closes its connections (PHP-FPM's
// pm.max_requests) and then retires them at that count itself, so that no
// request is sent on a connection about to close.
//
// # Backends
//
// Each request goes to the backend with the fewest requests in flight. A
// backend whose dial fails, or whose new connection is reset before
// answering, is set aside for BackendCooldown; when every backend is set
// aside, requests go to the one that is due back first.
//
// A backend given as "dns:host:port" stands for every address host resolves
// to (A and AAAA records) on port, and "srv:name" for the targets of name's
// SRV records with the lowest priority, on their ports: a Kubernetes
// headless Service's pods, for example. The names are resolved again every
// ResolveInterval. An address that leaves the set takes no new request; the
// requests running on it finish, and its connections close. When a lookup
// fails, or answers no address, the name keeps its last good set.
//
// With HealthCheckPath set, each backend is also sent a request for that
// path every HealthCheckInterval, on a connection of its own; a backend that
// fails it is set aside until it passes one.
type Client struct {
	// Addr is the backend: "unix:/path/to/socket" or "host:port".
	Addr string

	// Backends lists more backends, in the same forms as Addr, used together
	// with Addr.
	Backends []string

	// Dial, if not nil, makes connections instead of a net.Dialer. network is
	// "unix" or "tcp".
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// MaxConnsPerBackend bounds the connections to each backend; requests
	// above it wait, in order, until a connection is free or their context
	// ends. With PHP-FPM set it to pm.max_children: every open connection
	// pins a worker. Without a limit, a new connection may wait in PHP-FPM's
	// accept queue for a worker a kept one pins; the client then closes
	// connections as they finish instead of keeping them, which is correct
	// but slower than a limit. Zero and negative mean no limit.
	MaxConnsPerBackend int

	// MaxIdleConnsPerBackend bounds the idle connections kept for reuse per
	// backend. Zero means 16; negative, none: keep-alive is off
	// (FCGI_KEEP_CONN is not set and the backend closes each connection).
	MaxIdleConnsPerBackend int

	// IdleTimeout closes a connection idle this long. Zero means 30 s;
	// negative, no limit.
	IdleTimeout time.Duration

	// MaxLifetime retires a connection this long after it was opened: it is
	// not reused after that. Zero and negative mean no limit.
	MaxLifetime time.Duration

	// DialTimeout bounds making a connection. Zero means 10 s; negative, no
	// limit (only the context bounds it).
	DialTimeout time.Duration

	// WriteTimeout bounds each write of the request: the header records, then
	// each piece of the body, so an application that stops reading is given
	// up on. Zero means 1 minute; negative, no limit.
	WriteTimeout time.Duration

	// ResponseHeaderTimeout bounds the wait for the first STDOUT record,
	// counted from when the whole request, its body included, has been sent,
	// so that a slow upload does not eat into it. Zero means 1 minute, as
	// nginx's fastcgi_read_timeout; negative, no limit.
	ResponseHeaderTimeout time.Duration

	// ReadTimeout bounds each wait for the next response record once the
	// response has begun: a stream that pauses longer, such as server-sent
	// events, needs a longer one. Zero means 1 minute; negative, no limit.
	ReadTimeout time.Duration

	// Multiplex selects whether requests share connections; the zero value is
	// MultiplexOff.
	Multiplex MultiplexMode

	// MaxMultiplexedRequests bounds the requests in flight on one multiplexed
	// connection. Zero means the backend's FCGI_MAX_REQS when it reported
	// one, else 64; negative, no limit but the 65535 request IDs.
	MaxMultiplexedRequests int

	// ProbeTimeout bounds the FCGI_GET_VALUES exchange of MultiplexAuto and
	// of [Client.GetValues]. Zero means 2 s; negative, no limit (only the
	// context bounds it: some PHP-FPM versions never answer).
	ProbeTimeout time.Duration

	// BackendCooldown is how long a failing backend is set aside. Zero means
	// 10 s; negative, none: failing backends are not set aside.
	BackendCooldown time.Duration

	// MaxResponseHeaderBytes bounds the CGI response header. Zero means
	// 64 KiB; negative, no limit.
	MaxResponseHeaderBytes int

	// ErrorLog receives connection-level problems (failed probes, backends
	// set aside, protocol errors). Nil means slog.Default().
	ErrorLog *slog.Logger

	// Resolver looks up the backends given as "dns:" and "srv:" names. Nil
	// means net.DefaultResolver; a Resolver with PreferGo and Dial set
	// queries a DNS server of the caller's choice.
	Resolver *net.Resolver

	// ResolveInterval is how often "dns:" and "srv:" names are resolved
	// again. net.Resolver does not report the records' TTLs: set it to the
	// TTL of the records (Kubernetes' CoreDNS answers with 5 s). Zero means
	// 5 s; negative, never: the names are resolved once.
	ResolveInterval time.Duration

	// HealthCheckPath, when not empty, turns active health checks on: every
	// HealthCheckInterval each backend is sent a GET for this path
	// (SCRIPT_NAME, SCRIPT_FILENAME and REQUEST_URI), as PHP-FPM's ping.path
	// expects ("/ping"), on a connection of its own, never through the
	// connections or the queue of requests. A backend that does not answer
	// with status 200 and a body containing HealthCheckExpect within the
	// interval is set aside until a check passes; a check that passes also
	// ends a cooldown that failed requests started (see BackendCooldown). A
	// check that times out while the backend has requests in flight counts
	// as busy, not failed: PHP-FPM answers the ping from a worker. The
	// checks start with the Client's first request.
	HealthCheckPath string

	// HealthCheckExpect is text the health check's answer must contain, such
	// as PHP-FPM's ping.response ("pong"). Empty means any body.
	HealthCheckExpect string

	// HealthCheckInterval is how often each backend is checked, and how long
	// a check may take. Zero means 10 s.
	HealthCheckInterval time.Duration

	// Observer, if not nil, is told the timings and outcome of each request.
	Observer Observer

	abortGrace time.Duration // zero means defaultAbortGrace; tests shorten it

	initOnce sync.Once
	backends []*backend
	closed   atomic.Bool
	rr       atomic.Uint32
	wg       sync.WaitGroup // background probes

	dyn       *resolveState // nil without "dns:" or "srv:" backends
	loops     sync.WaitGroup
	stopLoops []context.CancelFunc
}

func (c *Client) init() {
	c.initOnce.Do(func() {
		var addrs []string
		if c.Addr != "" {
			addrs = append(addrs, c.Addr)
		}
		addrs = append(addrs, c.Backends...)
		var names []string
		for _, a := range addrs {
			if isDNSAddr(a) {
				names = append(names, a)
				continue
			}
			c.backends = append(c.backends, newBackend(c, a))
		}
		if names != nil {
			c.startResolver(names)
		}
		c.startHealthChecks()
	})
}

func (c *Client) logger() *slog.Logger {
	if c.ErrorLog != nil {
		return c.ErrorLog
	}
	return slog.Default()
}

func (c *Client) maxIdle() int {
	if c.MaxIdleConnsPerBackend == 0 {
		return defaults.ClientMaxIdleConnsPerBackend
	}
	return max(c.MaxIdleConnsPerBackend, 0)
}

// maxMultiplexed resolves MaxMultiplexedRequests for a backend that reported
// FCGI_MAX_REQS (0 when it did not), within the 65535 request IDs.
func (c *Client) maxMultiplexed(reported int) int {
	def := defaults.ClientMaxMultiplexedRequests
	if reported > 0 {
		def = reported
	}
	return min(limitOrDefault(c.MaxMultiplexedRequests, def), 65535)
}

// splitAddr turns "unix:/path" or "host:port" into a network and address.
func splitAddr(addr string) (network, address string) {
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", rest
	}
	return "tcp", addr
}

// dial makes one connection to addr within DialTimeout.
func (c *Client) dial(ctx context.Context, addr string) (net.Conn, error) {
	network, address := splitAddr(addr)
	dctx := ctx
	if d := c.dialTimeout(); d > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	var nc net.Conn
	var err error
	if c.Dial != nil {
		nc, err = c.Dial(dctx, network, address)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(dctx, network, address)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if dctx.Err() != nil || isTimeout(err) {
			return nil, &TimeoutError{Op: "dial", Addr: addr}
		}
		return nil, &dialError{addr: addr, err: err}
	}
	return nc, nil
}

// dialError marks a failure to connect, which is safe to retry elsewhere.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string {
	// net.Dial's errors name the operation and the address already.
	var oe *net.OpError
	if errors.As(e.err, &oe) && oe.Op == "dial" && (oe.Addr != nil || oe.Source != nil) {
		return "fcgi: " + e.err.Error()
	}
	return "fcgi: dial " + e.addr + ": " + e.err.Error()
}
func (e *dialError) Unwrap() error { return e.err }

// Is lets callers recognise a failure to connect with errors.Is(err,
// ErrDial), whatever Client.Dial returned.
func (e *dialError) Is(target error) bool { return target == ErrDial }

// Do sends req to a backend and returns the response once its CGI header has
// arrived. The caller must close the response Body.
//
// Cancelling ctx abandons the request at any point, also while the Body is
// being read: on a multiplexed connection with FCGI_ABORT_REQUEST, otherwise
// by closing the connection. Do then returns, and Body.Read then fails with,
// ctx.Err().
//
// Interim header blocks the application sends before its final header, such
// as 103 Early Hints (see docs/early-hints.md), are not the response: as
// net/http's Transport does with 1xx responses, Do passes each to the
// Got1xxResponse hook of the [net/http/httptrace.ClientTrace] in ctx, if any, whose
// error ends the request, and reads on. An application may send at most 16,
// whose bytes count against MaxResponseHeaderBytes with the final header's.
//
// A non-nil error is a [*TimeoutError], a [*ProtocolStatusError], ctx's
// error, or an error wrapping one of the package's sentinels
// ([ErrBackendClosed], [ErrMalformedResponse], ...) or the network error. A
// multiplexed connection the client closes itself, because a backend stopped
// reading it, fails its requests with an error saying so, never with
// ErrBackendClosed.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	var tr doTrace
	if c.Observer != nil {
		tr.start = time.Now()
	}
	resp, err := c.do(ctx, req, &tr)
	if c.Observer != nil {
		c.doneDo(ctx, &tr, resp, err)
	}
	return resp, err
}

func (c *Client) do(ctx context.Context, req *Request, tr *doTrace) (*Response, error) {
	c.init()
	if c.closed.Load() {
		return nil, ErrClientClosed
	}
	if err := c.waitResolved(ctx); err != nil {
		return nil, err
	}
	if len(c.current()) == 0 {
		return nil, ErrNoBackend
	}
	body, data := req.Body, req.Data
	retried := false
	var avoid *backend
	dialFailures := 0
	forceNew := false
	for {
		b := c.pick(avoid)
		tr.b = b
		cl, err := b.acquire(ctx, forceNew, &tr.wait)
		if err == errBackendGone {
			continue
		}
		b.stats.requests.Add(1)
		if err != nil {
			b.stats.count(outcomeOf(ctx, err))
			var de *dialError
			// acquire times out only dialling: its queue ends with ctx.
			if (errors.As(err, &de) || isTimeout(err)) && dialFailures+1 < len(c.current()) && ctx.Err() == nil {
				dialFailures++
				avoid = b
				b.stats.retries.Add(1)
				tr.retried = true
				continue
			}
			return nil, err
		}
		resp, err := cl.roundTrip(ctx, req, body, data)
		if err == nil {
			return resp, nil
		}
		b.stats.count(outcomeOf(ctx, err))
		if retried || ctx.Err() != nil || !req.replayable() {
			return nil, err
		}
		switch {
		case errors.Is(err, ErrCantMpxConn):
			forceNew = true
		case cl.reused && errors.Is(err, ErrOverloaded):
			// Refused, so not run: a kept connection the application is
			// closing (a graceful shutdown) answers so. A new connection may
			// reach a process that is not; another backend, if any, is surer
			// not to be overloaded.
			forceNew = true
			if len(c.current()) > 1 {
				avoid = cl.b
			}
		case cl.reused && !cl.gotRecord && (req.idempotent() || cl.unsent && isReset(err)) && !isTimeout(err):
			// A request that may have run (the backend read it, then reset)
			// is retried only when running it twice is harmless.
			forceNew = true
		case !cl.reused && !cl.gotRecord && req.idempotent() && errors.Is(err, ErrBackendClosed) && len(c.current()) > 1:
			// A new connection failed: the backend was set aside; try
			// another.
			avoid = cl.b
		default:
			return nil, err
		}
		retried = true
		b.stats.retries.Add(1)
		tr.retried = true
		if req.GetBody != nil && body != nil && body != http.NoBody {
			if body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
		if req.GetData != nil && data != nil {
			if data, err = req.GetData(); err != nil {
				return nil, err
			}
		}
	}
}

// isReset reports whether err is a connection reset or a broken pipe. When it
// comes from the first write of a request on a reused connection, the backend
// closed before reading anything of it, as a PHP-FPM worker leaving after
// pm.max_requests does.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// pick chooses the backend with the fewest requests in flight among those not
// set aside, avoiding avoid when there is another choice.
func (c *Client) pick(avoid *backend) *backend {
	backends := c.current()
	if len(backends) == 1 {
		return backends[0]
	}
	now := time.Now()
	start := int(c.rr.Add(1))
	var best, bestDown *backend
	bestN := int64(-1)
	var bestUntil time.Time
	for i := range backends {
		b := backends[(start+i)%len(backends)]
		if b == avoid {
			continue
		}
		until := b.asideUntil()
		if until.After(now) {
			if bestDown == nil || until.Before(bestUntil) {
				bestDown, bestUntil = b, until
			}
			continue
		}
		if n := b.inflight.Load(); bestN < 0 || n < bestN {
			best, bestN = b, n
		}
	}
	if best != nil {
		return best
	}
	if bestDown != nil {
		return bestDown
	}
	return avoid
}

// Close closes idle connections, ends background probes and makes later calls
// to Do fail with [ErrClientClosed]. Requests in flight run to their end;
// their connections are closed then.
func (c *Client) Close() error {
	c.init()
	c.closed.Store(true)
	c.stopBackground()
	for _, b := range c.current() {
		b.closeIdle()
	}
	c.wg.Wait()
	return nil
}

func (c *Client) graceAfterAbort() time.Duration {
	return durationOrDefault(c.abortGrace, defaultAbortGrace)
}

// The timeouts in force, resolved by the Server's rule (durationOrDefault):
// zero for none.
func (c *Client) dialTimeout() time.Duration {
	return durationOrDefault(c.DialTimeout, defaults.ClientDialTimeout)
}
func (c *Client) writeTimeout() time.Duration {
	return durationOrDefault(c.WriteTimeout, defaults.ClientWriteTimeout)
}
func (c *Client) responseHeaderTimeout() time.Duration {
	return durationOrDefault(c.ResponseHeaderTimeout, defaults.ClientResponseHeaderTimeout)
}
func (c *Client) readTimeout() time.Duration {
	return durationOrDefault(c.ReadTimeout, defaults.ClientReadTimeout)
}
func (c *Client) idleTimeout() time.Duration {
	return durationOrDefault(c.IdleTimeout, defaults.ClientIdleTimeout)
}
func (c *Client) probeTimeout() time.Duration {
	return durationOrDefault(c.ProbeTimeout, defaults.ClientProbeTimeout)
}
func (c *Client) backendCooldown() time.Duration {
	return durationOrDefault(c.BackendCooldown, defaults.ClientBackendCooldown)
}

// GetValues asks the backend at addr for the values of the named variables
// with FCGI_GET_VALUES (§4.1), on a connection of its own that is closed
// afterwards, and returns those the backend reported. With no names it asks
// for FCGI_MAX_CONNS, FCGI_MAX_REQS and FCGI_MPXS_CONNS. The exchange is
// bounded by ctx and by ProbeTimeout; a backend that does not answer in time
// gives a [*TimeoutError], one that answers UNKNOWN_TYPE an error wrapping
// [ErrProtocol].
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

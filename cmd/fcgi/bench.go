package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi/cmd/fcgi/internal/histo"
	"github.com/fcgikit/fcgi/internal/cgihdr"
	"github.com/fcgikit/fcgi/internal/rawconn"
	"github.com/fcgikit/fcgi/internal/wire"
)

var benchCmd = &command{
	name:    "bench",
	summary: "load-test an application over FastCGI, without a web server",
	usage: `
Usage: fcgi bench [flags] ADDR

Bench sends requests straight to a FastCGI application and reports
throughput, latency percentiles (p50, p90, p99, max) and a latency
histogram. With no web server in between, it measures the application.

By default each of -c connections does what nginx does with
fastcgi_keep_conn: one request at a time, request ID 1, KEEP_CONN set.
--no-keep-conn opens a connection per request (nginx without upstream
keepalive). --mpx N keeps N requests in flight on each connection with
distinct IDs, as HAProxy does with mpxs-conns; the application should
report FCGI_MPXS_CONNS=1.

The run stops after -n requests or --duration, whichever comes first
(--duration defaults to 10s when -n is not given). --rate caps the total
request rate; latency is then measured from each request's scheduled
start, so a stalled application is not hidden (no coordinated omission).

While it runs, a progress line is shown on stderr if stderr is a terminal.
Ctrl-C (SIGINT) or SIGTERM stops the requests in flight at once and prints
the report so far, marked as interrupted.

Before the run, bench asks the application for FCGI_MAX_CONNS and
FCGI_MAX_REQS (FCGI_GET_VALUES, waiting at most a second) and warns when -c
(times --mpx) is more than the application serves at once: the extra
requests wait for a worker, and latency then measures the queue.
PHP-FPM tells neither, and takes no more kept connections than
pm.max_children: the report warns when some connections got almost no
responses, having waited in its queue.

A response whose HTTP status is not 2xx or 3xx counts as failed, as does
a request that got no valid response (an error: connect, timeout,
connection closed, protocol error); latency covers every response.

Examples:

	fcgi bench -c 8 --duration 10s unix:/run/php/php8.2-fpm.sock --path /index.php --root /srv/app
	fcgi bench -c 2 --mpx 32 -n 100000 127.0.0.1:9000
	fcgi bench --rate 500 --duration 30s --json unix:/run/app.sock > result.json

Exit status: 0 if every request succeeded; 1 if some failed (errors, or
HTTP statuses other than 2xx and 3xx); 2 for a bad command line or
address; 3 if no request got an answer because the application could not
be reached or closed the connections; 4 if the application broke the
protocol (or refused requests with OVERLOADED...) or is an HTTP server;
5 if every request timed out; 130 when interrupted by Ctrl-C (143 by
SIGTERM).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		b := &bencher{}
		fs.IntVar(&b.conns, "c", 10, "connections")
		fs.IntVar(&b.mpx, "mpx", 0, "requests in flight per connection, with distinct IDs (0: one, ID 1, like nginx)")
		fs.BoolVar(&b.noKeep, "no-keep-conn", false, "a new connection per request (KEEP_CONN off)")
		fs.Int64Var(&b.n, "n", 0, "stop after this many requests (0: no count limit)")
		dur := fs.Duration("duration", 0, "stop after this long (default 10s without -n)")
		fs.Float64Var(&b.rate, "rate", 0, "total requests per second (0: as fast as possible)")
		fs.DurationVar(&b.timeout, "timeout", 10*time.Second, "per-request timeout")
		fs.StringVar(&b.rp.method, "X", "GET", "request `method`")
		fs.StringVar(&b.rp.target, "path", "/", "request `path`, with an optional ?query")
		fs.StringVar(&b.rp.root, "root", "/var/www/html", "document root, for SCRIPT_FILENAME")
		fs.Var(&b.rp.extra, "p", "extra FastCGI parameter `NAME=VALUE` (repeatable)")
		var headers headerList
		fs.Var(&headers, "H", "request header `Name: value` (repeatable)")
		bodyArg := fs.String("body", "", "request body: a string, or @file")
		asJSON := fs.Bool("json", false, "print the result as JSON")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usageError(e, fs, "want exactly one ADDR")
			}
			if b.conns < 1 || b.mpx < 0 || b.mpx > 65535 || b.n < 0 || b.rate < 0 {
				return usageError(e, fs, "-c, --mpx, -n and --rate must be positive")
			}
			if b.mpx > 0 && b.noKeep {
				return usageError(e, fs, "--mpx needs kept connections; drop --no-keep-conn")
			}
			b.addr = args[0]
			b.duration = *dur
			if b.duration == 0 && b.n == 0 {
				b.duration = 10 * time.Second
			}
			if strings.HasPrefix(*bodyArg, "@") {
				var err error
				if b.body, err = os.ReadFile((*bodyArg)[1:]); err != nil {
					return err
				}
			} else {
				b.body = []byte(*bodyArg)
			}
			b.rp.header = headers
			b.rp.body = int64(len(b.body))
			if len(b.body) == 0 && b.rp.method == "GET" {
				b.rp.body = -1
			}
			kv, err := b.rp.pairs()
			if err != nil {
				return usageError(e, fs, "%v", err)
			}
			b.params = encodePairs(kv)
			// Fail fast with a clear error on a wrong address.
			c, err := dial(ctx, b.addr, b.timeout)
			if err != nil {
				return err
			}
			c.Close()
			if err := b.askLimits(ctx, e); err != nil {
				return err
			}

			var stopProgress func()
			if isTerminal(e.stderr) && !*asJSON {
				stopProgress = b.progress(e.stderr)
			}
			r := b.run(ctx)
			if stopProgress != nil {
				stopProgress()
			}
			if *asJSON {
				if err := printJSON(e.stdout, r); err != nil {
					return err
				}
			} else {
				b.print(e.stdout, r)
			}
			return b.verdict(ctx, r)
		}
	},
}

// askLimits learns how many connections and requests the application
// serves at once, when it answers FCGI_GET_VALUES within a second, and
// warns when the run is to keep more in flight: those wait in the
// application's queue, and their latency is the queue's. An application
// that turns out to be an HTTP server ends the run before it starts.
func (b *bencher) askLimits(ctx context.Context, e *env) error {
	kv, err := getValues(ctx, e, b.addr, []string{wire.ValueMaxConns, wire.ValueMaxReqs}, min(b.timeout, time.Second))
	var he *wire.HTTPReplyError
	if errors.As(err, &he) {
		return err
	}
	if err != nil {
		e.log.Debug("no answer to FCGI_GET_VALUES; the application's limits are unknown", "err", err)
		return nil
	}
	for _, p := range kv {
		n, err := strconv.Atoi(p[1])
		if err != nil || n <= 0 {
			continue
		}
		switch p[0] {
		case wire.ValueMaxConns:
			b.maxConns = n
		case wire.ValueMaxReqs:
			b.maxReqs = n
		}
	}
	inflight := b.conns * max(b.mpx, 1)
	switch {
	case b.maxConns > 0 && b.conns > b.maxConns:
		e.log.Warn("more connections than the application serves at once: the extra ones wait for a worker, and latency then measures the queue",
			"connections", b.conns, wire.ValueMaxConns, b.maxConns)
	case b.maxReqs > 0 && inflight > b.maxReqs:
		e.log.Warn("more requests in flight than the application serves at once: the extra ones wait for a worker, and latency then measures the queue",
			"in_flight", inflight, wire.ValueMaxReqs, b.maxReqs)
	}
	return nil
}

// verdict is the exit status of a run, with the message that explains it.
func (b *bencher) verdict(ctx context.Context, r benchResult) error {
	if r.Interrupted {
		code := 128 + int(syscall.SIGINT)
		if sc := interruption(ctx); sc != nil {
			code = sc.exitCode()
		}
		return &exitError{code: code, err: fmt.Errorf("%s after %.2fs: the report covers the requests until then", context.Cause(ctx), r.Seconds)}
	}
	var protocol, timeouts int64
	var kinds []string
	for k, n := range r.ErrorKinds {
		switch {
		case k == errBenchTimeout.Error():
			timeouts += n
		case protocolKind(k):
			protocol += n
			kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
		}
	}
	sort.Strings(kinds)
	answered := r.OK + r.HTTPErrors
	switch {
	case protocol > 0:
		return exitf(exitProtocol, "%d of %d requests broke the FastCGI protocol or were refused (%s)", protocol, r.Requests, strings.Join(kinds, ", "))
	case answered == 0 && r.Errors > 0 && timeouts == r.Errors:
		return exitf(exitBusy, "every request timed out (--timeout %v): the application is busy or stuck", b.timeout)
	case answered == 0 && r.Errors > 0:
		return exitf(exitUnreachable, "no request got an answer: %s", joinCounts(r.ErrorKinds, ""))
	case r.HTTPErrors > 0:
		what := fmt.Sprintf("%d of %d responses", r.HTTPErrors, answered)
		if r.HTTPErrors == answered {
			what = "every response"
		}
		return exitf(exitFail, "%s had an HTTP status other than 2xx or 3xx (%s): check --path and --root; these count as failed", what, joinCounts(r.failedStatuses(), "HTTP "))
	case r.Errors > 0:
		return exitf(exitFail, "%d of %d requests failed (%s)", r.Errors, r.Requests, joinCounts(r.ErrorKinds, ""))
	}
	return nil
}

// protocolKind reports whether an error kind of the report is the
// application breaking the protocol or refusing the request.
func protocolKind(kind string) bool {
	switch kind {
	case errBenchProtocol.Error(), errBenchHeader.Error(),
		wire.StatusCantMpxConn.String(), wire.StatusOverloaded.String(), wire.StatusUnknownRole.String():
		return true
	}
	return strings.HasPrefix(kind, "STATUS(")
}

// joinCounts formats counts by name as "prefixNAME: N, ...", by name.
func joinCounts(m map[string]int64, prefix string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s%s: %d", prefix, k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// headerList is a repeatable -H "Name: value" flag.
type headerList [][2]string

func (h *headerList) String() string { return fmt.Sprint(*h) }

func (h *headerList) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("%q: want Name: value", s)
	}
	*h = append(*h, [2]string{strings.TrimSpace(name), strings.TrimSpace(value)})
	return nil
}

type bencher struct {
	addr     string
	maxConns int // FCGI_MAX_CONNS, 0 when unknown
	maxReqs  int // FCGI_MAX_REQS, 0 when unknown
	conns    int
	mpx      int
	noKeep   bool
	n        int64
	duration time.Duration
	rate     float64
	timeout  time.Duration
	rp       requestParams
	params   []byte
	body     []byte

	// halt is the context of the whole command: its end (a signal)
	// interrupts the run, cutting the requests in flight.
	halt    context.Context
	start   time.Time
	stopAt  time.Time // zero: none
	issued  atomic.Int64
	done    atomic.Int64
	failed  atomic.Int64
	cut     atomic.Int64 // requests in flight when the run was interrupted
	mu      sync.Mutex
	total   histo.Histogram
	errs    map[string]int64
	status  map[int]int64
	bytes   int64
	elapsed time.Duration
	// perConn is each worker's tally, for the starved connections of
	// the report.
	perConn []connTally
}

// connTally is what one worker's connections got: how many responses,
// and the longest wait for one.
type connTally struct {
	n       uint64
	longest time.Duration
}

// benchResult is the outcome of a run, as printed by --json.
type benchResult struct {
	Target      string  `json:"target"`
	Mode        string  `json:"mode"`
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"`
	// Interrupted is set when a signal stopped the run; Cut counts the
	// requests then in flight, which are in no other count.
	Interrupted bool  `json:"interrupted,omitempty"`
	Cut         int64 `json:"cut,omitempty"`
	// MaxConns and MaxReqs are the application's FCGI_MAX_CONNS and
	// FCGI_MAX_REQS, when it told them.
	MaxConns int `json:"fcgi_max_conns,omitempty"`
	MaxReqs  int `json:"fcgi_max_reqs,omitempty"`
	// Starved counts the connections that got under a tenth of the
	// responses of the median one: the application served fewer
	// connections at once than -c, and theirs waited in its queue.
	Starved int `json:"starved_connections,omitempty"`
	// Unsent counts the requests --rate scheduled before the end of
	// --duration that were never sent, the connections being busy: the
	// rate was not reached.
	Unsent int64 `json:"unsent,omitempty"`
	// Requests = OK + HTTPErrors + Errors; Failed = HTTPErrors + Errors.
	Requests   int64            `json:"requests"`
	OK         int64            `json:"ok"`     // responses with a 2xx or 3xx status
	Failed     int64            `json:"failed"` // requests that did not succeed
	HTTPErrors int64            `json:"http_errors"`
	Errors     int64            `json:"errors"` // requests with no valid response
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	Statuses   map[string]int64 `json:"statuses"`
	RPS        float64          `json:"responses_per_second"`
	Bytes      int64            `json:"stdout_bytes"`
	Latency    map[string]int64 `json:"latency_us"`
	Histogram  []benchBar       `json:"histogram"`
}

// failedStatuses returns the counts of the HTTP statuses that count as
// failed: any but 2xx and 3xx.
func (r *benchResult) failedStatuses() map[string]int64 {
	m := map[string]int64{}
	for k, v := range r.Statuses {
		if !okStatus(k) {
			m[k] = v
		}
	}
	return m
}

// okStatus reports whether an HTTP status counts as success: 2xx or 3xx.
func okStatus(code string) bool {
	return len(code) == 3 && (code[0] == '2' || code[0] == '3')
}

type benchBar struct {
	FromUS int64  `json:"from_us"`
	ToUS   int64  `json:"to_us"`
	Count  uint64 `json:"count"`
}

// ticket waits for the next request's turn and returns its scheduled start
// time, or false when the run is over.
func (b *bencher) ticket(ctx context.Context) (time.Time, bool) {
	i := b.issued.Add(1) - 1
	if b.n > 0 && i >= b.n || ctx.Err() != nil {
		return time.Time{}, false
	}
	now := time.Now()
	if !b.stopAt.IsZero() && !now.Before(b.stopAt) {
		// Requests --rate scheduled before the end but not yet sent
		// (the connections were busy) stay unsent: the run ends on
		// time, and the report counts them.
		return time.Time{}, false
	}
	due := now
	if b.rate > 0 {
		due = b.start.Add(time.Duration(float64(i) / b.rate * float64(time.Second)))
	}
	if !b.stopAt.IsZero() && !due.Before(b.stopAt) {
		return time.Time{}, false
	}
	if wait := due.Sub(now); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
	return due, true
}

// stats is one worker's tally, merged into the bencher at its end.
type stats struct {
	h      histo.Histogram
	errs   map[string]int64
	status map[int]int64
	bytes  int64
}

func (s *stats) fail(b *bencher, kind string) {
	if b.halt.Err() != nil {
		// Cut short by the interruption: not the application's failure.
		b.cut.Add(1)
		return
	}
	if s.errs == nil {
		s.errs = map[string]int64{}
	}
	s.errs[kind]++
	b.failed.Add(1)
}

func (s *stats) ok(b *bencher, d time.Duration, status int, n int64) {
	s.h.Record(d)
	if s.status == nil {
		s.status = map[int]int64{}
	}
	s.status[status]++
	s.bytes += n
	b.done.Add(1)
}

func (b *bencher) merge(s *stats) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total.Merge(&s.h)
	b.perConn = append(b.perConn, connTally{s.h.Count(), s.h.Max()})
	for k, v := range s.errs {
		b.errs[k] += v
	}
	for k, v := range s.status {
		b.status[k] += v
	}
	b.bytes += s.bytes
}

func (b *bencher) run(ctx context.Context) benchResult {
	b.errs, b.status = map[string]int64{}, map[int]int64{}
	b.halt = ctx
	b.start = time.Now()
	if b.duration > 0 {
		b.stopAt = b.start.Add(b.duration)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, b.stopAt.Add(b.timeout))
		defer cancel()
	}
	var wg sync.WaitGroup
	for range b.conns {
		// Each worker owns one connection at a time and ends when the
		// run is over (count, duration or ctx).
		wg.Go(func() {
			s := &stats{}
			if b.mpx > 0 {
				b.workerMpx(ctx, s)
			} else {
				b.worker(ctx, s)
			}
			b.merge(s)
		})
	}
	wg.Wait()
	b.elapsed = time.Since(b.start)
	return b.result()
}

// worker runs requests one at a time, ID 1, as nginx does.
func (b *bencher) worker(ctx context.Context, s *stats) {
	var c *rawconn.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	var rd redial
	for {
		due, ok := b.ticket(ctx)
		if !ok {
			return
		}
		if c == nil {
			var err error
			if c, err = b.dial(ctx); err != nil {
				s.fail(b, "connect")
				if !b.backOff(ctx, &rd) {
					return
				}
				continue
			}
			rd = redial{}
		}
		status, n, err := b.roundTrip(c)
		switch {
		case errors.Is(err, errBenchHeader):
			s.fail(b, err.Error()) // the connection is still good
		case err != nil:
			s.fail(b, err.Error())
			c.Close()
			c = nil
			continue
		default:
			s.ok(b, time.Since(due), status, n)
		}
		if b.noKeep {
			c.Close()
			c = nil
		}
	}
}

// redial is a worker's state between failed dials.
type redial struct {
	wait  time.Duration // the last wait; 0 after a dial that worked
	since time.Time     // the first failure of the series
}

// backOff waits before a worker dials again after a failed dial, the wait
// doubling from 10 ms to a second, so that an application that is down
// for a moment (a PHP-FPM restart) is retried a few times a second
// rather than as fast as the machine can dial, which would count a failure
// per attempt and take the CPU from the application. It returns false when
// the run ends first, or when the dials have failed for longer than
// --timeout: the worker stops then, so that a run of -n requests against
// an application gone for good ends rather than try every one of them.
func (b *bencher) backOff(ctx context.Context, r *redial) bool {
	now := time.Now()
	if r.wait == 0 {
		r.since = now
	}
	if now.Sub(r.since) > b.timeout {
		return false
	}
	r.wait = min(max(2*r.wait, 10*time.Millisecond), time.Second)
	d := r.wait
	if !b.stopAt.IsZero() {
		d = min(d, time.Until(b.stopAt))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dial opens a connection of the run, which an interruption closes, so
// that the request in flight on it ends at once.
func (b *bencher) dial(ctx context.Context) (*rawconn.Conn, error) {
	nc, err := dial(ctx, b.addr, b.timeout)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(b.halt, func() { nc.Close() })
	return rawconn.New(&haltConn{Conn: nc, stop: stop}), nil
}

// haltConn is a connection of the run; closing it cancels its closing by
// an interruption.
type haltConn struct {
	net.Conn
	stop func() bool
}

func (c *haltConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

var (
	errBenchTimeout  = errors.New("timeout")
	errBenchClosed   = errors.New("connection closed")
	errBenchProtocol = errors.New("protocol error")
)

// roundTrip sends one request with ID 1 and reads its response, returning
// the HTTP status from the CGI header and the STDOUT byte count.
func (b *bencher) roundTrip(c *rawconn.Conn) (status int, n int64, err error) {
	deadline := time.Now().Add(b.timeout)
	c.NC.SetDeadline(deadline)
	const id = 1
	if err := c.WriteRequest(id, wire.RoleResponder, !b.noKeep, b.params, b.body); err != nil {
		return 0, 0, errBenchClosed
	}
	if err := c.W.Flush(); err != nil {
		return 0, 0, classify(err)
	}
	var head cgiHead
	for {
		rec, err := c.R.Next()
		if err != nil {
			return 0, n, classify(err)
		}
		if rec.RequestID != id {
			continue
		}
		switch rec.Type {
		case wire.TypeStdout:
			n += int64(len(rec.Content))
			head.feed(rec.Content)
		case wire.TypeEndRequest:
			end, err := wire.ParseEndRequest(rec.Content)
			if err != nil || end.ProtocolStatus != wire.StatusRequestComplete {
				if err == nil {
					return 0, n, errors.New(end.ProtocolStatus.String())
				}
				return 0, n, errBenchProtocol
			}
			status, err := head.result()
			return status, n, err
		}
	}
}

func classify(err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errBenchTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), isConnReset(err):
		return errBenchClosed
	case errors.Is(err, wire.ErrVersion):
		return errBenchProtocol
	}
	return err
}

// errBenchHeader counts a response whose CGI header fcgi.Client refuses
// (a web server answers 502 for it).
var errBenchHeader = errors.New("malformed CGI header")

// cgiHead finds the HTTP status of a response in its STDOUT, with the CGI
// header parser of fcgi.Client.
type cgiHead struct {
	sc     cgihdr.Scanner
	status int   // 0 until the header is complete
	err    error // the header is malformed or too large
}

// feed takes the next STDOUT record's content; nothing is kept of it once
// the header is complete.
func (c *cgiHead) feed(p []byte) {
	if c.status != 0 || c.err != nil || len(p) == 0 {
		return
	}
	block, _, done, err := c.sc.Feed(p, cgihdr.DefaultLimit)
	switch {
	case err != nil:
		c.err = err
	case done:
		c.status, _, c.err = cgihdr.Parse(block, nil)
	}
}

// result is the status, or errBenchHeader when the response ended without
// a valid header.
func (c *cgiHead) result() (int, error) {
	if c.status == 0 || c.err != nil {
		return 0, errBenchHeader
	}
	return c.status, nil
}

// workerMpx keeps b.mpx requests in flight on one connection: this
// goroutine writes, a reader goroutine it owns matches END_REQUESTs to IDs.
func (b *bencher) workerMpx(ctx context.Context, s *stats) {
	var rd redial
	for ctx.Err() == nil {
		c, err := b.dial(ctx)
		if err != nil {
			s.fail(b, "connect")
			if _, ok := b.ticket(ctx); !ok || !b.backOff(ctx, &rd) {
				return
			}
			continue
		}
		rd = redial{}
		if !b.mpxConn(ctx, c, s) {
			return
		}
	}
}

// mpxConn runs requests on c until the run ends (false) or c fails (true).
func (b *bencher) mpxConn(ctx context.Context, c *rawconn.Conn, s *stats) (again bool) {
	defer c.Close()
	type inflight struct {
		due  time.Time
		head cgiHead
		n    int64
	}
	free := make(chan uint16, b.mpx)
	for id := 1; id <= b.mpx; id++ {
		free <- uint16(id)
	}
	var mu sync.Mutex
	reqs := make(map[uint16]*inflight, b.mpx)
	readErr := make(chan error, 1)
	// The reader goroutine ends when the connection fails or is closed.
	go func() {
		for {
			c.NC.SetReadDeadline(time.Now().Add(b.timeout))
			rec, err := c.R.Next()
			if err != nil {
				readErr <- err
				return
			}
			mu.Lock()
			r := reqs[rec.RequestID]
			switch {
			case r == nil:
			case rec.Type == wire.TypeStdout:
				r.n += int64(len(rec.Content))
				r.head.feed(rec.Content)
			case rec.Type == wire.TypeEndRequest:
				delete(reqs, rec.RequestID)
				end, perr := wire.ParseEndRequest(rec.Content)
				switch {
				case perr != nil:
					s.fail(b, errBenchProtocol.Error())
				case end.ProtocolStatus != wire.StatusRequestComplete:
					s.fail(b, end.ProtocolStatus.String())
				default:
					if status, err := r.head.result(); err != nil {
						s.fail(b, err.Error())
					} else {
						s.ok(b, time.Since(r.due), status, r.n)
					}
				}
				free <- rec.RequestID
			}
			mu.Unlock()
		}
	}()
	finish := func(err error) {
		// Requests still in flight on a failed connection count as
		// failed; the reader has stopped, so reqs is ours.
		mu.Lock()
		for range reqs {
			s.fail(b, classify(err).Error())
		}
		clear(reqs)
		mu.Unlock()
	}
	for {
		var id uint16
		select {
		case id = <-free:
		case err := <-readErr:
			finish(err)
			return ctx.Err() == nil
		}
		due, ok := b.ticket(ctx)
		if !ok {
			// Let the requests in flight finish, then stop.
			for range b.mpx - 1 {
				select {
				case <-free:
				case err := <-readErr:
					finish(err)
					return false
				}
			}
			c.NC.Close()
			<-readErr
			return false
		}
		mu.Lock()
		reqs[id] = &inflight{due: due}
		mu.Unlock()
		c.NC.SetWriteDeadline(time.Now().Add(b.timeout))
		c.WriteRequest(id, wire.RoleResponder, true, b.params, b.body)
		if err := c.W.Flush(); err != nil {
			c.NC.Close()
			finish(<-readErr)
			return ctx.Err() == nil
		}
	}
}

// progress prints a status line to w every second until stopped.
func (b *bencher) progress(w io.Writer) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	// Owned by run's caller; ends when stop is called.
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				n := b.done.Load()
				fmt.Fprintf(w, "\r\033[K%5.0fs  %d requests  %d/s  %d errors",
					time.Since(b.start).Seconds(), n, n-last, b.failed.Load())
				last = n
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (b *bencher) mode() string {
	switch {
	case b.mpx > 0:
		return fmt.Sprintf("multiplexed, %d requests in flight per connection", b.mpx)
	case b.noKeep:
		return "a new connection per request (KEEP_CONN off)"
	}
	return "kept connections, one request at a time, ID 1 (like nginx)"
}

func (b *bencher) result() benchResult {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := &b.total
	r := benchResult{
		Target:      b.addr + " " + b.rp.method + " " + b.rp.target,
		Mode:        b.mode(),
		Connections: b.conns,
		Seconds:     b.elapsed.Seconds(),
		Interrupted: b.halt.Err() != nil,
		Cut:         b.cut.Load(),
		MaxConns:    b.maxConns,
		MaxReqs:     b.maxReqs,
		ErrorKinds:  b.errs,
		Statuses:    map[string]int64{},
		Bytes:       b.bytes,
		Latency:     map[string]int64{},
	}
	for _, v := range b.errs {
		r.Errors += v
	}
	for k, v := range b.status {
		code := strconv.Itoa(k)
		r.Statuses[code] = v
		if okStatus(code) {
			r.OK += v
		} else {
			r.HTTPErrors += v
		}
	}
	r.Failed = r.HTTPErrors + r.Errors
	r.Requests = r.OK + r.Failed
	r.Starved = starved(b.perConn, b.elapsed)
	if b.rate > 0 && b.duration > 0 && !r.Interrupted {
		// Ticket i is due at i/rate seconds: those before the end.
		scheduled := int64(math.Ceil(b.rate*b.duration.Seconds() - 1e-9))
		if b.n > 0 {
			scheduled = min(scheduled, b.n)
		}
		r.Unsent = max(0, scheduled-r.Requests)
	}
	if r.Seconds > 0 {
		r.RPS = float64(h.Count()) / r.Seconds
	}
	us := func(d time.Duration) int64 { return d.Microseconds() }
	r.Latency["min"] = us(h.Min())
	r.Latency["mean"] = us(h.Mean())
	r.Latency["p50"] = us(h.Quantile(0.50))
	r.Latency["p90"] = us(h.Quantile(0.90))
	r.Latency["p99"] = us(h.Quantile(0.99))
	r.Latency["max"] = us(h.Max())
	for _, bar := range h.Bars(10) {
		r.Histogram = append(r.Histogram, benchBar{us(bar.Lo), us(bar.Hi), bar.Count})
	}
	return r
}

// starved counts the connections that got under a tenth of the
// responses of the median connection, once that one got at least ten,
// and waited for one of them half the run or more (a connection that
// started late and found the count used up got few too, without waiting).
// PHP-FPM, which tells no limit by FCGI_GET_VALUES, accepts no more
// connections than it has workers: those over pm.max_children wait in
// its listen queue until another closes, which with kept connections is
// the end of the run.
func starved(perConn []connTally, elapsed time.Duration) int {
	if len(perConn) < 2 {
		return 0
	}
	counts := make([]uint64, len(perConn))
	for i, c := range perConn {
		counts[i] = c.n
	}
	slices.Sort(counts)
	median := counts[len(counts)/2]
	if median < 10 {
		return 0
	}
	n := 0
	for _, c := range perConn {
		if c.n*10 < median && c.longest >= elapsed/2 {
			n++
		}
	}
	return n
}

func (b *bencher) print(w io.Writer, r benchResult) {
	if r.Interrupted {
		fmt.Fprintf(w, "INTERRUPTED:  partial report; %d requests in flight were cut and are not counted\n", r.Cut)
	}
	fmt.Fprintf(w, "Target:       %s\n", r.Target)
	fmt.Fprintf(w, "Mode:         %d connections, %s\n", r.Connections, r.Mode)
	var limits []string
	if r.MaxConns > 0 {
		limits = append(limits, fmt.Sprintf("%s=%d", wire.ValueMaxConns, r.MaxConns))
	}
	if r.MaxReqs > 0 {
		limits = append(limits, fmt.Sprintf("%s=%d", wire.ValueMaxReqs, r.MaxReqs))
	}
	if len(limits) > 0 {
		fmt.Fprintf(w, "Application:  %s\n", strings.Join(limits, ", "))
	}
	fmt.Fprintf(w, "Duration:     %.2fs\n", r.Seconds)
	fmt.Fprintf(w, "Requests:     %d succeeded, %d failed, %.1f responses/s\n", r.OK, r.Failed, r.RPS)
	if r.Failed > 0 {
		failed := joinCounts(r.failedStatuses(), "HTTP ")
		if kinds := joinCounts(r.ErrorKinds, ""); kinds != "" {
			failed = strings.TrimPrefix(failed+", "+kinds, ", ")
		}
		fmt.Fprintf(w, "Failed:       %s\n", failed)
	}
	if r.HTTPErrors > 0 {
		fmt.Fprintf(w, "WARNING:      %d of %d responses had an HTTP status other than 2xx or 3xx; check --path and --root\n", r.HTTPErrors, r.OK+r.HTTPErrors)
	}
	if r.Unsent > 0 {
		fmt.Fprintf(w, "WARNING:      --rate %g not reached: %d of the %d requests scheduled were not sent, every connection being busy; raise -c, or the application is slower than that\n", b.rate, r.Unsent, r.Requests+r.Unsent)
	}
	if r.Starved > 0 {
		fmt.Fprintf(w, "WARNING:      %d of %d connections got almost no responses: the application serves fewer connections at once (PHP-FPM: pm.max_children), and their requests waited in its queue, their latency the queue's; lower -c\n", r.Starved, r.Connections)
	}
	codes := make([]string, 0, len(r.Statuses))
	for k := range r.Statuses {
		codes = append(codes, k)
	}
	sort.Strings(codes)
	var sts []string
	for _, k := range codes {
		sts = append(sts, fmt.Sprintf("%s: %d", k, r.Statuses[k]))
	}
	if len(sts) == 0 {
		sts = []string{"none: no response came"}
	}
	fmt.Fprintf(w, "Statuses:     %s\n", strings.Join(sts, ", "))
	mb := float64(r.Bytes) / 1e6
	fmt.Fprintf(w, "Transfer:     %.2f MB stdout, %.2f MB/s\n", mb, mb/max(r.Seconds, 1e-9))
	h := &b.total
	if h.Count() == 0 {
		return
	}
	fmt.Fprintf(w, "Latency:      min %v  mean %v  p50 %v  p90 %v  p99 %v  max %v\n",
		rd(h.Min()), rd(h.Mean()), rd(h.Quantile(0.5)), rd(h.Quantile(0.9)), rd(h.Quantile(0.99)), rd(h.Max()))
	fmt.Fprintln(w, "Histogram:")
	bars := h.Bars(10)
	var most uint64
	for _, bar := range bars {
		most = max(most, bar.Count)
	}
	for _, bar := range bars {
		width := int(bar.Count * 40 / max(most, 1))
		fmt.Fprintf(w, "  %10v - %-10v %8d  %s\n", rd(bar.Lo), rd(bar.Hi), bar.Count, strings.Repeat("■", width))
	}
}

// rd rounds a duration to three significant digits for printing.
func rd(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= 100*time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Nanosecond)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

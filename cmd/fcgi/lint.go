package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/fcgikit/fcgi/internal/cgihdr"
	"github.com/fcgikit/fcgi/internal/rawconn"
	"github.com/fcgikit/fcgi/internal/wire"
)

var lintCmd = &command{
	name:    "lint",
	summary: "check a live application against the FastCGI spec and what web servers need",
	usage: `
Usage: fcgi lint [flags] ADDR

Lint connects to a running FastCGI application and checks, one connection
per check, what the FastCGI 1.0 specification requires and what nginx,
Apache, lighttpd and HAProxy depend on: the request ID echoed, a STDOUT
stream that starts with CGI headers and ends with an empty record, exactly
one END_REQUEST and nothing after it, records no larger than 65535 bytes,
KEEP_CONN honoured both ways, ABORT_REQUEST answered, FCGI_GET_VALUES
answered in one record, UNKNOWN_TYPE for an unknown management record,
and multiplexing when the application claims it.

Each check prints one line: PASS, WARN or FAIL, the spec section (§) and
what was checked, with details under a WARN or FAIL. FAIL means a web
server will break (or the spec's MUST is broken); WARN means a deviation
that mainstream web servers tolerate.

The requests are GET --path (default /), with the CGI variables nginx
sends; SCRIPT_FILENAME is --root followed by the path. Choose a cheap
page: the checks send about ten requests. The first line shows the HTTP
status of that page. A 404 is a WARN: the checks then tested an error page
(PHP-FPM's "Primary script unknown" when --root and --path name no file),
and prove little.

Examples:

	fcgi lint unix:/run/php/php8.2-fpm.sock --path /ping
	fcgi lint 127.0.0.1:9000 --root /srv/app/public --path /index.php
	fcgi lint --json --strict unix:/run/app.sock

Exit status: 0 no FAIL (and no WARN with --strict), 1 some check failed,
3 the application could not be reached at all, 4 an HTTP server, 5 no
answer to the first request in time (busy: every worker taken, or stuck),
so no check ran.
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		l := &linter{}
		fs.StringVar(&l.rp.target, "path", "/", "request `path`, with an optional ?query")
		fs.StringVar(&l.rp.root, "root", "/var/www/html", "document root, for SCRIPT_FILENAME")
		fs.Var(&l.rp.extra, "p", "extra FastCGI parameter `NAME=VALUE` (repeatable)")
		fs.DurationVar(&l.timeout, "timeout", 5*time.Second, "how long each check waits for an answer")
		strict := fs.Bool("strict", false, "exit non-zero on WARN too")
		asJSON := fs.Bool("json", false, "print results as JSON")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usageError(e, fs, "want exactly one ADDR")
			}
			l.addr = args[0]
			l.rp.body = 0
			kv, err := l.rp.pairs()
			if err != nil {
				return usageError(e, fs, "%v", err)
			}
			l.params = encodePairs(kv)
			// Reach the application once first, so an address mistake
			// gives one clear error rather than a page of failures.
			c, err := dialRaw(ctx, l.addr, l.timeout)
			if err != nil {
				return err
			}
			c.Close()
			if err := httpProbe(ctx, l.addr, l.timeout); err != nil {
				return err
			}
			l.run(ctx)
			if l.busy {
				return &exitError{code: exitBusy, err: fmt.Errorf("%s: %w: no answer to the first request within --timeout, so no check could run", l.addr, errBusy)}
			}
			if *asJSON {
				if err := printJSON(e.stdout, l.results); err != nil {
					return err
				}
			} else {
				l.print(e.stdout)
			}
			fails, warns := l.count()
			if fails > 0 || *strict && warns > 0 {
				return &exitError{code: exitFail}
			}
			return nil
		}
	},
}

// Levels of a lint result.
const (
	lintPass = "PASS"
	lintWarn = "WARN"
	lintFail = "FAIL"
	lintSkip = "SKIP"
)

type lintResult struct {
	Level   string `json:"level"`
	Section string `json:"section"`
	Check   string `json:"check"`
	Detail  string `json:"detail,omitempty"`
	// Status is the HTTP status of the page tested, on that check only.
	Status int `json:"status,omitempty"`
}

type linter struct {
	addr    string
	rp      requestParams
	params  []byte
	timeout time.Duration
	results []lintResult
	mpxs    string // FCGI_MPXS_CONNS as answered, "" if unknown
	busy    bool   // the first request got no record in time: no check ran
	status  int    // HTTP status of the page tested, 0 if unknown
}

func (l *linter) add(level, section, check, detail string) {
	l.results = append(l.results, lintResult{Level: level, Section: section, Check: check, Detail: detail})
}

// expect records PASS when ok, else level with the detail.
func (l *linter) expect(ok bool, level, section, check, detail string) {
	if ok {
		detail = ""
		level = lintPass
	}
	l.add(level, section, check, detail)
}

func (l *linter) count() (fails, warns int) {
	for _, r := range l.results {
		switch r.Level {
		case lintFail:
			fails++
		case lintWarn:
			warns++
		}
	}
	return fails, warns
}

func (l *linter) print(w io.Writer) {
	if l.status != 0 {
		fmt.Fprintf(w, "page GET %s: %d %s\n", l.rp.target, l.status, http.StatusText(l.status))
	}
	for _, r := range l.results {
		fmt.Fprintf(w, "%s  %-5s %s\n", r.Level, r.Section, r.Check)
		if r.Detail != "" {
			fmt.Fprintf(w, "            %s\n", r.Detail)
		}
	}
	fails, warns := l.count()
	fmt.Fprintf(w, "\n%d checks: %d passed, %d warnings, %d failed\n",
		len(l.results), len(l.results)-fails-warns-l.skipped(), warns, fails)
}

func (l *linter) skipped() int {
	n := 0
	for _, r := range l.results {
		if r.Level == lintSkip {
			n++
		}
	}
	return n
}

func (l *linter) run(ctx context.Context) {
	checks := []func(context.Context){
		l.checkRequest,
		l.checkHighID,
		l.checkKeepConn,
		l.checkAbort,
		l.checkGetValues,
		l.checkUnknownType,
		l.checkMultiplex,
	}
	for _, check := range checks {
		if ctx.Err() != nil {
			l.add(lintFail, "", context.Cause(ctx).Error(), "the remaining checks did not run")
			return
		}
		check(ctx)
		if l.busy {
			return
		}
	}
}

// connect opens the connection for one check; on failure it records a FAIL
// for the check and returns nil.
func (l *linter) connect(ctx context.Context, section, check string) *rawconn.Conn {
	c, err := dialRaw(ctx, l.addr, l.timeout)
	if err != nil {
		l.add(lintFail, section, check, err.Error())
		return nil
	}
	// Cancelling ctx (SIGTERM) ends any read at once.
	context.AfterFunc(ctx, func() { c.NC.SetDeadline(time.Now()) })
	return c
}

func (l *linter) deadline() time.Time { return time.Now().Add(l.timeout) }

// strayGrace is how long checks wait for records that should not come
// (a second END_REQUEST, STDOUT after END_REQUEST) on a kept connection.
const strayGrace = 300 * time.Millisecond

// readUntilClose reads records until EOF or until deadline, returning
// those read and whether the peer closed the connection.
func readUntilClose(c *rawconn.Conn, deadline time.Time) (recs []rawconn.Record, closed bool, err error) {
	c.NC.SetReadDeadline(deadline)
	for {
		rec, err := c.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err) {
				return recs, true, nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return recs, false, nil
			}
			return recs, false, err
		}
		recs = append(recs, rec)
	}
}

func (l *linter) checkRequest(ctx context.Context) {
	const id = 1
	c := l.connect(ctx, "§5.1", "responder request answered")
	if c == nil {
		return
	}
	defer c.Close()
	c.NC.SetWriteDeadline(l.deadline())
	c.WriteRequest(id, wire.RoleResponder, false, l.params, nil)
	if err := c.W.Flush(); err != nil {
		l.add(lintFail, "§5.1", "responder request answered", "sending: "+err.Error())
		return
	}
	resp, err := readResponse(c, id, l.deadline())
	if errors.Is(err, errNoAnswer) && (resp == nil || len(resp.Records) == 0) {
		// Not a word: every worker busy, or stuck. The other checks
		// would time out the same and prove nothing.
		l.busy = true
		return
	}
	if err != nil {
		l.add(lintFail, "§5.5", "END_REQUEST received", err.Error())
		return
	}
	l.add(lintPass, "§5.5", "END_REQUEST received", "")
	l.checkResponse(resp, id)
	l.checkPage(resp)

	// Nothing may follow END_REQUEST, and without KEEP_CONN the
	// application closes the connection.
	after, closed, err := readUntilClose(c, l.deadline())
	var stray []string
	for _, r := range after {
		stray = append(stray, r.Header.String())
	}
	l.expect(len(stray) == 0, lintFail, "§5.5", "exactly one END_REQUEST, no record after it",
		fmt.Sprintf("after END_REQUEST came: %v", stray))
	switch {
	case err != nil:
		l.add(lintFail, "§5.1", "connection closed after the response without KEEP_CONN", err.Error())
	default:
		l.expect(closed, lintFail, "§5.1", "connection closed after the response without KEEP_CONN",
			fmt.Sprintf("still open %v after END_REQUEST; cgi-fcgi and other clients wait for the close", l.timeout))
	}
}

// checkResponse checks one complete response to request id.
func (l *linter) checkResponse(resp *rawconn.Response, id uint16) {
	var wrongID, wrongType, tooBig []string
	var ends int
	for _, r := range resp.Records {
		if r.RequestID != id {
			if r.RequestID != wire.NullRequestID || !r.Type.IsManagement() {
				wrongID = append(wrongID, r.Header.String())
			}
			continue
		}
		switch r.Type {
		case wire.TypeStdout, wire.TypeStderr:
		case wire.TypeEndRequest:
			ends++
		default:
			wrongType = append(wrongType, r.Header.String())
		}
		if int(r.ContentLength)+int(r.PaddingLength) > wire.MaxContent {
			tooBig = append(tooBig, r.Header.String())
		}
	}
	l.expect(len(wrongID) == 0, lintFail, "§3.3", fmt.Sprintf("request ID %d echoed in every record", id),
		fmt.Sprintf("records with another ID: %v", wrongID))
	l.expect(len(wrongType) == 0, lintFail, "§6.2", "only STDOUT, STDERR and END_REQUEST sent for a request",
		fmt.Sprintf("nginx rejects: %v", wrongType))
	l.expect(len(tooBig) == 0, lintWarn, "§3.3", "content plus padding at most 65535 bytes per record",
		fmt.Sprintf("PHP-FPM-style peers refuse: %v", tooBig))
	l.expect(resp.End.ProtocolStatus == wire.StatusRequestComplete, lintFail, "§5.5", "protocol status REQUEST_COMPLETE",
		fmt.Sprintf("got %v", resp.End.ProtocolStatus))
	// §5.3 ends every stream with an empty record, but nginx, HAProxy and
	// Apache take END_REQUEST as the end of STDOUT too, and PHP-FPM omits
	// the empty record from some responses (its ping page): a warning.
	l.expect(resp.StdoutEnded, lintWarn, "§5.3", "STDOUT ended by an empty record before END_REQUEST",
		"no empty STDOUT record (web servers accept END_REQUEST as the end); records: "+sequence(resp.Records))
	hdr, herr := cgiHeaderBlock(resp.Stdout)
	l.expect(herr == nil, lintFail, "§6.2", "STDOUT starts with a CGI header block",
		fmt.Sprintf("nginx answers 502 (upstream sent invalid header / prematurely closed stdout): %v; got %q", herr, truncate(resp.Stdout, 80)))
	if herr == nil {
		l.expect(bytes.Contains(bytes.ToLower(hdr), []byte("content-type:")) ||
			bytes.Contains(bytes.ToLower(hdr), []byte("status:")) ||
			bytes.Contains(bytes.ToLower(hdr), []byte("location:")),
			lintWarn, "§6.2", "CGI header block has Content-Type, Status or Location",
			fmt.Sprintf("RFC 3875 §6.2 needs one; got %q", truncate(hdr, 80)))
	}
}

// checkPage records the HTTP status of the page tested. A 404 is a
// warning: the other checks then tested an error page (PHP-FPM's "File
// not found." for a SCRIPT_FILENAME it cannot open, logged as "Primary
// script unknown"), not the application, and prove little.
func (l *linter) checkPage(resp *rawconn.Response) {
	const check = "the page tested is found (not 404)"
	hdr, err := cgiHeaderBlock(resp.Stdout)
	if err != nil {
		return // the header check has recorded why
	}
	status, _, err := cgihdr.Parse(hdr, nil)
	if err != nil {
		return
	}
	l.status = status
	r := lintResult{Level: lintPass, Section: "§6.2", Check: check, Status: status}
	if status == http.StatusNotFound {
		r.Level = lintWarn
		r.Detail = fmt.Sprintf("GET %s answered 404 Not Found", l.rp.target)
		if e := strings.TrimSpace(string(resp.Stderr)); e != "" {
			r.Detail += fmt.Sprintf(" (its stderr: %q)", truncate([]byte(e), 80))
		}
		r.Detail += ": the checks tested an error page and prove little; give --path (and --root) of a page that exists"
	}
	l.results = append(l.results, r)
}

// cgiHeaderBlock returns the header block of a CGI response, if it is
// complete (ended by an empty line) and parses as fcgi.Client parses it,
// or why not.
func cgiHeaderBlock(b []byte) ([]byte, error) {
	var sc cgihdr.Scanner
	block, _, done, err := sc.Feed(b, cgihdr.DefaultLimit)
	switch {
	case err != nil:
		return nil, err
	case !done:
		return nil, errors.New("no empty line ends the header")
	}
	if _, _, err := cgihdr.Parse(block, nil); err != nil {
		return nil, err
	}
	return block, nil
}

// sequence summarises records as "STDOUT[1]:120 STDOUT[1]:0 END_REQUEST[1]:8".
func sequence(recs []rawconn.Record) string {
	var b strings.Builder
	for i, r := range recs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%v[%d]:%d", r.Type, r.RequestID, r.ContentLength)
	}
	return b.String()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return append(b[:n:n], "..."...)
	}
	return b
}

func (l *linter) checkHighID(ctx context.Context) {
	// 0x0102 has a non-zero high byte: applications that keep only the
	// low byte, or assume nginx's ID 1, get it wrong.
	const id = 0x0102
	check := fmt.Sprintf("request ID %d (two bytes) echoed", id)
	c := l.connect(ctx, "§3.3", check)
	if c == nil {
		return
	}
	defer c.Close()
	c.NC.SetWriteDeadline(l.deadline())
	c.WriteRequest(id, wire.RoleResponder, false, l.params, nil)
	if err := c.W.Flush(); err != nil {
		l.add(lintFail, "§3.3", check, "sending: "+err.Error())
		return
	}
	resp, err := readResponse(c, id, l.deadline())
	if err != nil {
		detail := err.Error()
		if resp != nil && resp.Foreign > 0 {
			detail = fmt.Sprintf("answered with other IDs: %v", resp.Records[0].Header)
		}
		l.add(lintFail, "§3.3", check, detail)
		return
	}
	l.expect(resp.Foreign == 0, lintFail, "§3.3", check, fmt.Sprintf("%d records had another ID", resp.Foreign))
}

func (l *linter) checkKeepConn(ctx context.Context) {
	const id = 1
	check := "KEEP_CONN: a second request on the same connection is answered"
	c := l.connect(ctx, "§5.1", check)
	if c == nil {
		return
	}
	defer c.Close()
	for i := range 2 {
		c.NC.SetWriteDeadline(l.deadline())
		c.WriteRequest(id, wire.RoleResponder, true, l.params, nil)
		if err := c.W.Flush(); err != nil {
			l.add(lintFail, "§5.1", check, fmt.Sprintf("sending request %d: %v", i+1, err))
			return
		}
		resp, err := readResponse(c, id, l.deadline())
		if err != nil {
			l.add(lintFail, "§5.1", check, fmt.Sprintf("request %d: %v", i+1, err))
			return
		}
		if i == 0 {
			// A stray record now would be taken by nginx as part of the
			// next response.
			stray, closed, _ := readUntilClose(c, time.Now().Add(strayGrace))
			if closed {
				l.add(lintFail, "§5.1", check, "the application closed the connection although KEEP_CONN was set")
				return
			}
			if len(stray) > 0 {
				l.add(lintFail, "§5.5", check, fmt.Sprintf("after END_REQUEST came: %v", stray[0].Header))
				return
			}
		}
		if i == 1 {
			l.expect(resp.End.ProtocolStatus == wire.StatusRequestComplete,
				lintFail, "§5.1", check, fmt.Sprintf("second request refused: %v", resp.End.ProtocolStatus))
		}
	}
}

func (l *linter) checkAbort(ctx context.Context) {
	const id = 1
	check := "ABORT_REQUEST answered with END_REQUEST"
	c := l.connect(ctx, "§5.4", check)
	if c == nil {
		return
	}
	defer c.Close()
	// A POST whose body has not all arrived: the application is waiting
	// for it when the abort comes, as when a client goes away mid-upload.
	rp := l.rp
	rp.method = "POST"
	rp.body = 1 << 20
	rp.header = append(rp.header, [2]string{"Content-Type", "application/octet-stream"})
	kv, _ := rp.pairs()
	c.NC.SetWriteDeadline(l.deadline())
	c.W.WriteBeginRequest(id, wire.RoleResponder, wire.FlagKeepConn)
	c.W.WriteStream(wire.TypeParams, id, encodePairs(kv))
	c.W.WriteRecord(wire.TypeParams, id, nil)
	c.W.WriteRecord(wire.TypeStdin, id, make([]byte, 1024))
	if err := c.W.Flush(); err != nil {
		l.add(lintFail, "§5.4", check, "sending: "+err.Error())
		return
	}
	time.Sleep(50 * time.Millisecond) // let the application start the request
	c.W.WriteRecord(wire.TypeAbortRequest, id, nil)
	if err := c.W.Flush(); err != nil {
		l.add(lintWarn, "§5.4", check, "the application closed the connection before the abort: "+err.Error())
		return
	}
	resp, err := readResponse(c, id, l.deadline())
	switch {
	case err == nil:
		l.add(lintPass, "§5.4", check, "")
		_ = resp
		stray, _, _ := readUntilClose(c, time.Now().Add(strayGrace))
		l.expect(len(stray) == 0, lintFail, "§5.5", "no record after the END_REQUEST of an aborted request",
			fmt.Sprintf("after END_REQUEST came: %v", headers(stray)))
	case errors.Is(err, io.EOF) || bytes.Contains([]byte(err.Error()), []byte("connection closed")):
		l.add(lintWarn, "§5.4", check, "the application closed the connection instead; HAProxy copes, but the connection is lost")
	default:
		l.add(lintFail, "§5.4", check, err.Error()+": HAProxy waits for it and holds the slot")
	}
}

func headers(recs []rawconn.Record) []string {
	var s []string
	for _, r := range recs {
		s = append(s, r.Header.String())
	}
	return s
}

func (l *linter) checkGetValues(ctx context.Context) {
	check := "GET_VALUES answered with one GET_VALUES_RESULT record"
	c := l.connect(ctx, "§4.1", check)
	if c == nil {
		return
	}
	defer c.Close()
	names := []string{wire.ValueMaxConns, wire.ValueMaxReqs, wire.ValueMpxsConns}
	var q []byte
	for _, n := range names {
		q = wire.AppendPair(q, n, "")
	}
	c.NC.SetWriteDeadline(l.deadline())
	c.W.WriteRecord(wire.TypeGetValues, wire.NullRequestID, q)
	if err := c.W.Flush(); err != nil {
		l.add(lintFail, "§4.1", check, "sending: "+err.Error())
		return
	}
	c.NC.SetReadDeadline(l.deadline())
	rec, err := c.R.Next()
	if err != nil {
		l.add(lintFail, "§4.1", check, readError(err, "waiting for GET_VALUES_RESULT").Error())
		return
	}
	if rec.Type != wire.TypeGetValuesResult || rec.RequestID != wire.NullRequestID {
		l.add(lintFail, "§4.1", check, fmt.Sprintf("got %v", rec.Header))
		return
	}
	var got []string
	var unasked []string
	perr := wire.ForEachPair(rec.Content, func(n, v []byte) bool {
		got = append(got, string(n)+"="+string(v))
		switch string(n) {
		case wire.ValueMaxConns, wire.ValueMaxReqs:
		case wire.ValueMpxsConns:
			l.mpxs = string(v)
		default:
			unasked = append(unasked, string(n))
		}
		return true
	})
	if perr != nil {
		l.add(lintFail, "§3.4", check, "malformed name-value pairs: "+perr.Error())
		return
	}
	more, _, _ := readUntilClose(c, time.Now().Add(strayGrace))
	l.expect(len(more) == 0, lintFail, "§4.1", check,
		fmt.Sprintf("more records followed: %v (HAProxy reads only the first)", headers(more)))
	l.expect(len(unasked) == 0, lintWarn, "§4.1", "GET_VALUES_RESULT holds only names that were asked",
		fmt.Sprintf("unasked: %v", unasked))
	l.expect(l.mpxs == "0" || l.mpxs == "1", lintWarn, "§4.1", "FCGI_MPXS_CONNS reported as 0 or 1",
		fmt.Sprintf("answer: %v", got))
}

func (l *linter) checkUnknownType(ctx context.Context) {
	const unknown = wire.Type(100)
	check := "UNKNOWN_TYPE answers an unknown management record"
	c := l.connect(ctx, "§4.2", check)
	if c == nil {
		return
	}
	defer c.Close()
	c.NC.SetWriteDeadline(l.deadline())
	c.W.WriteRecord(unknown, wire.NullRequestID, make([]byte, 8))
	if err := c.W.Flush(); err != nil {
		l.add(lintWarn, "§4.2", check, "sending: "+err.Error())
		return
	}
	c.NC.SetReadDeadline(l.deadline())
	rec, err := c.R.Next()
	if err != nil {
		l.add(lintWarn, "§4.2", check, readError(err, "waiting for UNKNOWN_TYPE").Error()+" (no mainstream web server sends unknown types)")
		return
	}
	if rec.Type != wire.TypeUnknownType || rec.RequestID != wire.NullRequestID {
		l.add(lintWarn, "§4.2", check, fmt.Sprintf("got %v", rec.Header))
		return
	}
	t, err := wire.ParseUnknownType(rec.Content)
	l.expect(err == nil && t == unknown, lintFail, "§4.2", check, fmt.Sprintf("body names type %v (err %v), want %v", t, err, unknown))
}

func (l *linter) checkMultiplex(ctx context.Context) {
	check := "two interleaved requests on one connection both answered"
	if l.mpxs != "1" {
		l.add(lintSkip, "§5.6", check, "the application does not claim FCGI_MPXS_CONNS=1")
		return
	}
	c := l.connect(ctx, "§5.6", check)
	if c == nil {
		return
	}
	defer c.Close()
	c.NC.SetWriteDeadline(l.deadline())
	// Interleave: both BEGIN_REQUESTs, then both PARAMS, then both STDINs.
	for _, id := range []uint16{1, 2} {
		c.W.WriteBeginRequest(id, wire.RoleResponder, wire.FlagKeepConn)
	}
	for _, id := range []uint16{1, 2} {
		c.W.WriteStream(wire.TypeParams, id, l.params)
		c.W.WriteRecord(wire.TypeParams, id, nil)
	}
	for _, id := range []uint16{2, 1} {
		c.W.WriteRecord(wire.TypeStdin, id, nil)
	}
	if err := c.W.Flush(); err != nil {
		l.add(lintFail, "§5.6", check, "sending: "+err.Error())
		return
	}
	c.NC.SetReadDeadline(l.deadline())
	ended := map[uint16]bool{}
	for len(ended) < 2 {
		rec, err := c.R.Next()
		if err != nil {
			l.add(lintFail, "§5.6", check, readError(err, fmt.Sprintf("with %d of 2 answered", len(ended))).Error())
			return
		}
		if rec.Type == wire.TypeEndRequest {
			ended[rec.RequestID] = true
		}
	}
	l.expect(ended[1] && ended[2], lintFail, "§5.6", check, fmt.Sprintf("END_REQUEST for IDs %v", ended))
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// newClient returns the fcgi.Client of one command run (call, ping,
// status) against addr. Every wait is bounded by timeout: connecting,
// each write, the response header, and each later piece of the response.
// The client's own log lines (a backend set aside, say) repeat what the
// returned errors say, so they are shown only at --log-level debug.
//
// A run sends one request, so the client keeps no connection: KEEP_CONN
// is off and the application closes the connection after its response.
// With KEEP_CONN set, a PHP-FPM worker would go on to wait for a second
// request on the connection until the close, which its status page
// counts as one more accepted request and an active worker.
//
// A malformed addr makes the client's first dial fail with parseAddr's
// error, which clientError reports as a usage error.
func newClient(e *env, addr string, timeout time.Duration) *fcgi.Client {
	log := slog.New(slog.DiscardHandler)
	if e.log.Enabled(context.Background(), slog.LevelDebug) {
		log = e.log
	}
	c := &fcgi.Client{
		Addr:                   fcgiAddr(addr),
		DialTimeout:            timeout,
		WriteTimeout:           timeout,
		ResponseHeaderTimeout:  timeout,
		ReadTimeout:            timeout,
		MaxIdleConnsPerBackend: -1,
		ErrorLog:               log,
	}
	if _, _, err := parseAddr(addr); err != nil {
		c.Dial = func(context.Context, string, string) (net.Conn, error) { return nil, err }
	}
	return c
}

// errBusy: the connection was accepted, by the kernel at least, but no
// answer came in time. For PHP-FPM that means every worker is busy and the
// request waits in the listen queue: busy, not dead.
var errBusy = errors.New("connected, but no answer in time: the application is busy or stuck")

// clientError gives an error of fcgi.Client the exit status doc.go
// documents for it, and a message that says each thing once. Before it
// calls an application busy, it probes for an HTTP server (httpProbe).
func clientError(err error) error {
	var te *fcgi.TimeoutError
	var pe *fcgi.ProtocolStatusError
	var ae *addrError
	var oe *net.OpError
	switch {
	case errors.As(err, &ae):
		return &exitError{code: exitUsage, err: ae}
	case errors.As(err, &te) && te.Op == "dial":
		return &exitError{code: exitUnreachable, err: fmt.Errorf("%s: no connection in time", te.Addr)}
	case errors.Is(err, fcgi.ErrDial) && errors.As(err, &oe):
		// net.Dial's error names the network and the address, once:
		// "dial unix /run/app.sock: connect: no such file or directory".
		return &exitError{code: exitUnreachable, err: oe}
	case errors.Is(err, fcgi.ErrDial),
		errors.Is(err, fcgi.ErrBackendClosed):
		return &exitError{code: exitUnreachable, err: err}
	case errors.As(err, &te):
		// Connected, but a write, the response header or the rest of the
		// response did not come in time. An HTTP server on the port
		// behaves the same until probed; the probe is bounded by
		// probeWait whatever the caller's context.
		if herr := httpProbe(context.Background(), te.Addr, probeWait); herr != nil {
			return herr
		}
		return &exitError{code: exitBusy, err: fmt.Errorf("%s: %w (%s)", te.Addr, errBusy, timeoutWhat(te.Op))}
	case errors.As(err, &pe),
		errors.Is(err, fcgi.ErrMalformedResponse),
		errors.Is(err, fcgi.ErrResponseHeaderTooLarge),
		errors.Is(err, fcgi.ErrProtocol):
		return &exitError{code: exitProtocol, err: err}
	}
	// The connection broke (reset, say): the application is not there.
	var ne net.Error
	if errors.As(err, &ne) {
		return &exitError{code: exitUnreachable, err: err}
	}
	return err
}

// timeoutWhat says what a fcgi.TimeoutError's Op was waiting for.
func timeoutWhat(op string) string {
	switch op {
	case "write request":
		return "writing the request"
	case "response header":
		return "waiting for the response header"
	case "read response":
		return "reading the response"
	case "get values":
		return "waiting for GET_VALUES_RESULT"
	}
	return op
}

// probeWait bounds httpProbe: an HTTP server answers a malformed request
// within a round trip.
const probeWait = 500 * time.Millisecond

// httpProbe tells an HTTP server from a busy FastCGI application, which
// both accept a connection and then say nothing: Go's net/http, for one,
// waits for the end of a request line, which a FastCGI request need not
// hold. It sends one FCGI_GET_VALUES record with no content and CRLFs as
// padding, which a FastCGI application reads as an empty query (§4.1;
// padding is skipped) and an HTTP server as a malformed request, answered
// at once with 400. It returns the error to report for an HTTP server
// (exit 4), or nil when no such answer came within wait (at most
// probeWait).
func httpProbe(ctx context.Context, addr string, wait time.Duration) error {
	wait = min(wait, probeWait)
	nc, err := dial(ctx, addr, wait)
	if err != nil {
		return nil
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(wait))
	probe := []byte{wire.Version1, byte(wire.TypeGetValues), 0, 0, 0, 0, 8, 0, '\r', '\n', '\r', '\n', '\r', '\n', '\r', '\n'}
	if _, err := nc.Write(probe); err != nil {
		return nil
	}
	rd := wire.NewReader(nc)
	defer rd.Release()
	_, err = rd.Next()
	var he *wire.HTTPReplyError
	if !errors.As(err, &he) {
		return nil
	}
	return &exitError{code: exitProtocol, err: fmt.Errorf("%s: %w", addr, he)}
}

// reply is a whole response, body read, for ping and status.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// get sends a GET for target (a path with an optional query) through c
// and reads the whole response. Its errors carry the exit statuses of
// clientError.
func get(ctx context.Context, c *fcgi.Client, target string) (*reply, error) {
	r, err := fetch(ctx, c, &requestParams{target: target, body: -1})
	var ce *fetchError
	if errors.As(err, &ce) {
		return nil, clientError(ce.err)
	}
	return r, err
}

// A fetchError is an error of the fcgi.Client itself, as opposed to a
// request that could not be built.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// fetch sends the request rp through c and reads the whole response. The
// client's errors are returned as a *fetchError around the error
// fcgi.Client returned, for the caller to judge: get gives them exit
// statuses, the exporter reasons for phpfpm_up 0.
func fetch(ctx context.Context, c *fcgi.Client, rp *requestParams) (*reply, error) {
	kv, err := rp.pairs()
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(ctx, &fcgi.Request{Params: paramMap(kv)})
	if err != nil {
		return nil, &fetchError{err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &fetchError{err}
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// paramMap turns the ordered variables of requestParams.pairs into the
// form of fcgi.Request.Params. pairs has already removed duplicates.
func paramMap(kv [][2]string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, p := range kv {
		m[p[0]] = p[1]
	}
	return m
}

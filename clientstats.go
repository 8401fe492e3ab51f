package fcgi

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"
)

// BackendStats are the figures of one backend of a [Client], for a program
// to export: gauges of what is happening now and counters since the client
// started, named as [database/sql.DBStats] names a pool's. Reading them is
// cheap; the client keeps them whether or not anybody reads.
type BackendStats struct {
	Addr string // the backend, as in Client.Addr or Client.Backends

	// Gauges.
	InFlight        int  // requests given to the backend and not yet ended, those waiting for a connection included
	OpenConnections int  // connections open or being dialed
	Idle            int  // one-request connections kept open for the next request
	Waiting         int  // requests waiting for a connection: the queue behind MaxConnsPerBackend
	SetAside        bool // the backend failed and is out of rotation until its BackendCooldown ends

	// Counters.
	Requests       int64         // requests given to the backend, each retry counted again
	WaitCount      int64         // requests that had to wait for a connection
	WaitDuration   time.Duration // the total time requests waited for a connection
	Retries        int64         // requests sent again after a failure that proves they did not run (see Client's Retries)
	Overloaded     int64         // requests the application refused with FCGI_OVERLOADED
	DialErrors     int64         // connections that could not be made, dial timeouts included
	ResetErrors    int64         // connections the backend closed or reset before the end of a response
	Timeouts       int64         // WriteTimeout, ResponseHeaderTimeout and ReadTimeout expiries
	ProtocolErrors int64         // responses breaking FastCGI or CGI: bad records, malformed or too large headers, refusals other than FCGI_OVERLOADED
}

// backendStats are the counters behind BackendStats; the gauges come from the
// pool itself.
type backendStats struct {
	requests, waitCount, waitNanos, retries atomic.Int64
	overloaded, dial, reset, timeout, proto atomic.Int64
}

// Stats returns a snapshot of the figures of each backend, in the order of
// Addr then Backends.
func (c *Client) Stats() []BackendStats {
	c.init()
	now := time.Now().UnixNano()
	out := make([]BackendStats, len(c.backends))
	for i, b := range c.backends {
		st := &b.stats
		b.mu.Lock()
		s := BackendStats{
			OpenConnections: b.conns,
			Idle:            len(b.idle),
			Waiting:         len(b.waiters),
		}
		b.mu.Unlock()
		s.Addr = b.addr
		s.InFlight = int(b.inflight.Load())
		s.SetAside = b.down.Load() > now
		s.Requests = st.requests.Load()
		s.WaitCount = st.waitCount.Load()
		s.WaitDuration = time.Duration(st.waitNanos.Load())
		s.Retries = st.retries.Load()
		s.Overloaded = st.overloaded.Load()
		s.DialErrors = st.dial.Load()
		s.ResetErrors = st.reset.Load()
		s.Timeouts = st.timeout.Load()
		s.ProtocolErrors = st.proto.Load()
		out[i] = s
	}
	return out
}

// count records the outcome of one failed attempt on b.
func (st *backendStats) count(o Outcome) {
	switch o {
	case OutcomeOverloaded:
		st.overloaded.Add(1)
	case OutcomeDialError:
		st.dial.Add(1)
	case OutcomeReset:
		st.reset.Add(1)
	case OutcomeTimeout:
		st.timeout.Add(1)
	case OutcomeProtocolError:
		st.proto.Add(1)
	}
}

// An Outcome says how a request to a [Client] ended, for an [Observer] and
// the error counts of [BackendStats].
type Outcome uint8

const (
	// OutcomeOK is a response read to its end.
	OutcomeOK Outcome = iota
	// OutcomeAborted is a request its caller gave up on: its context ended,
	// or its Body was closed before the end.
	OutcomeAborted
	// OutcomeOverloaded is a request the application refused with
	// FCGI_OVERLOADED ([ErrOverloaded]).
	OutcomeOverloaded
	// OutcomeDialError is a connection that could not be made ([ErrDial],
	// or DialTimeout).
	OutcomeDialError
	// OutcomeReset is a connection closed or reset by the backend before the
	// end of the response ([ErrBackendClosed]).
	OutcomeReset
	// OutcomeTimeout is a WriteTimeout, ResponseHeaderTimeout or ReadTimeout
	// that expired ([*TimeoutError]).
	OutcomeTimeout
	// OutcomeProtocolError is a response that breaks FastCGI or CGI
	// ([ErrProtocol], [ErrMalformedResponse], [ErrResponseHeaderTooLarge],
	// FCGI_CANT_MPX_CONN, FCGI_UNKNOWN_ROLE).
	OutcomeProtocolError
	// OutcomeError is any other failure: a closed Client, a failing
	// Request.GetBody, a body that could not be read.
	OutcomeError
)

var outcomeNames = [...]string{"ok", "aborted", "overloaded", "dial_error", "reset", "timeout", "protocol_error", "error"}

// String returns the outcome's name in snake case, for a metric label:
// "ok", "aborted", "overloaded", "dial_error", "reset", "timeout",
// "protocol_error" or "error".
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "error"
}

// outcomeOf classifies err, the failure of a request whose context is ctx,
// nil for a success.
func outcomeOf(ctx context.Context, err error) Outcome {
	if err == nil {
		return OutcomeOK
	}
	return failureOf(ctx, err)
}

// failureOf is outcomeOf for a non-nil err. Its targets of errors.As live on
// the heap, so a success must not come here.
func failureOf(ctx context.Context, err error) Outcome {
	var te *TimeoutError
	var pe *ProtocolStatusError
	switch {
	case ctx.Err() != nil, errors.Is(err, context.Canceled), errors.Is(err, http.ErrBodyReadAfterClose):
		return OutcomeAborted
	case errors.As(err, &te):
		if te.Op == "dial" {
			return OutcomeDialError
		}
		return OutcomeTimeout
	case errors.Is(err, ErrDial):
		return OutcomeDialError
	case errors.Is(err, ErrOverloaded):
		return OutcomeOverloaded
	case errors.As(err, &pe), errors.Is(err, ErrProtocol), errors.Is(err, ErrMalformedResponse), errors.Is(err, ErrResponseHeaderTooLarge):
		return OutcomeProtocolError
	case errors.Is(err, ErrBackendClosed), isReset(err):
		return OutcomeReset
	}
	return OutcomeError
}

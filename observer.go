package fcgi

import (
	"context"
	"io"
	"time"
)

// An Observer receives the timings and the outcome of each request a
// [Client] sends, to feed latency histograms (Prometheus, OpenTelemetry).
// Set it in Client.Observer.
//
// RequestDone is called once per call to [Client.Do], when the request
// ends: on the goroutine that reads the response Body, as the Body reaches
// its end, fails or is closed; or on Do's goroutine when Do fails. It must
// be safe for concurrent use and return quickly: the request's connection
// waits for it.
type Observer interface {
	RequestDone(RequestDoneInfo)
}

// RequestDoneInfo is what an [Observer] is told about a request. Durations
// are counted from the call to [Client.Do].
type RequestDoneInfo struct {
	// Backend is the address of the backend the request went to last; empty
	// when the Client has none.
	Backend string

	// Wait is the time the request waited for a connection, behind
	// MaxConnsPerBackend, over all its attempts.
	Wait time.Duration

	// FirstByte is the time until the response's CGI header arrived (when
	// Do returned); zero when none did.
	FirstByte time.Duration

	// Total is the time until the request ended: the Body read to its end,
	// closed, or failing, or Do failing.
	Total time.Duration

	// Status is the response's status code; zero when no header arrived.
	Status int

	// Retried says whether the request was sent more than once (see Client's
	// Retries).
	Retried bool

	// Outcome classifies how the request ended.
	Outcome Outcome

	// Err is why the request failed; nil for OutcomeOK.
	Err error
}

// A doTrace follows one call to Do, for BackendStats and the Observer.
type doTrace struct {
	start     time.Time // zero without an Observer
	wait      time.Duration
	firstByte time.Duration
	b         *backend // the backend of the last attempt
	retried   bool
}

// info builds what the Observer is told of a request ending with err.
func (tr *doTrace) info(ctx context.Context, status int, err error) RequestDoneInfo {
	ri := RequestDoneInfo{
		Wait:      tr.wait,
		FirstByte: tr.firstByte,
		Total:     time.Since(tr.start),
		Status:    status,
		Retried:   tr.retried,
		Outcome:   outcomeOf(ctx, err),
		Err:       err,
	}
	if tr.b != nil {
		ri.Backend = tr.b.addr
	}
	return ri
}

// doneDo runs after do with an Observer: a failed request is reported now, a
// response once its Body ends (see call.observeEnd).
func (c *Client) doneDo(ctx context.Context, tr *doTrace, resp *Response, err error) {
	if err != nil {
		c.Observer.RequestDone(tr.info(ctx, 0, err))
		return
	}
	tr.firstByte = time.Since(tr.start)
	resp.call.trace = *tr
	resp.call.traced = true
}

// observeEnd reports the end of a call whose Do succeeded to the Observer.
func (cl *call) observeEnd() {
	err := cl.err
	if err == io.EOF {
		err = nil
	}
	cl.c.Observer.RequestDone(cl.trace.info(cl.ctx, cl.resp.StatusCode, err))
}

// waited adds a wait for a connection that began at start, if any, to the
// backend's figures and to *total.
func (b *backend) waited(start *time.Time, total *time.Duration) {
	if start.IsZero() {
		return
	}
	d := time.Since(*start)
	b.stats.waitNanos.Add(int64(d))
	*total += d
}

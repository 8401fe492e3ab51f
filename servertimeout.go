package fcgi

import (
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// Server.ReadTimeout: a request's input streams must have arrived by its
// deadline, checked when the connection's read deadline passes (expire) and
// when the connection waits for room in a full body buffer (stdin, data).

// expire handles a read deadline: requests whose input is late are ended, and
// the next deadline is armed. It reports whether the connection lives on; an
// idle connection past its idle timeout does not.
func (c *conn) expire() bool {
	now := time.Now()
	var late []*request
	c.mu.Lock()
	if c.draining.Load() {
		// finish set the deadline that ends the connection: keep it.
		c.mu.Unlock()
		return true
	}
	var next time.Time
	if t := c.srv.idleTimeout(); len(c.reqs) == 0 && t > 0 && !c.idleSince.IsZero() {
		if next = c.idleSince.Add(t); !now.Before(next) {
			c.mu.Unlock()
			c.srv.stats.timeouts.Add(1)
			return false
		}
	}
	shutdown := c.srv.inShutdown.Load()
	var halfOpen []*request
	for _, req := range c.reqs {
		if shutdown && !req.started {
			halfOpen = append(halfOpen, req)
			continue
		}
		if req.inputArrived() {
			continue
		}
		if !req.deadline.After(now) {
			late = append(late, req)
			continue
		}
		if next.IsZero() || req.deadline.Before(next) {
			next = req.deadline
		}
	}
	c.readDeadline = next
	c.rwc.SetReadDeadline(next)
	c.mu.Unlock()
	for _, req := range late {
		c.inputLate(req)
	}
	// A request whose handler has not started has nothing to finish: Shutdown
	// ends it now rather than waiting for its input, which a stalled web
	// server may never send. OVERLOADED tells the web server it did not run.
	for _, req := range halfOpen {
		req.started = true
		req.inputDone.Store(true)
		req.cancel(ErrServerClosed)
		c.endByReader(req, nil, false, wire.StatusOverloaded)
	}
	return true
}

// inputLate ends the input of a request past its deadline: a request whose
// handler has not started is answered 408, a started one sees its body and
// its FCGI_DATA fail with ErrReadTimeout. Called on the serve goroutine.
func (c *conn) inputLate(req *request) {
	c.srv.stats.timeouts.Add(1)
	req.inputDone.Store(true)
	switch {
	case !req.started:
		req.paramsDone = true
		c.refuse(req, ErrReadTimeout)
	case req.body != nil:
		req.body.closeWithError(ErrReadTimeout)
	}
	if f := req.filter; f != nil && !f.ended {
		f.ended = true
		f.pipe.closeWithError(ErrReadTimeout)
	}
}

// inputArrived reports whether all of a request's input streams have ended:
// STDIN, and a Filter's DATA. Called on the serve goroutine.
func (req *request) inputArrived() bool {
	if !req.inputDone.Load() {
		return false
	}
	if req.role != RoleFilter || !req.started {
		return true
	}
	return req.filter != nil && req.filter.ended
}

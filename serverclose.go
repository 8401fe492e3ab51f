package fcgi

import "time"

// drainTimeout bounds how long a connection that is about to close keeps
// reading (and discarding) what the web server still sends, so that the close
// is a FIN and not a reset that makes nginx log "Connection reset by peer"
// and answer 502.
const drainTimeout = 2 * time.Second

// idleDrain bounds the drain of a connection whose web server had sent all of
// its last request: it closes its end as soon as it reads our FIN (nginx at
// once; fcgikit's Client when it next looks at an idle connection), so this
// only waits out a peer that does not.
const idleDrain = 250 * time.Millisecond

// mpxGrace is how long a closing connection of a multiplexing web server
// keeps refusing new requests with FCGI_OVERLOADED before its FIN.
const mpxGrace = 50 * time.Millisecond

// drainLimit bounds how many bytes such a connection discards, on top of the
// declared body (CONTENT_LENGTH) of the request that was answered last: a web
// server still sending a body the handler did not read must be able to
// finish, or it sees a broken pipe and answers 502.
const drainLimit = 1 << 20

// closeStage is where a closing connection is (conn.stage).
type closeStage int

const (
	stageOpen  closeStage = iota // not begun: woken by finish, or the first record read
	stageGrace                   // a multiplexing web server's late requests are refused
	stageDrain                   // FIN sent; what comes is discarded until the web server closes
)

// nextStage moves a closing connection on, on the serve goroutine, and
// reports whether it still reads: to stageGrace for mpxGrace when the web
// server multiplexes (it may have sent requests before it saw our last
// END_REQUEST: they are refused with OVERLOADED before the FIN), then to
// stageDrain (startDrain); at the end of that it reports false: close.
func (c *conn) nextStage() bool {
	switch c.stage {
	case stageOpen:
		if c.multiplexed {
			c.stage = stageGrace
			c.stageEnd = time.Now().Add(mpxGrace)
			c.setReadDeadline(c.stageEnd)
			return true
		}
		c.startDrain()
	case stageGrace:
		c.startDrain()
	default:
		return false
	}
	return true
}

// dropUnstarted gives back, when the connection has ended, the slots of
// requests whose handler never started: a started request is ended by its
// handler's return, but nothing else would end these. It runs on the serve
// goroutine, which owns started.
func (c *conn) dropUnstarted() {
	c.mu.Lock()
	n := 0
	for id, req := range c.reqs {
		if !req.started {
			delete(c.reqs, id)
			c.releaseParams(req)
			n++
		}
	}
	c.mu.Unlock()
	c.srv.requests.Add(-int64(n))
}

// startDrain sends FIN and gives the web server time to close its end:
// drainTimeout, and room for the rest of its last request, while it may still
// be sending that request's input (a body, a Filter's DATA) that the handler
// left unread; idleDrain when it has sent all of it and has nothing to send
// but a request it began before it saw our END_REQUEST. It runs on the serve
// goroutine, after anything that goroutine wrote for what it read, never
// before; CloseWrite waits under wmu for a response still being written.
func (c *conn) startDrain() {
	c.stage = stageDrain
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		c.wmu.Lock()
		c.flushAnswersLocked()
		cw.CloseWrite()
		c.wmu.Unlock()
	}
	d := idleDrain
	c.drainMax = drainLimit
	c.mu.Lock()
	req := c.lastReq
	c.lastReq = nil
	c.mu.Unlock()
	if req != nil {
		// Its input state is the serve goroutine's: this one's.
		c.drainMax += max(req.contentLength, 0)
		// The handler may have answered before the empty STDIN came (a body
		// read to its CONTENT_LENGTH, or none): that record is then ignored,
		// its request gone, and inputDone stays unset; what arrived tells
		// instead.
		inputDone := req.inputDone.Load() || req.contentLength == 0 || req.body != nil && req.body.allArrived()
		if req.role == RoleFilter {
			if f := req.filter; f != nil {
				c.drainMax += max(f.Length, 0)
				inputDone = inputDone && f.ended
			} else {
				// Refused before its handler started: DATA may all be still
				// to come.
				n, _ := dataMeta(req.env)
				c.drainMax += max(n, 0)
				inputDone = false
			}
		}
		if !inputDone {
			d = drainTimeout
		}
	}
	c.stageEnd = time.Now().Add(d)
	c.setReadDeadline(c.stageEnd)
}

// shutdown makes the connection close once its requests are done; an idle one
// begins to at once. Even an idle one drains rather than closes: a response
// may still be on its way out (its request already left the table), or the
// web server may be sending a request.
func (c *conn) shutdown() {
	c.mu.Lock()
	wasClosing := c.closing
	c.closing = true
	idle := len(c.reqs) == 0
	if idle && !wasClosing {
		// With closing, so that a request read from now on is discarded (and
		// met by the FIN) rather than refused.
		c.draining.Store(true)
	}
	if !idle {
		// The serve goroutine ends the requests whose handler has not started
		// (expire).
		c.lowerReadDeadlineLocked(time.Now())
	}
	c.mu.Unlock()
	// A connection already closing is finished by its last request
	// (endRequest, released).
	if idle && !wasClosing {
		c.finish()
	}
}

// close closes the connection and fails every request in flight with cause
// (nil for an orderly close after the last request).
func (c *conn) close(cause error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closing = true
	reqs := make([]*request, 0, len(c.reqs))
	for _, r := range c.reqs {
		reqs = append(reqs, r)
	}
	cancel := c.cancel
	c.mu.Unlock()
	c.rwc.Close()
	if cause == nil {
		cause = ErrConnClosed
	}
	c.srv.stats.aborted.Add(int64(len(reqs)))
	// Cancelling a request also fails its body (see httpRequest): the body
	// may be made concurrently by the serve goroutine, so it is not touched
	// here.
	for _, r := range reqs {
		r.cancel(cause)
	}
	if cancel != nil {
		cancel(cause)
	}
}

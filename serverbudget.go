package fcgi

import (
	"github.com/fcgikit/fcgi/internal/defaults"
	"github.com/fcgikit/fcgi/internal/wire"
)

// Server.MaxBufferedBytes: the request input a server holds over all its
// connections, PARAMS and bodies not yet read by their handlers, is counted
// in Server.buffered. PARAMS are refused past the budget; a body beyond it is
// held up to bodyFloor only (see bodyPipe.full).

// bodyFloor is what a body buffer holds when the budget is spent: one record
// of the largest size always fits in an empty buffer, so that each request's
// input moves on as its own handler reads, whatever the other requests hold.
const bodyFloor = 64 << 10

func (s *Server) maxBufferedBytes() int64 {
	return int64(limitOrDefault(s.MaxBufferedBytes, defaults.ServerMaxBufferedBytes))
}

// overBudget reports whether n more bytes would take the input held past the
// budget.
func (s *Server) overBudget(n int) bool {
	return s.buffered.Load()+int64(n) > s.maxBufferedBytes()
}

// holdParams counts n more bytes of req's PARAMS, or reports false, counting
// nothing, when they would go past the budget. Called by the serve goroutine
// before the handler starts, the only time req.held changes but for its
// release.
func (c *conn) holdParams(req *request, n int) bool {
	s := c.srv
	if s.buffered.Add(int64(n)) > s.maxBufferedBytes() {
		s.buffered.Add(-int64(n))
		return false
	}
	req.held += int64(n)
	return true
}

// releaseParams gives back what req's PARAMS held, once req has left its
// connection's table: the table lets one goroutine only do it, once.
func (c *conn) releaseParams(req *request) {
	if req.held != 0 {
		c.srv.buffered.Add(-req.held)
		req.held = 0
	}
}

// overload refuses a request whose PARAMS the budget cannot hold, as
// MaxRequests refuses one, from the serve goroutine: what it had sent is
// dropped now, and FCGI_OVERLOADED tells the web server it did not run, so
// that it may try again elsewhere or later.
func (c *conn) overload(req *request) {
	req.paramsDone, req.started = true, true
	req.params, req.env = nil, ""
	c.srv.stats.overloaded.Add(1)
	c.srv.logger().Debug("fcgi: refusing request", "remote", c.remoteAddr(), "id", req.id, "err", errOverBudget)
	req.cancel(errOverBudget)
	c.endByReader(req, nil, false, wire.StatusOverloaded)
}

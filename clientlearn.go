package fcgi

import (
	"sync"
	"sync/atomic"
	"time"
)

// What the client learns about a backend from its behaviour: after how many
// responses it closes a kept connection, and whether new connections stall
// behind the workers kept ones pin. Both concern PHP-FPM, which gives each
// kept connection a worker until the connection closes.

// A recycler learns how many responses the backend gives on one connection
// before closing it: PHP-FPM workers exit after pm.max_requests, and with
// keep-alive each worker serves one connection. The client then retires
// connections after that many responses itself, so that no request is sent on
// a connection the backend is about to close (a request that could not be
// retried if it is not idempotent).
//
// One observation proves nothing (a backend restart closes connections
// whatever they served), so the count is taken only when two connections in a
// row were closed after the same number of responses, with responses served
// in between: a restart closes all idle connections at once, and after a
// burst several of them served the same number. The count is forgotten after
// recycleMemory, since connections retired at it can no longer show whether
// it still holds.
type recycler struct {
	after atomic.Int64 // the learned count; 0: none
	kept  atomic.Int64 // responses after which a connection was kept

	mu       sync.Mutex
	seen     int64       // the last count observed
	seenKept int64       // kept when seen was observed
	gen      int64       // counts learnings, so that an old timer forgets nothing new
	timer    *time.Timer // forgets after
	stopped  bool        // the client is closed: no more timers
}

// recycleMemory is how long a learned recycling count is kept.
const recycleMemory = 5 * time.Minute

// retire reports whether a connection that has served responses is due to be
// closed before the backend closes it.
func (r *recycler) retire(served int) bool {
	n := r.after.Load()
	return n > 0 && int64(served) >= n
}

// closed records that the backend closed a connection idle after served
// responses. It reports whether that taught a count where none was known.
func (r *recycler) closed(served int) (learned bool) {
	n := int64(served)
	if n <= 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	kept := r.kept.Load()
	if n != r.seen || kept == r.seenKept {
		r.seen, r.seenKept = n, kept
		return false
	}
	learned = r.after.Load() == 0
	r.after.Store(n)
	r.seenKept = kept
	if r.timer != nil {
		r.timer.Stop()
	}
	r.gen++
	gen := r.gen
	r.timer = time.AfterFunc(recycleMemory, func() {
		r.mu.Lock()
		if r.gen == gen {
			r.after.Store(0)
		}
		r.mu.Unlock()
	})
	return learned
}

// stop ends the timer for good, for Client.Close.
func (r *recycler) stop() {
	r.mu.Lock()
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
}

// A stallWatch tells when requests on new one-request connections stall.
// Without MaxConnsPerBackend such a connection may sit in the backend's
// accept queue, waiting for a worker that a kept connection pins (PHP-FPM):
// the idle connections are closed when one starts to stall
// (backend.freeWorkers), and connections that finish meanwhile are closed
// rather than kept, to free their worker. With a limit no larger than the
// worker count this cannot happen, and connections are kept for their whole
// life, which keeps the recycler's count exact.
//
// A request stalls once it has waited for its first record four times the
// backend's usual wait (scripts that think before they print are no stall),
// within minFreshStall and maxFreshStall: a healthy backend answers a new
// connection as fast as a kept one, and counting those would close kept
// connections under ordinary load.
type stallWatch struct {
	// waiting counts the requests that have stalled and still have no
	// response record.
	waiting atomic.Int64
	// firstRecord is a moving average, in nanoseconds, of how long requests
	// on kept connections wait for their first response record (0: none yet).
	firstRecord atomic.Int64
}

const (
	minFreshStall = 250 * time.Millisecond
	maxFreshStall = 2 * time.Second
)

// sample adds a request's wait for its first record on a kept connection to
// the moving average. Samples lost to a race between two requests are of no
// consequence.
func (s *stallWatch) sample(d time.Duration) {
	avg := s.firstRecord.Load()
	if avg == 0 {
		avg = int64(d)
	} else {
		avg += (int64(d) - avg) / 8
	}
	s.firstRecord.Store(max(avg, 1))
}

// after is how long a request on a new connection may wait for its first
// record before it counts as stalled.
func (s *stallWatch) after() time.Duration {
	return min(max(4*time.Duration(s.firstRecord.Load()), minFreshStall), maxFreshStall)
}

// States of call.fresh.
const (
	freshPending = iota
	freshCounted
	freshDone
)

// watchFresh starts counting cl, a request on a new one-request connection,
// as stalled once it has waited too long.
func (cl *call) watchFresh() {
	b := cl.b
	cl.freshTimer = time.AfterFunc(b.stalls.after(), func() {
		if cl.fresh.CompareAndSwap(freshPending, freshCounted) {
			b.stalls.waiting.Add(1)
			if b.c.MaxConnsPerBackend <= 0 {
				b.freeWorkers()
			}
		}
	})
}

// notWaiting ends the call's count in stallWatch.waiting.
func (cl *call) notWaiting() {
	if cl.freshTimer == nil {
		return
	}
	cl.freshTimer.Stop()
	if cl.fresh.Swap(freshDone) == freshCounted {
		cl.b.stalls.waiting.Add(-1)
	}
}

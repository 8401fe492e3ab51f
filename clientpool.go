package fcgi

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Multiplexing state of a backend.
const (
	mpxUnknown = iota // MultiplexAuto before the probe answered
	mpxProbing
	mpxNo
	mpxYes
)

// A backend is one address with its connections: the idle ones (one request
// at a time) or the multiplexed ones, the count of all open ones, the
// requests waiting for a connection, and its health.
type backend struct {
	c    *Client
	addr string

	inflight atomic.Int64 // requests between acquire and their end
	down     atomic.Int64 // unix nanoseconds until which the backend is set aside
	// checkDown is down for a failed health check: until the next one.
	checkDown atomic.Int64
	gone      atomic.Bool // left the resolved set: drained, then closed

	probeStarted atomic.Bool

	recycle recycler // guarded by its own lock
	stalls  stallWatch
	stats   backendStats

	mu         sync.Mutex
	mpx        int
	maxReqs    int             // per multiplexed connection
	idle       []*clientConn   // one-request connections, most recent last
	mpxConns   []*clientConn   // multiplexed connections
	conns      int             // open or being dialed
	mpxDialing bool            // a multiplexed connection is being dialed
	waiters    []chan struct{} // requests waiting for a connection, oldest first
}

func newBackend(c *Client, addr string) *backend {
	b := &backend{c: c, addr: addr, mpx: mpxNo}
	switch c.Multiplex {
	case MultiplexOn:
		b.mpx = mpxYes
		b.maxReqs = c.maxMultiplexed(0)
	case MultiplexAuto:
		b.mpx = mpxUnknown
	}
	return b
}

func (b *backend) downUntil() time.Time {
	n := b.down.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// setAside takes b out of rotation for BackendCooldown.
func (b *backend) setAside(err error) {
	if len(b.c.current()) < 2 {
		return
	}
	d := b.c.backendCooldown()
	if d == 0 {
		return
	}
	b.down.Store(time.Now().Add(d).UnixNano())
	b.c.logger().Warn("fcgi: backend set aside", "backend", b.addr, "for", d, "err", err)
}

// acquire returns a call bound to a connection of b, reusing an idle or
// multiplexed connection unless forceNew, dialing otherwise, and waiting in
// line when MaxConnsPerBackend connections are open, a wait it adds to
// *waited.
func (b *backend) acquire(ctx context.Context, forceNew bool, waited *time.Duration) (*call, error) {
	c := b.c
	b.inflight.Add(1)
	var waitStart time.Time
	defer b.waited(&waitStart, waited)
	if c.Multiplex == MultiplexAuto && !b.probeStarted.Load() {
		b.startProbe()
	}
	for {
		if c.closed.Load() {
			b.inflight.Add(-1)
			return nil, ErrClientClosed
		}
		if b.gone.Load() {
			b.inflight.Add(-1)
			return nil, errBackendGone
		}
		b.mu.Lock()
		st := b.nextStepLocked(forceNew)
		b.mu.Unlock()
		var cl *call
		var err error
		switch {
		case st.cc != nil && st.cc.mpx:
			cl = st.cc.newMpxCall() // nil: the connection broke meanwhile
		case st.cc != nil:
			cl = b.reuseIdle(st.cc)
		case st.dial:
			cl, err = b.dialCall(ctx, st.mpx, st.maxReqs)
		default:
			if waitStart.IsZero() {
				waitStart = time.Now()
				b.stats.waitCount.Add(1)
			}
			if err = b.waitTurn(ctx, st.wait); err == nil {
				forceNew = false
				continue
			}
		}
		if err != nil {
			b.inflight.Add(-1)
			return nil, err
		}
		if cl != nil {
			return cl, nil
		}
	}
}

// A step is what acquire does next, decided under backend.mu: reuse cc, dial
// a connection (its slot in conns already taken), or wait for a turn on wait.
type step struct {
	cc      *clientConn
	dial    bool
	mpx     bool // the connection to dial is multiplexed
	maxReqs int  // requests the multiplexed connection to dial may carry
	wait    chan struct{}
}

// nextStepLocked decides acquire's next step in one critical section, so that
// a connection given back meanwhile always finds the request either holding
// it or in line to be woken.
func (b *backend) nextStepLocked(forceNew bool) step {
	mpx := b.mpx == mpxYes
	if !forceNew {
		if mpx {
			if cc := b.pickMpxLocked(); cc != nil {
				if cc.active.Add(1) < int32(cc.maxReqs) {
					b.wakeLocked() // room for the next in line too
				}
				return step{cc: cc}
			}
		} else if cc := b.popIdleLocked(); cc != nil {
			return step{cc: cc}
		}
	}
	limit := b.c.MaxConnsPerBackend
	if forceNew && limit > 0 && b.conns >= limit {
		// The retry of a request refused on a connection (FCGI_OVERLOADED,
		// FCGI_CANT_MPX_CONN) takes that connection's slot when it is idle
		// again: nothing else would free it before IdleTimeout.
		b.evictUnusedLocked()
	}
	// One multiplexed connection is dialed at a time: the others wait for its
	// free IDs.
	if (limit <= 0 || b.conns < limit) && !(mpx && b.mpxDialing) {
		b.conns++
		if mpx {
			b.mpxDialing = true
		}
		return step{dial: true, mpx: mpx, maxReqs: b.maxReqs}
	}
	ch := make(chan struct{}, 1)
	b.waiters = append(b.waiters, ch)
	return step{wait: ch}
}

// evictUnusedLocked closes the least recently used connection that carries
// no request, if there is one, freeing its slot.
func (b *backend) evictUnusedLocked() {
	if len(b.idle) > 0 {
		cc := b.removeIdleLocked(0)
		b.conns--
		go closeConns([]*clientConn{cc}) // owned by nobody; ends after close(2)
		return
	}
	for _, cc := range b.mpxConns {
		if cc.active.Load() == 0 && !cc.retired.Load() && b.removeMpxLocked(cc) {
			b.conns--
			go closeConns([]*clientConn{cc}) // its read loop then ends
			return
		}
	}
}

// reuseIdle returns a call on the idle connection cc, or nil when the backend
// has closed cc meanwhile.
func (b *backend) reuseIdle(cc *clientConn) *call {
	if !cc.aliveForReuse() {
		b.learnRecycling(cc)
		cc.closeConn()
		b.connGone()
		return nil
	}
	cl := newCall(cc)
	cl.reused = true
	return cl
}

// dialCall dials a connection for the slot nextStepLocked took and returns a
// call on it: nil without an error when a new multiplexed connection broke
// before the call could take an ID.
func (b *backend) dialCall(ctx context.Context, mpx bool, maxReqs int) (*call, error) {
	nc, err := b.c.dial(ctx, b.addr)
	var cc *clientConn
	if err == nil {
		cc = newClientConn(b, nc)
	}
	if mpx {
		b.mu.Lock()
		b.mpxDialing = false
		if cc != nil {
			cc.startMpx(maxReqs)
			cc.active.Add(1)
			b.mpxConns = append(b.mpxConns, cc)
		}
		// The next in line takes a free ID of the new connection, or dials in
		// its turn.
		b.wakeLocked()
		b.mu.Unlock()
	}
	if err != nil {
		b.connGone()
		if ctx.Err() == nil {
			b.setAside(err)
		}
		return nil, err
	}
	if mpx {
		return cc.newMpxCall(), nil
	}
	return newCall(cc), nil
}

// waitTurn waits on ch, the request's place in line, until a connection is
// given back or ctx ends.
func (b *backend) waitTurn(ctx context.Context, ch chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	removed := false
	for i, w := range b.waiters {
		if w == ch {
			b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
			removed = true
			break
		}
	}
	if !removed {
		// Woken while giving up: pass the turn on.
		b.wakeLocked()
	}
	b.mu.Unlock()
	return ctx.Err()
}

// wakeLocked lets the oldest waiter try again.
func (b *backend) wakeLocked() {
	if len(b.waiters) > 0 {
		ch := b.waiters[0]
		b.waiters = b.waiters[1:]
		ch <- struct{}{}
	}
}

// connGone records that a connection of b is closed (or was never made).
func (b *backend) connGone() {
	b.mu.Lock()
	b.conns--
	b.wakeLocked()
	b.mu.Unlock()
}

// removeIdleLocked takes the connection at index i out of the idle list, and
// stops its idle timer.
func (b *backend) removeIdleLocked(i int) *clientConn {
	cc := b.idle[i]
	copy(b.idle[i:], b.idle[i+1:])
	b.idle[len(b.idle)-1] = nil
	b.idle = b.idle[:len(b.idle)-1]
	cc.inIdle = false
	if cc.idleTimer != nil {
		cc.idleTimer.Stop()
	}
	return cc
}

// popIdleLocked takes the most recently used idle connection that is still
// within its lifetime.
func (b *backend) popIdleLocked() *clientConn {
	for len(b.idle) > 0 {
		cc := b.removeIdleLocked(len(b.idle) - 1)
		if cc.expired(time.Now()) {
			b.conns--
			go cc.closeConn() // owned by nobody; ends after close(2)
			continue
		}
		return cc
	}
	return nil
}

// putIdle returns a one-request connection whose response was read to its
// end; it is closed instead when the pool is full, the connection is too old,
// or the client is closed.
func (b *backend) putIdle(cc *clientConn) {
	c := b.c
	b.mu.Lock()
	cc.served++
	b.recycle.kept.Add(1)
	if b.retiring() || b.mpx == mpxYes || len(b.idle) >= c.maxIdle() || cc.expired(time.Now()) ||
		(c.MaxConnsPerBackend <= 0 && b.stalls.waiting.Load() > 0 && len(b.waiters) == 0) ||
		b.recycle.retire(cc.served) {
		b.conns--
		b.wakeLocked()
		b.mu.Unlock()
		cc.closeConn()
		return
	}
	cc.inIdle = true
	b.idle = append(b.idle, cc)
	b.armIdleTimer(cc)
	b.wakeLocked()
	b.mu.Unlock()
}

// idleExpired runs on the idle timer's goroutine.
func (cc *clientConn) idleExpired() {
	b := cc.b
	b.mu.Lock()
	if cc.mpx {
		if cc.active.Load() != 0 || !b.removeMpxLocked(cc) {
			b.mu.Unlock()
			return
		}
	} else {
		if !cc.inIdle {
			b.mu.Unlock()
			return
		}
		for i, x := range b.idle {
			if x == cc {
				b.removeIdleLocked(i)
				break
			}
		}
	}
	b.conns--
	b.wakeLocked()
	b.mu.Unlock()
	cc.closeConn()
}

// pickMpxLocked returns the multiplexed connection with the fewest requests
// that has a free request ID, is within its lifetime and has no abort waiting
// for its answer.
func (b *backend) pickMpxLocked() *clientConn {
	var best *clientConn
	now := time.Now()
	for _, cc := range b.mpxConns {
		n := int(cc.active.Load())
		if n >= cc.maxReqs || isClosed(cc.broken) || cc.retired.Load() || cc.aborting.Load() > 0 || cc.expired(now) {
			continue
		}
		if best == nil || n < int(best.active.Load()) {
			best = cc
		}
	}
	if best != nil && best.idleTimer != nil {
		best.idleTimer.Stop()
	}
	return best
}

func (b *backend) removeMpxLocked(cc *clientConn) bool {
	for i, x := range b.mpxConns {
		if x == cc {
			b.mpxConns = append(b.mpxConns[:i], b.mpxConns[i+1:]...)
			return true
		}
	}
	return false
}

// mpxSlotFree runs when a multiplexed request's ID is released.
func (b *backend) mpxSlotFree(cc *clientConn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cc.active.Load() == 0 && !cc.retired.Load() { // a retired one closes itself
		// A backend no longer multiplexed (FCGI_CANT_MPX_CONN) gets no more
		// requests on cc: kept, it would hold a slot of MaxConnsPerBackend
		// until IdleTimeout.
		if b.retiring() || b.mpx != mpxYes || cc.expired(time.Now()) {
			if b.removeMpxLocked(cc) {
				b.conns--
				go cc.closeConn() // closes the socket; the read loop then ends
			}
		} else {
			b.armIdleTimer(cc)
		}
	}
	b.wakeLocked()
}

// mpxConnBroken forgets a multiplexed connection whose read loop ended.
func (b *backend) mpxConnBroken(cc *clientConn) {
	b.mu.Lock()
	if b.removeMpxLocked(cc) {
		b.conns--
	}
	b.wakeLocked()
	b.mu.Unlock()
}

// stopMultiplexing is called when a backend answers CANT_MPX_CONN. Its
// multiplexed connections take no new request: those without one close now,
// freeing their slots of MaxConnsPerBackend for connections of one request
// each, and the others when their last request ends (mpxSlotFree).
func (b *backend) stopMultiplexing() {
	b.mu.Lock()
	b.mpx = mpxNo
	var unused []*clientConn
	keep := b.mpxConns[:0]
	for _, cc := range b.mpxConns {
		if cc.active.Load() == 0 && !cc.retired.Load() {
			unused = append(unused, cc)
		} else {
			keep = append(keep, cc)
		}
	}
	clear(b.mpxConns[len(keep):])
	b.mpxConns = keep
	b.conns -= len(unused)
	b.wakeAllLocked()
	b.mu.Unlock()
	closeConns(unused)
}

// closeIdle closes the idle connections, for Client.Close.
func (b *backend) closeIdle() {
	if b.retiring() {
		b.recycle.stop()
	}
	b.mu.Lock()
	idle := b.takeIdleLocked()
	var mpx []*clientConn
	keep := b.mpxConns[:0]
	for _, cc := range b.mpxConns {
		if cc.active.Load() == 0 {
			mpx = append(mpx, cc)
		} else {
			keep = append(keep, cc)
		}
	}
	b.mpxConns = keep
	b.conns -= len(mpx)
	var busy []*clientConn
	if b.retiring() {
		// Closed once the requests on them end; at once if those left were
		// all aborted, whose callers are gone.
		busy = append(busy, keep...)
		for _, cc := range busy {
			cc.retired.Store(true)
		}
	}
	// Wake every waiter: they see the closed client and fail.
	b.wakeAllLocked()
	b.mu.Unlock()
	closeConns(idle)
	closeConns(mpx)
	for _, cc := range busy {
		cc.closeIfDrained()
	}
}

// freeWorkers closes the idle connections when a request on a new connection
// has waited too long for its first record: it may sit in the backend's
// accept queue behind workers those connections pin (PHP-FPM gives a
// connection its worker until the connection closes).
func (b *backend) freeWorkers() {
	b.mu.Lock()
	idle := b.takeIdleLocked()
	b.wakeAllLocked()
	b.mu.Unlock()
	closeConns(idle)
}

// takeIdleLocked removes the idle one-request connections from the pool and
// returns them for closeConns.
func (b *backend) takeIdleLocked() []*clientConn {
	idle := b.idle
	b.idle = nil
	b.conns -= len(idle)
	for _, cc := range idle {
		cc.inIdle = false
	}
	return idle
}

// closeConns closes connections taken out of the pool.
func closeConns(conns []*clientConn) {
	for _, cc := range conns {
		if cc.idleTimer != nil {
			cc.idleTimer.Stop()
		}
		cc.closeConn()
	}
}

// wakeAllLocked lets every waiter try again.
func (b *backend) wakeAllLocked() {
	for len(b.waiters) > 0 {
		b.wakeLocked()
	}
}

// armIdleTimer starts cc's IdleTimeout.
func (b *backend) armIdleTimer(cc *clientConn) {
	d := b.c.idleTimeout()
	if d == 0 {
		return // kept until the backend closes it
	}
	if cc.idleTimer == nil {
		cc.idleTimer = time.AfterFunc(d, cc.idleExpired)
	} else {
		cc.idleTimer.Reset(d)
	}
}

// startProbe asks the backend, once and in the background, whether it
// multiplexes. Requests meanwhile use one connection each.
func (b *backend) startProbe() {
	b.mu.Lock()
	if b.mpx != mpxUnknown {
		b.mu.Unlock()
		return
	}
	b.mpx = mpxProbing
	b.probeStarted.Store(true)
	b.mu.Unlock()
	c := b.c
	c.wg.Add(1)
	// Owned by the Client; ends within ProbeTimeout. Client.Close waits.
	go func() {
		defer c.wg.Done()
		vals, err := c.GetValues(context.Background(), b.addr, "FCGI_MPXS_CONNS", "FCGI_MAX_REQS")
		mpx := mpxNo
		reported := 0
		if err != nil {
			c.logger().Info("fcgi: multiplexing probe failed; one request per connection", "backend", b.addr, "err", err)
		} else if vals["FCGI_MPXS_CONNS"] == "1" {
			mpx = mpxYes
			if n, err := strconv.Atoi(vals["FCGI_MAX_REQS"]); err == nil && n > 0 {
				reported = n
			}
		}
		b.mu.Lock()
		b.mpx, b.maxReqs = mpx, c.maxMultiplexed(reported)
		var idle []*clientConn
		if mpx == mpxYes {
			// One-request connections are no longer needed.
			idle = b.takeIdleLocked()
		}
		b.wakeAllLocked()
		b.mu.Unlock()
		closeConns(idle)
	}()
}

// learnRecycling records that the backend closed cc, idle after cc.served
// responses (see recycler).
func (b *backend) learnRecycling(cc *clientConn) {
	if b.recycle.closed(cc.served) {
		b.c.logger().Info("fcgi: backend closes connections after a number of requests; retiring them first", "backend", b.addr, "requests", cc.served)
	}
}

package fcgi

import "time"

// SetAbortGrace shortens how long c waits for END_REQUEST after
// FCGI_ABORT_REQUEST on a multiplexed connection.
func SetAbortGrace(c *Client, d time.Duration) { c.abortGrace = d }

// PoolCounts returns the connections c has open (or is dialing) and those
// idle, over all backends.
func PoolCounts(c *Client) (open, idle int) {
	c.init()
	for _, b := range c.backends {
		b.mu.Lock()
		open += b.conns
		idle += len(b.idle)
		for _, cc := range b.mpxConns {
			if cc.active.Load() == 0 {
				idle++
			}
		}
		b.mu.Unlock()
	}
	return open, idle
}

// ClientTimeouts are the timeouts a Client applies, zero meaning none.
type ClientTimeouts struct {
	Dial, Write, ResponseHeader, Read, Idle, Probe, Cooldown time.Duration
}

// TimeoutsOf returns the timeouts c applies.
func TimeoutsOf(c *Client) ClientTimeouts {
	return ClientTimeouts{
		Dial:           c.dialTimeout(),
		Write:          c.writeTimeout(),
		ResponseHeader: c.responseHeaderTimeout(),
		Read:           c.readTimeout(),
		Idle:           c.idleTimeout(),
		Probe:          c.probeTimeout(),
		Cooldown:       c.backendCooldown(),
	}
}

// RetiredConns returns how many of c's multiplexed connections are retired
// and still open.
func RetiredConns(c *Client) int {
	c.init()
	n := 0
	for _, b := range c.backends {
		b.mu.Lock()
		for _, cc := range b.mpxConns {
			if cc.retired.Load() {
				n++
			}
		}
		b.mu.Unlock()
	}
	return n
}

// PoolState returns, for c's first backend, the requests in flight and
// waiting for a connection, and the connections open, idle and
// multiplexed.
func PoolState(c *Client) (inflight int64, waiters, conns, idle, mpx int) {
	c.init()
	b := c.backends[0]
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inflight.Load(), len(b.waiters), b.conns, len(b.idle), len(b.mpxConns)
}

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

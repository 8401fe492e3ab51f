package fcgi

import "time"

// BackendAddrs returns the addresses c balances requests over.
func BackendAddrs(c *Client) []string {
	c.init()
	var addrs []string
	for _, b := range c.current() {
		addrs = append(addrs, b.addr)
	}
	return addrs
}

// BackendAside reports whether c's backend at addr is set aside, by failed
// requests or a failed health check.
func BackendAside(c *Client, addr string) bool {
	c.init()
	for _, b := range c.current() {
		if b.addr == addr {
			return b.asideUntil().After(time.Now())
		}
	}
	return false
}

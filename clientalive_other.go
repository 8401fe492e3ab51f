//go:build !unix

package fcgi

import "net"

// An aliveChecker cannot check without blocking on this platform; a
// connection closed while idle is caught by the retry rule instead.
type aliveChecker struct{}

func newAliveChecker(net.Conn) *aliveChecker { return &aliveChecker{} }

func (*aliveChecker) check() bool { return true }

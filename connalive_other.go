//go:build !unix

package fcgi

import "net"

// connAlive cannot check without blocking on this platform; a connection
// closed while idle is caught by the retry rule instead.
func connAlive(net.Conn) bool { return true }

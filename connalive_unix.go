//go:build unix

package fcgi

import (
	"net"
	"syscall"
)

// connAlive reports whether an idle connection is still open: it peeks
// without blocking, and a connection that reads end-of-file, an error, or
// stray bytes is not reused.
func connAlive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		case err != nil, n >= 0:
			alive = false
		}
		return true
	})
	return err == nil && alive
}

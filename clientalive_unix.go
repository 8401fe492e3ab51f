//go:build unix

package fcgi

import (
	"net"
	"syscall"
)

// An aliveChecker peeks at an idle connection without blocking: a connection
// that reads end-of-file, an error, or stray bytes is not reused. It is made
// once per connection so that a check costs no allocation.
type aliveChecker struct {
	rc    syscall.RawConn
	fn    func(fd uintptr) bool
	alive bool
	b     [1]byte
}

func newAliveChecker(nc net.Conn) *aliveChecker {
	a := &aliveChecker{}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			a.rc = rc
		}
	}
	a.fn = a.peek
	return a
}

func (a *aliveChecker) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), a.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		a.alive = true
	case err != nil, n >= 0:
		a.alive = false
	}
	return true
}

func (a *aliveChecker) check() bool {
	if a.rc == nil {
		return true
	}
	a.alive = false
	if err := a.rc.Read(a.fn); err != nil {
		return false
	}
	return a.alive
}

// Package pgroup kills process groups: a child started with Setpgid leads
// a group of its own, and killing the group reaches everything the child
// started (unless that called setsid, as daemons do).
package pgroup

import (
	"sync"
	"syscall"
)

// A Group is the process group led by one child. It is killed until it is
// known to be empty: once the leader has been reaped and the group killed
// once more, its ID may be reused and must not be signalled again. A
// Group is safe for concurrent use.
type Group struct {
	mu   sync.Mutex
	pgid int
	done bool
}

// New returns the group led by the process pid.
func New(pid int) *Group { return &Group{pgid: pid} }

// Kill sends SIGKILL to every process left in the group. reaped says the
// leader has been reaped: this is the last signal the group gets, and
// later calls do nothing.
func (g *Group) Kill(reaped bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done {
		syscall.Kill(-g.pgid, syscall.SIGKILL)
		g.done = reaped
	}
}

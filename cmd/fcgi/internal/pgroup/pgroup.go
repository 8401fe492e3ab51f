// Package pgroup kills process groups: a child started with Setpgid leads
// a group of its own, and killing the group reaches everything the child
// started (unless that called setsid, as daemons do, or leads a group of
// its own, as the scripts fcgi wrap runs do). While the child runs, a kill
// also reaches its descendants outside the group.
package pgroup

import (
	"os"
	"strconv"
	"strings"
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
// later calls do nothing. Before that, the leader's descendants are
// killed too, wherever their group: fcgi wrap under fcgi spawn runs each
// script in a group of its own, which a kill of wrap's group misses, and
// once wrap is dead nothing else would kill them.
func (g *Group) Kill(reaped bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return
	}
	if !reaped {
		killTree(g.pgid)
	}
	syscall.Kill(-g.pgid, syscall.SIGKILL)
	g.done = reaped
}

// killTree kills pid and its descendants. A process that dies hands its
// children to init, where they no longer show as descendants, and a
// running one may fork meanwhile: so each is stopped first, look after
// look through /proc until no new one turns up, and only then are they
// all killed.
func killTree(pid int) {
	// A leader reaped a moment ago may have lent its PID to a process
	// outside the group, which is no one's to kill.
	if _, _, pgrp, ok := Stat(pid); !ok || pgrp != pid {
		return
	}
	stopped := map[int]bool{pid: true}
	syscall.Kill(pid, syscall.SIGSTOP)
	for found := true; found; {
		found = false
		for _, d := range descendants(pid) {
			if !stopped[d] {
				stopped[d] = true
				found = true
				syscall.Kill(d, syscall.SIGSTOP)
			}
		}
	}
	for d := range stopped {
		syscall.Kill(d, syscall.SIGKILL)
	}
}

// descendants lists the processes below pid; none where there is no /proc.
func descendants(pid int) []int {
	var out []int
	for next := Children(pid); len(next) > 0; {
		p := next[0]
		next = append(next[1:], Children(p)...)
		out = append(out, p)
	}
	return out
}

// Children lists the children of process pid; none where there is no
// /proc. Linux lists each thread's in /proc/PID/task/TID/children: a file
// per thread, not one per process of the machine, which would cost more
// than the CGI request whose SIGCHLD asks. Without those files (a kernel
// built without CONFIG_PROC_CHILDREN), every process's stat is read.
func Children(pid int) []int {
	if out, ok := childrenFromTasks(pid); ok {
		return out
	}
	return childrenFromStat(pid)
}

// childrenFromTasks reads pid's children from its threads' children
// files; ok is false where the kernel has none.
func childrenFromTasks(pid int) (out []int, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, true // pid is gone, or there is no /proc: no children
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + t.Name() + "/children")
		if err != nil {
			if os.IsNotExist(err) && len(out) == 0 {
				return nil, false
			}
			continue // a thread that has just exited
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out, true
}

// childrenFromStat lists pid's children from every process's
// /proc/PID/stat.
func childrenFromStat(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, _, ok := Stat(p); ok && ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// Stat returns the state (R, S, Z...), the parent and the process group
// of pid, from /proc/PID/stat; ok is false if pid is gone.
func Stat(pid int) (state string, ppid, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, 0, false
	}
	// The command name, in parentheses, may hold spaces: the fields after
	// it are the state, the parent's PID and the group's.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 3 {
		return "", 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	return f[0], ppid, pgrp, err1 == nil && err2 == nil
}

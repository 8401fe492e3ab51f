package pgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startGrandchild starts /bin/sh -c script in a group of its own; script
// starts a grandchild and writes its PID to the file named by $PIDFILE.
// It returns the child, once the grandchild's PID is known, and that PID.
// The test's cleanup kills both.
func startGrandchild(t *testing.T, script string) (*exec.Cmd, int) {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), "PIDFILE="+pidfile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var grandchild int
	t.Cleanup(func() {
		if grandchild > 0 {
			syscall.Kill(grandchild, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for grandchild == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidfile)
		if s, ok := strings.CutSuffix(string(b), "\n"); ok {
			grandchild, _ = strconv.Atoi(s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if grandchild == 0 {
		t.Fatal("no grandchild PID")
	}
	return cmd, grandchild
}

// waitDead fails the test unless pid is gone (or a zombie) within 10 s.
func waitDead(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(pid) {
		t.Errorf("%s %d survived Kill", what, pid)
	}
}

// TestKillReachesGrandchild: Kill reaches a child's child that ignores
// SIGTERM, and after Kill(true) the group is never signalled again.
func TestKillReachesGrandchild(t *testing.T) {
	cmd, grandchild := startGrandchild(t, "trap '' TERM; sleep 1000 & echo $! > $PIDFILE; wait")
	g := New(cmd.Process.Pid)
	g.Kill(false)
	cmd.Wait()
	g.Kill(true)
	waitDead(t, grandchild, "grandchild")
	if !g.done {
		t.Error("Kill(true) left the group to be signalled again")
	}
}

// TestKillReachesDescendantOutsideGroup: while the leader runs, Kill
// reaches its descendants that left its group (a group of their own, as
// the scripts fcgi wrap runs lead, or a session), which a kill of the
// group misses.
func TestKillReachesDescendantOutsideGroup(t *testing.T) {
	// setsid, not a group leader, makes a session of its own and execs
	// sleep in it, with its PID.
	cmd, grandchild := startGrandchild(t, "setsid sleep 1000 & echo $! > $PIDFILE; wait")
	// $! is known before setsid has run: wait for it to leave the group.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, pgrp, ok := Stat(grandchild); ok && pgrp != cmd.Process.Pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still in the leader's group: the test tests nothing", grandchild)
		}
		time.Sleep(10 * time.Millisecond)
	}
	New(cmd.Process.Pid).Kill(false)
	waitDead(t, grandchild, "grandchild outside the group")
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	state, _, _, ok := Stat(pid)
	return ok && state != "Z"
}

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

// TestKillReachesGrandchild: Kill reaches a child's child that ignores
// SIGTERM, and after Kill(true) the group is never signalled again.
func TestKillReachesGrandchild(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command("/bin/sh", "-c", "trap '' TERM; sleep 1000 & echo $! > "+pidfile+"; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var grandchild int
	t.Cleanup(func() {
		if grandchild > 0 {
			syscall.Kill(grandchild, syscall.SIGKILL)
		}
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
	g := New(cmd.Process.Pid)
	g.Kill(false)
	cmd.Wait()
	g.Kill(true)
	for alive(grandchild) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(grandchild) {
		t.Errorf("grandchild %d survived Kill", grandchild)
	}
	if !g.done {
		t.Error("Kill(true) left the group to be signalled again")
	}
}

// TestKillReachesDescendantOutsideGroup: while the leader runs, Kill
// reaches its descendants that left its group (a group of their own, as
// the scripts fcgi wrap runs lead, or a session), which a kill of the
// group misses.
func TestKillReachesDescendantOutsideGroup(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	// setsid, not a group leader, makes a session of its own and execs
	// sleep in it, with its PID.
	cmd := exec.Command("/bin/sh", "-c", "setsid sleep 1000 & echo $! > "+pidfile+"; wait")
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
	if _, _, pgrp, _ := Stat(grandchild); pgrp == cmd.Process.Pid {
		t.Fatalf("grandchild %d in the leader's group: the test tests nothing", grandchild)
	}
	g := New(cmd.Process.Pid)
	g.Kill(false)
	for alive(grandchild) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(grandchild) {
		t.Errorf("grandchild %d, outside the group, survived Kill", grandchild)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

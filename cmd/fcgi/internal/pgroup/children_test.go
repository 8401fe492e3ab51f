package pgroup

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

// TestChildren: both ways of listing this process's children find one
// just started, and agree.
func TestChildren(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	fast, slow := Children(os.Getpid()), childrenFromStat(os.Getpid())
	slices.Sort(fast)
	slices.Sort(slow)
	if !slices.Contains(fast, cmd.Process.Pid) {
		t.Errorf("Children = %v, without the child %d", fast, cmd.Process.Pid)
	}
	if !slices.Equal(fast, slow) {
		t.Errorf("Children = %v, from every stat %v", fast, slow)
	}
}

// What reap's sweep costs at each SIGCHLD: reading this process's children
// against reading every process of the machine.
func BenchmarkChildren(b *testing.B) {
	for b.Loop() {
		Children(os.Getpid())
	}
}

func BenchmarkChildrenFromStat(b *testing.B) {
	for b.Loop() {
		childrenFromStat(os.Getpid())
	}
}

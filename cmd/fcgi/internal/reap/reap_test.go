package reap

import (
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
	fast, slow := children(), childrenFromStat()
	slices.Sort(fast)
	slices.Sort(slow)
	if !slices.Contains(fast, cmd.Process.Pid) {
		t.Errorf("children() = %v, without the child %d", fast, cmd.Process.Pid)
	}
	if !slices.Equal(fast, slow) {
		t.Errorf("children() = %v, from every stat %v", fast, slow)
	}
}

// What a sweep costs at each SIGCHLD: reading this process's children
// against reading every process of the machine.
func BenchmarkChildren(b *testing.B) {
	for b.Loop() {
		children()
	}
}

func BenchmarkChildrenFromStat(b *testing.B) {
	for b.Loop() {
		childrenFromStat()
	}
}

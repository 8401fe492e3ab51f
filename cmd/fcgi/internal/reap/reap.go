// Package reap reaps the orphans a command adopts. The processes fcgi wrap
// and fcgi spawn start leave children behind when they die (a script's
// background job, killed with its group), and those go to the nearest
// subreaper or to PID 1: in a container without an init, that is the
// command itself, which must wait for them or keep them as zombies for
// ever. Adopt makes the command a subreaper, so that it adopts them
// wherever it runs, and reaps them as they die; the processes the command started
// itself are left to their exec.Cmd, whose Wait would otherwise fail.
package reap

import (
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"github.com/fcgikit/fcgi/cmd/fcgi/internal/pgroup"
)

var (
	// starting is held shared from a Start to the recording of its PID,
	// and exclusively by a sweep, so that a sweep never takes a process
	// that is starting for an orphan.
	starting sync.RWMutex

	mu   sync.Mutex
	ours = map[int]bool{} // started by Start, not yet Done
)

// Start starts cmd, whose exit its own Wait reaps; call Done after that
// Wait.
func Start(cmd *exec.Cmd) error {
	starting.RLock()
	defer starting.RUnlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	mu.Lock()
	ours[cmd.Process.Pid] = true
	mu.Unlock()
	return nil
}

// Done says that a process of Start has been waited for.
func Done(cmd *exec.Cmd) {
	mu.Lock()
	delete(ours, cmd.Process.Pid)
	mu.Unlock()
}

// Adopt makes this process a child subreaper and reaps the orphans that
// come to it, until stop is called.
func Adopt() (stop func()) {
	becomeSubreaper()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	quit, done := make(chan struct{}), make(chan struct{})
	// Owned by the command through stop: reaps orphans at each SIGCHLD
	// (signals coalesce: a sweep takes every zombie there is). Ends at
	// stop.
	go func() {
		defer close(done)
		for {
			select {
			case <-sigc:
				sweep()
			case <-quit:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigc)
		close(quit)
		<-done
	}
}

// sweep waits for every child that Start did not start and that has
// exited: a wait with WNOHANG reaps a zombie and leaves a running child.
func sweep() {
	starting.Lock()
	defer starting.Unlock()
	for _, pid := range pgroup.Children(os.Getpid()) {
		mu.Lock()
		mine := ours[pid]
		mu.Unlock()
		if !mine {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
	}
}

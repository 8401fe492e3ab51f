package benchutil

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is a program started in a process group of its own, so that its CPU
// time, its workers' included, can be read ([GroupCPU]) and it can be
// stopped by its PID.
type Proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartProc starts cmd in a process group of its own and returns once ready
// succeeds, trying it every 20 ms for up to timeout. logs, if not nil, gives
// the end of the program's output for the errors.
func StartProc(ctx context.Context, name string, cmd *exec.Cmd, timeout time.Duration, ready func() error, logs func() string) (*Proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &Proc{cmd: cmd, exited: make(chan struct{})}
	// Reaps the process; ends when it exits.
	go func() { cmd.Wait(); close(p.exited) }()
	tail := func() string {
		if logs == nil {
			return ""
		}
		return ":\n" + logs()
	}
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("%s exited at start%s", name, tail())
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("%s not ready after %v: %v%s", name, timeout, err, tail())
		}
	}
}

// Listening returns a readiness check that address accepts connections.
func Listening(network, address string) func() error {
	return func() error {
		c, err := net.DialTimeout(network, address, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// Pgid returns the process group, for [GroupCPU].
func (p *Proc) Pgid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM (which nginx and PHP-FPM pass on to their workers) and
// kills the process group if it has not exited within 5 s.
func (p *Proc) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// LogBuffer keeps a program's output, written by the goroutines that copy
// it while the caller reads it for an error message.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *LogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns the last 4 KiB written.
func (s *LogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	return string(b[max(0, len(b)-4096):])
}

// Check makes one GET of url and verifies that it answers 200 with want.
func Check(url string, want []byte) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, want) {
		return fmt.Errorf("GET %s: %s, %d bytes, want 200 and %d bytes", url, resp.Status, len(b), len(want))
	}
	return nil
}

package main

import (
	"bytes"
	"errors"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInterruptExitStatus: every command that does one job and ends,
// interrupted while it waits for the application, exits with the
// signal's status (130 for Ctrl-C, 143 for SIGTERM), as the exit table
// says for all commands, and says it was interrupted rather than
// "context canceled", a failure (1) or a busy application (5).
func TestInterruptExitStatus(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		args []string
	}{
		{syscall.SIGINT, []string{"call", "ADDR", "/"}},
		{syscall.SIGINT, []string{"call", "--raw", "ADDR", "/"}},
		{syscall.SIGTERM, []string{"ping", "ADDR"}},
		{syscall.SIGINT, []string{"status", "ADDR"}},
		{syscall.SIGINT, []string{"values", "ADDR"}},
		{syscall.SIGINT, []string{"lint", "ADDR"}},
		{syscall.SIGINT, []string{"opcache", "status", "--dir", t.TempDir(), "--backend", "ADDR"}},
	} {
		name := strings.Join(tc.args, " ")
		t.Run(name, func(t *testing.T) {
			arrived := make(chan struct{}, 8)
			sock := rawServer(t, func(nc net.Conn) {
				buf := make([]byte, 4096)
				if _, err := nc.Read(buf); err == nil {
					arrived <- struct{}{}
				}
				for {
					if _, err := nc.Read(buf); err != nil {
						return
					}
				}
			})
			args := append([]string{}, tc.args...)
			for i, a := range args {
				if a == "ADDR" {
					args[i] = sock
				}
			}
			cmd := exec.Command(fcgiBin, append(args, "--timeout", "60s")...)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-arrived:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal("no request arrived")
			}
			cmd.Process.Signal(tc.sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running 30 s after %v", tc.sig)
			}
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
			if want := 128 + int(tc.sig); code != want {
				t.Errorf("exit %d after %v, want %d", code, tc.sig, want)
			}
			if s := errb.String(); !strings.Contains(s, "interrupted") || strings.Contains(s, "context canceled") {
				t.Errorf("stderr %q does not say the command was interrupted, or says context canceled", s)
			}
		})
	}
}

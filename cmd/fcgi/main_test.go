package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"go.uber.org/goleak"
)

// fcgiBin is the command under test, built once by TestMain.
var fcgiBin string

// TestMain builds the fcgi binary once, runs the tests against it as a
// user would, and fails the run if a test leaves a goroutine behind.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fcgi-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fcgiBin = filepath.Join(dir, "fcgi")
	out, err := exec.Command("go", "build", "-race", "-o", fcgiBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		defer func() {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
				code = 1
			}
		}()
		code = m.Run()
	}()
	os.Exit(code)
}

// result is what one run of the command produced.
type result struct {
	stdout, stderr string
	code           int
}

// runFcgi runs the command with args and stdin, waiting at most 60 s.
func runFcgi(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fcgiBin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("fcgi %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("fcgi %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
	return res
}

// startServer serves h with fcgikit's own server on a unix socket in a
// temp dir and returns its address ("unix:/path").
func startServer(t *testing.T, h http.Handler) string {
	t.Helper()
	return startFcgiServer(t, &fcgi.Server{Handler: h}, filepath.Join(t.TempDir(), "app.sock"))
}

// startFcgiServer serves with srv on a unix socket at path and returns
// "unix:"+path.
func startFcgiServer(t *testing.T, srv *fcgi.Server, path string) string {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "unix:" + path
}

// rawServer accepts on a unix socket in a temp dir and runs serve on each
// connection in its own goroutine; the test's cleanup closes the listener
// and every connection and waits for the goroutines. It returns the
// socket's path.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "raw.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() { serve(nc) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return sock
}

package fcgicaddy_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

// caddyBin is the caddy binary of cmd/caddy, built once by TestMain without
// -race: the tests run it as a user would, and Caddy's race build would
// cost minutes of CI for no check of this module's code (the transport's own
// code runs in that binary, not in the test).
var caddyBin string

// xcaddyBuildFlags and xcaddyBuildEnv are how xcaddy v0.4.5 compiles Caddy
// (its builder.go). TestMain builds cmd/caddy the same way: the binary under
// test is the one users get from xcaddy, and TestXcaddyBuild finds every
// package in the build cache, leaving it only the link to do.
var (
	xcaddyBuildFlags = []string{"-ldflags", "-w -s", "-trimpath", "-tags", "nobadger,nomysql,nopgx"}
	xcaddyBuildEnv   = []string{"CGO_ENABLED=0"}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fcgicaddy-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddyBin = filepath.Join(dir, "caddy")
	build := exec.Command("go", append(append([]string{"build", "-o", caddyBin}, xcaddyBuildFlags...), "./cmd/caddy")...)
	build.Env = append(os.Environ(), xcaddyBuildEnv...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building caddy:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// caddyServer is a running caddy run.
type caddyServer struct {
	cmd  *exec.Cmd
	dir  string
	logs *bytes.Buffer
}

// globalBlock is the global options block every test Caddyfile starts
// with: no certificates, nothing outside dir, and options, lines of global
// options ("admin off" for no admin endpoint).
func globalBlock(dir, options string) string {
	return fmt.Sprintf("{\n%s\n\tauto_https off\n\tpersist_config off\n\tstorage file_system %s\n}\n", options, filepath.Join(dir, "storage"))
}

// caddyEnv is the environment caddy runs in: HOME and the XDG directories
// in dir, so that nothing is written outside it.
func caddyEnv(dir string) []string {
	return append(os.Environ(),
		"HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
	)
}

// startCaddy runs caddy with the Caddyfile globalBlock + sites, waits until
// every address in ports accepts connections, and stops it when the test
// ends, showing its log if the test failed.
func startCaddy(t *testing.T, sites string, ports ...int) *caddyServer {
	t.Helper()
	return startCaddyIn(t, peer.TempDir(t), "\tadmin off", sites, ports...)
}

// startCaddyIn is startCaddy in dir, with the global options options.
func startCaddyIn(t *testing.T, dir, options, sites string, ports ...int) *caddyServer {
	t.Helper()
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(globalBlock(dir, options)+sites), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &caddyServer{dir: dir, logs: new(bytes.Buffer)}
	c.cmd = exec.Command(caddyBin, "run", "--config", conf, "--adapter", "caddyfile")
	c.cmd.Env = caddyEnv(dir)
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("caddy log:\n%s", tail(c.logs.String(), 4000))
		}
	})
	for _, port := range ports {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(20 * time.Second)
		for {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case err := <-exited:
				exited <- err // for Cleanup, which waits for the exit
				t.Fatalf("caddy exited (%v) before listening on %s:\n%s\n%s", err, addr, sites, c.logs)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("caddy does not listen on %s:\n%s", addr, c.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// socket turns a peer address "unix:/path" into Caddy's "unix//path".
func socket(addr string) string {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix/" + p
	}
	return addr
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

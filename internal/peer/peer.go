// Package peer starts real FastCGI peers (nginx, PHP-FPM, HAProxy,
// lighttpd, Apache httpd and cgi-fcgi), and Prometheus to scrape what
// fcgikit exports, for integration tests.
//
// Each launcher writes its own configuration into a private directory,
// starts the Debian binary in the foreground as a child process of the
// test, waits until the peer accepts connections, and registers a
// t.Cleanup that stops it by PID and reaps it. When the test has failed,
// the cleanup also copies the tail of the peer's logs into the test log;
// a peer that fails to start fails the test with its configuration and
// logs. [Process.Logs] and each peer's ErrorLog give the logs on demand.
//
// A test puts nginx in front of PHP-FPM like this (peer_test.go has one
// working configuration per peer):
//
//	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
//	fpm.WriteFile("echo.php", "<?php echo $_SERVER['REQUEST_URI'];")
//	n := peer.StartNginx(t, peer.NginxConfig{FastCGI: fpm.Addr(), Keepalive: 1, Root: fpm.Root()})
//	resp, err := http.Get(n.URL() + "/echo.php?a=1")
//
// # Gating
//
// Every launcher first calls [Require]:
//
//   - go test -short skips all real-peer tests;
//   - a missing binary skips the test, naming the Debian package to install;
//   - with the environment variable CI=true a missing binary fails the test
//     instead, so that CI cannot pass by skipping.
//
// CI must be unset, empty, "false" or "true"; any other value fails the
// test, so a typo (CI=1, CI=yes) cannot silently turn skipping back on.
//
// # Addresses
//
// All launchers take FastCGI backend addresses in one format:
// "host:port" for TCP (for example "127.0.0.1:9000") or "unix:/abs/path"
// for a unix socket (the form nginx uses and [PHPFPM.Addr] returns). Each
// launcher converts it to its peer's own syntax.
//
// The package is Linux-only in practice (it reads /proc and relies on
// process groups) and imports only the standard library.
package peer

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Timeouts used by every launcher.
const (
	// startTimeout bounds how long a peer may take to accept connections.
	startTimeout = 15 * time.Second
	// stopTimeout is how long a peer may take to exit after its stop
	// signal before its whole process group is killed.
	stopTimeout = 3 * time.Second
	// tailBytes is how much of each log is copied into a failed test's log.
	tailBytes = 4 << 10
)

// inCI reports whether the environment variable CI asks for strict mode.
func inCI(t testing.TB) bool {
	t.Helper()
	switch v := os.Getenv("CI"); v {
	case "", "false":
		return false
	case "true":
		return true
	default:
		t.Fatalf("peer: environment variable CI=%q: want unset, \"\", \"false\" or \"true\"", v)
		return false
	}
}

// Require returns the path of binary, looked up in PATH and then in
// /usr/sbin, /usr/bin, /sbin and /usr/local/sbin (root's tools are often
// not in a test runner's PATH). It skips the test under go test -short.
// If the binary is missing it skips the test, or fails it when CI=true,
// with a message naming debianPkg, the package that provides the binary.
func Require(t testing.TB, binary, debianPkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("peer %s: real-peer test skipped in -short mode", binary)
	}
	if path := lookup(binary); path != "" {
		return path
	}
	if inCI(t) {
		t.Fatalf("peer %s not installed (apt-get install %s)", binary, debianPkg)
	}
	t.Skipf("peer %s not installed (apt-get install %s)", binary, debianPkg)
	return ""
}

// RequireRoot skips the test unless it runs as root, which it needs for
// what (changing a file's owner, running a process as another user), or
// fails it when CI=true. It also checks that each of users exists, as
// Debian has them (www-data, nobody), the same way.
func RequireRoot(t testing.TB, what string, users ...string) {
	t.Helper()
	fail := t.Skipf
	if inCI(t) {
		fail = t.Fatalf
	}
	if os.Geteuid() != 0 {
		fail("test needs root to %s (running as uid %d)", what, os.Geteuid())
	}
	for _, name := range users {
		if _, err := user.Lookup(name); err != nil {
			fail("test needs the user %s to %s: %v", name, what, err)
		}
	}
}

// lookup is the search of Require without its test side effects: it
// returns "" if binary is not found.
func lookup(binary string) string {
	if path, err := exec.LookPath(binary); err == nil {
		return path
	}
	if strings.Contains(binary, "/") {
		return ""
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"} {
		path := filepath.Join(dir, binary)
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return path
		}
	}
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it; on a test
// machine that is rare enough to accept.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("peer: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TempDir returns a new directory removed when the test ends. Unlike
// t.TempDir its path is short (under 40 bytes with TMPDIR=/tmp), so that
// unix sockets created in it stay under the kernel's 107-byte limit
// whatever the test's name, and it is mode 0755, so that peers whose
// workers drop root (Apache's run as www-data) can reach files in it.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fcgipeer-")
	if err != nil {
		t.Fatalf("peer: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("peer: %v", err)
	}
	return dir
}

// peerDir returns dir, created if needed, or a new TempDir if dir is "".
func peerDir(t testing.TB, dir string) string {
	t.Helper()
	if dir == "" {
		return TempDir(t)
	}
	mkdirs(t, dir)
	return dir
}

// parseAddr checks a backend address in the package's format ("host:port"
// or "unix:/abs/path") and returns its network ("tcp" or "unix") and the
// host:port or path.
func parseAddr(t testing.TB, addr string) (network, address string) {
	t.Helper()
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(path) {
			t.Fatalf("peer: address %q: unix socket path must be absolute", addr)
		}
		return "unix", path
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		t.Fatalf("peer: address %q: want \"host:port\" or \"unix:/abs/path\"", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		t.Fatalf("peer: address %q: bad port", addr)
	}
	return "tcp", addr
}

// Process is a running peer: the child process of the test and the
// directory holding its configuration and logs. The peer types embed it.
type Process struct {
	name    string
	dir     string
	cmd     *exec.Cmd
	stopSig syscall.Signal
	done    chan struct{} // closed when cmd.Wait has returned
	logs    []string      // log files, read by Logs and dumped on failure
}

// PID returns the peer's process ID. The peer is the leader of its own
// process group, so its workers share this ID as their group ID; see
// [Running].
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Dir returns the directory holding the peer's configuration and logs.
func (p *Process) Dir() string { return p.dir }

// Logs returns the current contents of all the peer's log files (its
// error log and its captured stdout and stderr), each preceded by a
// "==> path <==" line.
func (p *Process) Logs() string { return p.readLogs(0) }

// readLogs is Logs keeping only the last limit bytes of each file when
// limit > 0.
func (p *Process) readLogs(limit int) string {
	var b strings.Builder
	for _, path := range p.logs {
		data, err := os.ReadFile(path)
		if err != nil || len(data) == 0 {
			continue
		}
		if limit > 0 && len(data) > limit {
			data = append([]byte("[...]"), data[len(data)-limit:]...)
		}
		fmt.Fprintf(&b, "==> %s <==\n%s", path, data)
		if data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// readFile returns the contents of path, or "" if it cannot be read.
func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// exited reports whether the process has already exited.
func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop stops the peer: its stop signal (SIGTERM) to the process, then
// SIGKILL to its whole process group if it has not exited within a few
// seconds, and waits until no process of the group is left. It is
// registered with t.Cleanup by every launcher; calling it earlier (to
// test how a client copes with a vanished peer) is allowed and makes the
// cleanup a no-op.
func (p *Process) Stop() { p.stop() }

// stop is Stop reporting whether the peer had to be killed.
func (p *Process) stop() (killed bool) {
	pid := p.PID()
	if !p.exited() {
		_ = syscall.Kill(pid, p.stopSig)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			killed = true
		}
	}
	// Workers can outlive their leader. The kernel does not reuse a
	// process ID while it names a group with members, so while Running
	// says so the group is still ours.
	if Running(pid) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	<-p.done
	deadline := time.Now().Add(stopTimeout)
	for Running(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return killed
}

// spec describes how to run one peer.
type spec struct {
	name    string         // short name for messages and the output file
	dir     string         // working directory, holding conf and logs
	conf    string         // configuration file, shown if start-up fails
	argv    []string       // the command
	stopSig syscall.Signal // makes the peer exit promptly
	ready   func() error   // nil once the peer accepts connections
	logs    []string       // the peer's own log files
}

// start runs s.argv in s.dir as the leader of a new process group, with
// stdout and stderr going to s.dir/NAME.out, and registers its stop with
// t.Cleanup. It then polls s.ready until it returns nil, and fails the
// test with the peer's configuration and logs if the peer exits first or
// the start timeout passes.
func start(t testing.TB, s spec) *Process {
	t.Helper()
	out, err := os.Create(filepath.Join(s.dir, s.name+".out"))
	if err != nil {
		t.Fatalf("peer %s: %v", s.name, err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// If the test binary dies without running its cleanups, the peer dies
	// with it instead of holding its port.
	dieWithParent(cmd.SysProcAttr)
	p := &Process{
		name:    s.name,
		dir:     s.dir,
		cmd:     cmd,
		stopSig: s.stopSig,
		done:    make(chan struct{}),
		logs:    append(s.logs, out.Name()),
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("peer %s: start %s: %v", s.name, s.argv[0], err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	failedStart := false
	t.Cleanup(func() {
		if p.stop() {
			t.Logf("peer %s (pid %d) ignored %v for %v and was killed", s.name, p.PID(), s.stopSig, stopTimeout)
		}
		if t.Failed() && !failedStart {
			t.Logf("peer %s (pid %d) logs, last %d bytes each:\n%s", s.name, p.PID(), tailBytes, p.readLogs(tailBytes))
		}
	})

	deadline := time.Now().Add(startTimeout)
	for {
		err := s.ready()
		if err == nil {
			return p
		}
		why := ""
		if p.exited() {
			why = fmt.Sprintf("exited during start-up (%v)", cmd.ProcessState)
		} else if time.Now().After(deadline) {
			why = fmt.Sprintf("not ready after %v: %v", startTimeout, err)
		}
		if why != "" {
			failedStart = true
			t.Fatalf("peer %s %s\ncommand: %s\n==> %s <==\n%s%s", s.name, why,
				strings.Join(s.argv, " "), s.conf, readFile(s.conf), p.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialable returns a readiness check that succeeds once a connection to
// network/address is accepted.
func dialable(network, address string) func() error {
	return func() error {
		c, err := net.DialTimeout(network, address, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// Running reports whether any live process is left in the process group
// pid, which is how peers started by this package are grouped. Zombies
// (exited, not yet reaped by their parent) do not count. Tests use it to
// check that a peer's cleanup left nothing behind.
func Running(pid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		// No /proc: fall back to asking about the group directly.
		return !errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH)
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// Format: pid (comm) state ppid pgrp ...; comm may hold spaces
		// and parentheses, so split after the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if pgrp, _ := strconv.Atoi(f[2]); pgrp == pid {
			return true
		}
	}
	return false
}

// writeFile writes content to path, failing the test on error.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("peer: %v", err)
	}
}

// mkdirs creates each directory (mode 0755), failing the test on error.
func mkdirs(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("peer: %v", err)
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/cmd/fcgi/internal/pgroup"
	"github.com/fcgikit/fcgi/internal/peer"
)

// publicBin returns a copy of the command under test (a hard link when it
// can) in a new directory that every user may search, for processes that
// drop root: fcgiBin's own directory is private.
func publicBin(t *testing.T) (dir, bin string) {
	t.Helper()
	dir = peer.TempDir(t)
	bin = filepath.Join(dir, "fcgi")
	if err := os.Link(fcgiBin, bin); err != nil {
		src, err := os.Open(fcgiBin)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// spawnProc is a running fcgi spawn that the test stops itself.
type spawnProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

func startSpawn(t *testing.T, bin string, args ...string) *spawnProc {
	t.Helper()
	return startSpawnIn(t, "", bin, args...)
}

// startSpawnIn starts spawn in the working directory dir.
func startSpawnIn(t *testing.T, dir, bin string, args ...string) *spawnProc {
	t.Helper()
	p := &spawnProc{cmd: exec.Command(bin, append([]string{"spawn"}, args...)...), out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.stop(t)
		}
		t.Logf("fcgi spawn %s; output:\n%s", strings.Join(args, " "), p.out.String())
	})
	return p
}

// stop sends SIGTERM and waits for spawn to exit 0.
func (p *spawnProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("spawn: exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Error("spawn: still running 15 s after SIGTERM")
	}
}

// callID asks the demo app on sock for its /id, retrying while it starts.
func callID(t *testing.T, sock string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := runFcgi(t, nil, "call", "unix:"+sock, "/id")
		if res.code == 0 && strings.HasPrefix(res.stdout, "uid=") {
			return strings.TrimSpace(res.stdout)
		}
		if time.Now().After(deadline) {
			t.Fatalf("fcgi call /id: exit %d %q", res.code, res.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sockStat(t *testing.T, path string) (os.FileMode, uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode().Perm(), st.Uid, st.Gid
}

// TestSpawnPIDFileChdir: --pid-file holds spawn's PID while it runs and
// is gone after SIGTERM; --chdir is the processes' working directory, and
// a relative PROG is taken from there, as spawn-fcgi -d does. The short
// spawn-fcgi letters (-s with a relative path, -P, -d, -M) are used.
func TestSpawnPIDFileChdir(t *testing.T) {
	dir, _ := publicBin(t)
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "app.sock")
	pidFile := filepath.Join(dir, "spawn.pid")
	// -s takes a path, relative to spawn's directory, as spawn-fcgi's.
	p := startSpawnIn(t, dir, fcgiBin, "-s", "app.sock", "-M", "0600", "-P", pidFile, "-d", work, "--", "../fcgi", "demo-app")
	waitDial(t, sock)

	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(p.cmd.Process.Pid) || !strings.HasSuffix(string(b), "\n") {
		t.Errorf("pid file %q, want %d and a newline", b, p.cmd.Process.Pid)
	}
	if mode, _, _ := sockStat(t, sock); mode != 0o600 {
		t.Errorf("socket mode %#o, want 0600", mode)
	}
	if id := callID(t, sock); !strings.HasSuffix(id, " cwd="+work) {
		t.Errorf("/id: %s, want cwd=%s", id, work)
	}

	p.stop(t)
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file after exit: %v, want it removed", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after exit: %v, want it removed", err)
	}
}

// TestSpawnUser: with -u and -g the processes really run as that user
// and group, with the user's supplementary groups and none of root's; and
// nginx running as www-data reaches the socket made with -G www-data -M
// 0660, which the processes (nobody) accept on.
func TestSpawnUser(t *testing.T) {
	peer.RequireRoot(t, "run processes as other users", "nobody", "www-data")
	dir, bin := publicBin(t)
	for _, tc := range []struct {
		name string
		args []string
		want string // /id's uid, gid and groups
		sock string // the socket's owner: as spawn-fcgi, -u and -g's unless -U or -G
	}{
		{"names", []string{"-u", "nobody", "-g", "nogroup"}, "uid=65534 gid=65534 groups=[65534]", "65534:65534"},
		{"user-only", []string{"--user", "www-data"}, "uid=33 gid=33 groups=[33]", "33:33"},
		{"numeric", []string{"-u", "65534", "-g", "65534"}, "uid=65534 gid=65534 groups=[65534]", "65534:65534"},
		// initgroups(www-data, nogroup): the passwd group is not kept.
		{"other-group", []string{"-u", "www-data", "-g", "nogroup"}, "uid=33 gid=65534 groups=[65534]", "33:65534"},
		{"no-account", []string{"-u", "4242", "-g", "4343"}, "uid=4242 gid=4343 groups=[4343]", "4242:4343"},
		{"group-only", []string{"-g", "nogroup"}, "uid=0 gid=65534 groups=[]", "0:65534"},
		{"socket-owner", []string{"-u", "nobody", "-U", "www-data", "-G", "0"}, "uid=65534 gid=65534 groups=[65534]", "33:0"},
		{"systemd", []string{"-u", "nobody", "--systemd"}, "uid=65534 gid=65534 groups=[65534]", "65534:65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(dir, tc.name+".sock")
			args := append([]string{"--listen", "unix:" + sock}, tc.args...)
			startSpawn(t, bin, append(args, "--", bin, "demo-app")...)
			waitDial(t, sock)
			id := callID(t, sock)
			if got, _, _ := strings.Cut(id, " cwd="); got != tc.want {
				t.Errorf("/id: %s, want %s", got, tc.want)
			}
			if mode, uid, gid := sockStat(t, sock); mode != 0o660 || fmt.Sprintf("%d:%d", uid, gid) != tc.sock {
				t.Errorf("socket %#o %d:%d, want 0660 %s", mode, uid, gid, tc.sock)
			}
		})
	}

	t.Run("nginx-www-data", func(t *testing.T) {
		peer.Require(t, "nginx", "nginx")
		sock := filepath.Join(dir, "nginx.sock")
		startSpawn(t, bin, "-s", sock, "-U", "nobody", "-G", "www-data", "-M", "0660", "-u", "nobody", "-g", "nogroup", "--", bin, "demo-app")
		waitDial(t, sock)
		if mode, uid, gid := sockStat(t, sock); mode != 0o660 || uid != 65534 || gid != 33 {
			t.Errorf("socket %#o %d:%d, want 0660 65534:33", mode, uid, gid)
		}
		n := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + sock, User: "www-data"})
		body, err := httpGet(n.URL() + "/id")
		if err != nil || !strings.HasPrefix(body, "uid=65534 gid=65534 ") {
			t.Errorf("GET /id through nginx (www-data): %v %q\n%s", err, body, n.ErrorLog())
		}
	})

	// Spawn run as nobody may not give the socket to root: the chown
	// fails after bind, and the socket is removed, not left behind.
	t.Run("chown-refused", func(t *testing.T) {
		sock := filepath.Join(nobodyDir(t, dir, "nobody"), "s.sock")
		cmd := exec.Command(bin, "spawn", "-s", sock, "-U", "root", "--", bin, "demo-app")
		cmd.SysProcAttr = asNobody()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitFail || !strings.Contains(string(out), "operation not permitted") {
			t.Errorf("spawn -U root as nobody: %v, output:\n%s", err, out)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket after the failed chown: %v, want none", err)
		}
	})

	// A live socket that another user may not connect to is not taken
	// for a stale one: spawn as nobody, in a directory nobody may write,
	// must not remove root's 0600 socket and listen in its place.
	t.Run("live-socket-of-another-user", func(t *testing.T) {
		sock := filepath.Join(nobodyDir(t, dir, "shared"), "s.sock")
		startSpawn(t, bin, "-s", sock, "-M", "0600", "--", bin, "demo-app")
		waitDial(t, sock)
		// Bounded: a spawn that took the socket over would run on.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "spawn", "-s", sock, "--", bin, "demo-app")
		cmd.SysProcAttr = asNobody()
		cmd.WaitDelay = time.Second
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitFail || !strings.Contains(string(out), "address already in use") {
			t.Errorf("second spawn as nobody: %v, output:\n%s", err, out)
		}
		if mode, uid, _ := sockStat(t, sock); mode != 0o600 || uid != 0 {
			t.Errorf("root's socket replaced: now %#o uid %d", mode, uid)
		}
		waitDial(t, sock)
	})

	// spawn-fcgi's common use: the processes as www-data, and with them
	// the socket, which nginx (www-data) can then reach.
	t.Run("nginx-spawn-fcgi-style", func(t *testing.T) {
		peer.Require(t, "nginx", "nginx")
		sock := filepath.Join(dir, "nginx2.sock")
		startSpawn(t, bin, "-s", sock, "-u", "www-data", "-g", "www-data", "--", bin, "demo-app")
		waitDial(t, sock)
		n := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + sock, User: "www-data"})
		body, err := httpGet(n.URL() + "/id")
		if err != nil || !strings.HasPrefix(body, "uid=33 gid=33 groups=[33] ") {
			t.Errorf("GET /id through nginx (www-data): %v %q\n%s", err, body, n.ErrorLog())
		}
	})

	// And the 502 a root-owned socket gets, for contrast.
	t.Run("nginx-root-socket", func(t *testing.T) {
		peer.Require(t, "nginx", "nginx")
		sock := filepath.Join(dir, "nginx3.sock")
		startSpawn(t, bin, "-s", sock, "--", bin, "demo-app")
		waitDial(t, sock)
		n := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + sock, User: "www-data"})
		var se *statusError
		if _, err := httpGet(n.URL() + "/id"); !errors.As(err, &se) || se.code != 502 {
			t.Errorf("GET /id through nginx (www-data), socket root 0660: %v, want 502", err)
		}
		if !strings.Contains(n.ErrorLog(), "Permission denied") {
			t.Errorf("no Permission denied in nginx's error log:\n%s", n.ErrorLog())
		}
	})
}

// nobodyDir makes the directory dir/name, owned by nobody (uid and gid
// 65534), who may then create sockets in it.
func nobodyDir(t *testing.T, dir, name string) string {
	t.Helper()
	d := filepath.Join(dir, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return d
}

// asNobody runs a command as nobody with no supplementary group, killed
// if the test dies first.
func asNobody() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	pgroup.DieWithParent(attr, syscall.SIGKILL)
	return attr
}

// TestSpawnFlagErrors: mistakes in the new flags are refused before
// anything starts.
func TestSpawnFlagErrors(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--listen", "127.0.0.1:0", "-M", "0660"}, exitUsage, "for unix sockets"},
		{[]string{"--listen", sock, "-M", "0999"}, exitUsage, "octal"},
		{[]string{"--listen", sock, "-M", "01777"}, exitUsage, "octal"},
		{[]string{"--listen", sock, "-U", "no-such-user-fcgikit"}, exitFail, "SocketOwner"},
		{[]string{"--listen", sock, "-u", "no-such-user-fcgikit"}, exitFail, "--user"},
		{[]string{"--listen", sock, "-g", "no-such-group-fcgikit"}, exitFail, "--group"},
		{[]string{"--listen", sock, "-u", "4242"}, exitFail, "give --group"},
		{[]string{"--listen", sock, "-d", filepath.Join(dir, "nowhere")}, exitFail, "--chdir"},
		{[]string{"--listen", sock, "-P", dir}, exitFail, "not a regular file"},
		// spawn-fcgi's -n (no fork), out of habit.
		{[]string{"-n", "-s", sock}, exitUsage, "spawn-fcgi's -n, no fork, is what spawn always does"},
	} {
		res := runFcgi(t, nil, append(append([]string{"spawn"}, tc.args...), "--", fcgiBin, "demo-app")...)
		if res.code != tc.code || !strings.Contains(res.stderr, tc.msg) {
			t.Errorf("spawn %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), res.code, res.stderr, tc.code, tc.msg)
		}
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("spawn %s: socket left behind", strings.Join(tc.args, " "))
			os.Remove(sock)
		}
	}
}

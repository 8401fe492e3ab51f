package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

// TestWrapNginxStderrBeforeHeader: behind nginx, a script that writes
// much to stderr before its header gets its response through, and its
// stderr still reaches nginx's error log, a message per line. nginx reads
// the records before the header into its fastcgi_buffer_size buffer, and
// once a buffer full of STDERR records ends inside a record header it
// fails the response: 502, "upstream sent too big header".
func TestWrapNginxStderrBeforeHeader(t *testing.T) {
	peer.Require(t, "nginx", "nginx")
	dir := t.TempDir()
	root := filepath.Join(dir, "www")
	os.MkdirAll(root, 0o755)
	script := "#!/bin/sh\ni=0\nwhile [ $i -lt 3000 ]; do echo \"w $i\" >&2; i=$((i+1)); done\n" +
		"echo 'Content-Type: text/plain'\necho\necho body\n"
	if err := os.WriteFile(filepath.Join(root, "chatty.cgi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "wrap.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock, "--root", root, "--log-level", "error")
	waitDial(t, sock)
	n := peer.StartNginx(t, peer.NginxConfig{Root: root, FastCGI: "unix:" + sock})

	for i := range 5 {
		resp, err := http.Get(n.URL() + "/chatty.cgi")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "body\n" {
			t.Fatalf("GET %d: %d %q, want 200 %q; nginx's error log ends:\n%s", i, resp.StatusCode, body, "body\n", tail(n.ErrorLog(), 3))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(n.ErrorLog(), `FastCGI sent in stderr: "w 2999"`) {
		if time.Now().After(deadline) {
			t.Fatalf("nginx's error log lacks the script's last stderr line; it ends:\n%s", tail(n.ErrorLog(), 3))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestWrapHeaderBeforeBody: a script's header goes to the web server as
// soon as it is written, not with the first byte of the body: a script
// may take its time over the body (a long poll, a slow report), and
// nginx gives up after fastcgi_read_timeout without a header.
func TestWrapHeaderBeforeBody(t *testing.T) {
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	script := filepath.Join(dir, "hang.cgi")
	body := fmt.Sprintf("#!/bin/sh\nprintf 'Status: 202 Accepted\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\n"+
		"while [ ! -e %s ]; do sleep 0.02; done\necho later\n", release)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "wrap.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock, "--timeout", "60s")
	waitDial(t, sock)
	c := wrapRequest(t, sock, script)

	// The header comes while the script still waits.
	c.NC.SetReadDeadline(time.Now().Add(15 * time.Second))
	var stdout []byte
	for !strings.Contains(string(stdout), "\r\n\r\n") {
		rec, err := c.R.Next()
		if err != nil {
			t.Fatalf("no header while the script waits to write its body (stdout so far %q): %v", stdout, err)
		}
		if rec.Type == wire.TypeStdout {
			stdout = append(stdout, rec.Content...)
		}
	}
	if !strings.HasPrefix(string(stdout), "Status: 202") {
		t.Errorf("header %q, want the script's status", stdout)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := readResponse(c, 1, time.Now().Add(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if all := string(stdout) + string(resp.Stdout); !strings.HasSuffix(all, "\r\n\r\nlater\n") {
		t.Errorf("response %q, want the body after the header", all)
	}
}

// TestWrapScriptPaths: --script and --root take paths as a new user
// writes them: a relative --script is taken from wrap's working
// directory, and --root / allows every script.
func TestWrapScriptPaths(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "hello.cgi")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"hello $SCRIPT_FILENAME\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, script)
	if err != nil {
		t.Fatal(err)
	}
	// One wrap for both: before, the relative --script was refused with
	// 404, and --root / refused every script with 403.
	args := []string{"--script", rel, "--root", "/"}
	sock := filepath.Join(t.TempDir(), "wrap.sock")
	startFcgi(t, append([]string{"wrap", "--listen", "unix:" + sock}, args...)...)
	waitDial(t, sock)
	res := runFcgi(t, nil, "call", "--root", dir, "unix:"+sock, "/other.cgi")
	if want := "hello " + script + "\n"; res.code != 0 || res.stdout != want {
		t.Errorf("fcgi wrap %s: exit %d, %q; want 0, %q", strings.Join(args, " "), res.code, res.stdout, want)
	}
}

// TestSpawnWrapKillsScripts: fcgi wrap under fcgi spawn, as the docs
// pair them (wrap takes spawn's socket on fd 0), with wrap's grace longer
// than spawn's: when spawn kills wrap at the end of its grace, wrap's
// running scripts and their children go too, though each script leads a
// process group of its own, out of the reach of a kill of wrap's group.
func TestSpawnWrapKillsScripts(t *testing.T) {
	dir := t.TempDir()
	script, pidfile := hangScript(t, dir)
	sock := filepath.Join(dir, "wrap.sock")
	var pids []int
	spawn, out, done := startFcgiOrphans(t, func() []int { return pids },
		"spawn", "--listen", "unix:"+sock, "--grace", "1s", "--", fcgiBin, "wrap", "--grace", "5m")
	waitDial(t, sock)
	wrapRequest(t, sock, script)
	pids = readPIDs(t, pidfile)
	spawn.Process.Signal(syscall.SIGTERM)
	waitOutput(t, out, "grace period over: killing")
	select {
	case err := <-done:
		done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("spawn still running 20 s after SIGTERM with --grace 1s")
	}
	waitGone(t, pids...)
}

// TestWrapReapsOrphansAsPID1: fcgi wrap as PID 1, as in a container
// without an init (a PID namespace here), reaps the orphans its scripts
// leave: a background job, killed with the script's group when the script
// exits, goes to PID 1, and would be a zombie for ever.
func TestWrapReapsOrphansAsPID1(t *testing.T) {
	peer.Require(t, "unshare", "util-linux")
	dir := t.TempDir()
	script := filepath.Join(dir, "bg.cgi")
	body := "#!/bin/sh\nsleep 300 &\necho 'Content-Type: text/plain'\necho\necho started\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "wrap.sock")
	cmd := exec.Command("unshare", "--fork", "--pid", "--mount-proc", fcgiBin, "wrap", "--listen", "unix:"+sock)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var wrap int // wrap's PID out here, unshare's child
	t.Cleanup(func() {
		if wrap > 0 {
			syscall.Kill(wrap, syscall.SIGTERM)
		}
		select {
		case err := <-done:
			if wrap > 0 && err != nil {
				t.Errorf("unshare ... fcgi wrap: %v", err)
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("fcgi wrap still running 15 s after SIGTERM")
		}
		t.Logf("unshare ... fcgi wrap: output:\n%s", out.String())
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			done <- err
			// No PID namespaces here (an unprivileged container, say).
			t.Skipf("unshare --pid cannot run fcgi wrap here: %v: %s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("fcgi wrap in a PID namespace not accepting after 10 s: %s", out.String())
		}
	}
	wrap = waitChildren(t, cmd.Process.Pid, 1)[0]
	if res := runFcgi(t, nil, "call", "--root", dir, "unix:"+sock, "/bg.cgi"); res.code != 0 || res.stdout != "started\n" {
		t.Fatalf("exit %d, %q; want 0, %q", res.code, res.stdout, "started\n")
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		var zombies []int
		for _, pid := range allPIDs() {
			if st := procStat(pid); len(st) > 1 && st[0] == "Z" && st[1] == strconv.Itoa(wrap) {
				zombies = append(zombies, pid)
			}
		}
		if len(zombies) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zombies %v, children of fcgi wrap as PID 1: orphans it never reaped", zombies)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWrapStderrWithoutHeader: the stderr of a script that fails before
// its header, held for the header that never comes, reaches the web
// server after wrap's 502, before the request ends.
func TestWrapStderrWithoutHeader(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "hang.cgi") // the path wrapRequest asks for
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'cannot open the database' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "wrap.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock)
	waitDial(t, sock)
	resp, err := readResponse(wrapRequest(t, sock, script), 1, time.Now().Add(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(resp.Stdout), "Status: 502") || string(resp.Stderr) != "cannot open the database\n" {
		t.Errorf("stdout %q, FCGI_STDERR %q; want a 502 and the script's stderr", resp.Stdout, resp.Stderr)
	}
}

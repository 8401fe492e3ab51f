package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/rawconn"
	"github.com/fcgikit/fcgi/internal/wire"
)

// syncBuffer is a bytes.Buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startFcgi starts the command in the background; the test's cleanup
// stops it with SIGTERM (SIGKILL after 10 s), checks it exited 0, and
// logs its output.
func startFcgi(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(fcgiBin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			err = <-done
			t.Errorf("fcgi %s: still running 10 s after SIGTERM", strings.Join(args, " "))
		}
		t.Logf("fcgi %s: %v; output:\n%s", strings.Join(args, " "), err, out.String())
		if err != nil {
			t.Errorf("fcgi %s: exit after SIGTERM: %v", strings.Join(args, " "), err)
		}
	})
	return cmd, out
}

// waitDial waits until a unix socket accepts connections.
func waitDial(t *testing.T, sock string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not accepting: %v", sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// docBlock returns the first code block of docs/command.md whose fence
// names lang and whose text holds want.
func docBlock(t *testing.T, lang, want string) string {
	t.Helper()
	src, err := os.ReadFile("../../docs/command.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(string(src), "```"+lang+"\n")[1:] {
		block, _, ok := strings.Cut(part, "\n```")
		if ok && strings.Contains(block, want) {
			return block + "\n"
		}
	}
	t.Fatalf("docs/command.md has no %s block with %q", lang, want)
	return ""
}

// TestWrapGitHTTPBackend: git clone and git push over HTTP through nginx,
// fcgi wrap and git-http-backend, with docs/command.md's nginx block.
func TestWrapGitHTTPBackend(t *testing.T) {
	peer.Require(t, "nginx", "nginx")
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Skipf("%s missing (apt-get install git)", backend)
	}
	dir := t.TempDir()
	repos := filepath.Join(dir, "repos")
	os.Mkdir(repos, 0o755)
	git(t, repos, "init", "-q", "--bare", "-b", "main", "project.git")
	git(t, filepath.Join(repos, "project.git"), "config", "http.receivepack", "true")

	sock := filepath.Join(dir, "wrap.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock, "--max", "4", "--timeout", "30s", "--log-level", "debug")
	waitDial(t, sock)

	// docs/command.md's location block, as written but for the socket
	// and the repositories' directory. include fastcgi_params is relative
	// to nginx's configuration directory, where peer.StartNginx writes
	// Debian's file.
	block := docBlock(t, "nginx", "git-http-backend")
	for _, r := range [][2]string{{"unix:/run/fcgiwrap.sock", "unix:" + sock}, {"/srv/git", repos}} {
		if !strings.Contains(block, r[0]) {
			t.Fatalf("docs/command.md's git-http-backend block has no %q:\n%s", r[0], block)
		}
		block = strings.ReplaceAll(block, r[0], r[1])
	}
	n := peer.StartNginx(t, peer.NginxConfig{Server: block})

	work := filepath.Join(dir, "work")
	os.Mkdir(work, 0o755)
	url := n.URL() + "/project.git"
	git(t, work, "clone", "-q", url, "a")
	a := filepath.Join(work, "a")
	os.WriteFile(filepath.Join(a, "README"), []byte("pushed through fcgi wrap\n"), 0o644)
	// A pack larger than the socket buffers, to a script that writes its
	// header before it reads its body.
	big := make([]byte, 4<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(a, "big"), big, 0o644)
	git(t, a, "add", "README", "big")
	git(t, a, "commit", "-q", "-m", "first")
	git(t, a, "push", "-q", "origin", "HEAD:main")

	git(t, work, "clone", "-q", url, "b")
	got, err := os.ReadFile(filepath.Join(work, "b", "README"))
	if err != nil || string(got) != "pushed through fcgi wrap\n" {
		t.Fatalf("second clone: README %q, %v", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(work, "b", "big")); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("second clone: big file of %d bytes, %v; want the %d pushed", len(got), err, len(big))
	}
}

// TestWrapNginxEnvAndStderr: behind nginx, a script's environment is the
// FastCGI parameters nginx sent (SCRIPT_NAME and PATH_INFO as
// fastcgi_split_path_info made them; PATH_INFO derived when nginx sends
// none; no HTTP_PROXY), and its stderr reaches nginx's error log.
func TestWrapNginxEnvAndStderr(t *testing.T) {
	peer.Require(t, "nginx", "nginx")
	dir := t.TempDir()
	root := filepath.Join(dir, "www")
	os.MkdirAll(filepath.Join(root, "cgi"), 0o755)
	script := "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n" +
		"echo \"$SCRIPT_NAME|$PATH_INFO|$QUERY_STRING|${HTTP_PROXY-unset}|$HTTP_X_TEST|$APP\"\n" +
		"echo 'a line for the error log' >&2\n"
	if err := os.WriteFile(filepath.Join(root, "cgi", "env.cgi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "wrap.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock, "--root", root, "--env", "APP=set")
	waitDial(t, sock)

	ndir := peer.TempDir(t)
	n := peer.StartNginx(t, peer.NginxConfig{Dir: ndir, Server: fmt.Sprintf(`
        location /split/ {
            root %[2]s;
            fastcgi_pass unix:%[1]s;
            fastcgi_split_path_info ^/split(/cgi/[^/]+\.cgi)(/.*)$;
            include %[3]s/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param PATH_INFO $fastcgi_path_info;
        }
        location /cgi/ {
            root %[2]s;
            fastcgi_pass unix:%[1]s;
            include %[3]s/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        }
`, sock, root, ndir)})

	for _, tc := range []struct{ path, want string }{
		{"/split/cgi/env.cgi/a/b?q=1", "/cgi/env.cgi|/a/b|q=1|unset|x|set\n"},
		// nginx sends no PATH_INFO here: wrap derives it, empty.
		{"/cgi/env.cgi?q=2", "/cgi/env.cgi||q=2|unset|x|set\n"},
	} {
		req, _ := http.NewRequest("GET", n.URL()+tc.path, nil)
		req.Header.Set("Proxy", "http://evil.example/")
		req.Header.Set("X-Test", "x")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("GET %s: %d %q, want %q", tc.path, resp.StatusCode, body, tc.want)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(n.ErrorLog(), "FastCGI sent in stderr: \"a line for the error log") {
		if time.Now().After(deadline) {
			t.Fatalf("nginx's error log lacks the script's stderr:\n%s", n.ErrorLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hangScript writes a CGI script that prints a header and a line, starts
// a background sleep, records both PIDs in pidfile and hangs.
func hangScript(t *testing.T, dir string) (script, pidfile string) {
	script = filepath.Join(dir, "hang.cgi")
	pidfile = filepath.Join(dir, "pids")
	body := fmt.Sprintf("#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho started\nsleep 300 &\necho $$ $! > %s\necho oops >&2\nsleep 300\n", pidfile)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, pidfile
}

// readPIDs waits for the script to record its PIDs.
func readPIDs(t *testing.T, pidfile string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(pidfile)
		if f := strings.Fields(string(b)); len(f) == 2 {
			var pids []int
			for _, s := range f {
				n, _ := strconv.Atoi(s)
				pids = append(pids, n)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatal("script did not write its PIDs")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allPIDs lists the processes in /proc.
func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat returns the fields of /proc/PID/stat after the command name:
// state, ppid, pgrp, ...; nil if the process is gone.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// groupMembers lists the live (non-zombie) processes in process group pgid.
func groupMembers(pgid int) []int {
	var pids []int
	for _, pid := range allPIDs() {
		if f := procStat(pid); len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGroupGone fails the test if process group pgid still has live
// members after a few seconds.
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := groupMembers(pgid)
		if len(m) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still has members %v: orphans", pgid, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wrapRequest sends one request for script to fcgi wrap on sock.
func wrapRequest(t *testing.T, sock, script string) *rawconn.Conn {
	t.Helper()
	c, err := dialRaw(context.Background(), "unix:"+sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rp := requestParams{target: "/hang.cgi", root: filepath.Dir(script), body: -1}
	kv, _ := rp.pairs()
	c.WriteRequest(1, wire.RoleResponder, false, encodePairs(kv), nil)
	if err := c.W.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWrapTimeoutKillsGroup: a script that hangs, with a child, is killed
// with its child at --timeout; the response ends and has the output
// written so far.
func TestWrapTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	script, pidfile := hangScript(t, dir)
	sock := filepath.Join(dir, "wrap.sock")
	_, out := startFcgi(t, "wrap", "--listen", "unix:"+sock, "--timeout", "1s")
	waitDial(t, sock)

	start := time.Now()
	c := wrapRequest(t, sock, script)
	pids := readPIDs(t, pidfile)
	resp, err := readResponse(c, 1, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	if el := time.Since(start); el < time.Second || el > 5*time.Second {
		t.Errorf("response ended after %v with --timeout 1s", el)
	}
	if !strings.Contains(string(resp.Stdout), "started") {
		t.Errorf("stdout %q: want the output written before the timeout", resp.Stdout)
	}
	if string(resp.Stderr) != "oops\n" {
		t.Errorf("FCGI_STDERR %q: want the script's stderr, %q", resp.Stderr, "oops\n")
	}
	waitGroupGone(t, pids[0])
	for _, pid := range pids {
		if len(groupMembers(pid)) > 0 || processAlive(pid) {
			t.Errorf("pid %d alive", pid)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if s := out.String(); !strings.Contains(s, "timed out") || !strings.Contains(s, "oops") {
		t.Errorf("log lacks the timeout or the script's stderr:\n%s", s)
	}
}

// TestWrapAbortKillsGroup: when the web server closes the connection
// (nginx's only way to say the client went away), the script's whole
// group is killed at once.
func TestWrapAbortKillsGroup(t *testing.T) {
	dir := t.TempDir()
	script, pidfile := hangScript(t, dir)
	sock := filepath.Join(dir, "wrap.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock)
	waitDial(t, sock)
	c := wrapRequest(t, sock, script)
	pids := readPIDs(t, pidfile)
	c.Close()
	waitGroupGone(t, pids[0])
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	f := procStat(pid)
	return len(f) > 0 && f[0] != "Z"
}

// headerFirstScript writes a CGI script that prints its header and the
// start of its body, then reads its whole request body and reports its
// length: "length: N\n".
func headerFirstScript(t *testing.T, dir string) string {
	t.Helper()
	script := filepath.Join(dir, "count.cgi")
	body := "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nlength: '\nwc -c\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

// TestWrapNginxHeaderFirstBigBody: behind nginx, which stops sending the
// request body once it has the response header, a script that writes its
// header before it reads a 5 MB body gets the whole body.
func TestWrapNginxHeaderFirstBigBody(t *testing.T) {
	peer.Require(t, "nginx", "nginx")
	dir := t.TempDir()
	script := headerFirstScript(t, dir)
	sock := filepath.Join(dir, "wrap.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock, "--script", script, "--timeout", "60s")
	waitDial(t, sock)
	n := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + sock})

	const size = 5 << 20
	c := &http.Client{Timeout: 90 * time.Second}
	start := time.Now()
	resp, err := c.Post(n.URL()+"/count.cgi", "application/octet-stream", bytes.NewReader(bytes.Repeat([]byte("x"), size)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("POST of %d bytes: %d %q after %v", size, resp.StatusCode, got, time.Since(start))
	if want := "length: " + strconv.Itoa(size) + "\n"; err != nil || resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("POST of %d bytes: %d %q, %v; want 200 and the length", size, resp.StatusCode, got, err)
	}
}

// bodyPlan says how nginxLikeRequest sends a body.
type bodyPlan struct {
	size int64 // CONTENT_LENGTH
	// cut > 0 stops the body after cut bytes, once beforeCut (if not
	// nil) has returned: with hangUp the connection is closed, otherwise
	// the STDIN stream is ended there, short of CONTENT_LENGTH.
	cut       int64
	hangUp    bool
	beforeCut func()
	until     string // close the connection once STDOUT holds it
}

// nginxLikeRequest sends a POST for script to the wrap server on sock the
// way nginx sends one: the body in 16 KiB STDIN records, and no more of
// it once the first STDOUT record has come. It returns what came on
// STDOUT and whether END_REQUEST came, within 30 s.
func nginxLikeRequest(t *testing.T, sock, script string, plan bodyPlan) (stdout string, ended bool) {
	t.Helper()
	c, err := dialRaw(context.Background(), "unix:"+sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rp := requestParams{method: "POST", target: "/" + filepath.Base(script), root: filepath.Dir(script), body: plan.size}
	kv, _ := rp.pairs()
	c.W.WriteBeginRequest(1, wire.RoleResponder, 0)
	c.W.WriteStream(wire.TypeParams, 1, encodePairs(kv))
	c.W.WriteRecord(wire.TypeParams, 1, nil)
	if err := c.W.Flush(); err != nil {
		t.Fatal(err)
	}
	end := plan.size
	if plan.cut > 0 {
		end = plan.cut
	}
	var started atomic.Bool // nginx's header_sent: the body stops there
	var sent atomic.Int64
	var wg sync.WaitGroup
	// Owned by nginxLikeRequest: sends the body. Ends when it is sent,
	// when the response has started, or when the connection is closed.
	wg.Go(func() {
		chunk := make([]byte, 16<<10)
		for sent.Load() < end && !started.Load() {
			n := min(int64(len(chunk)), end-sent.Load())
			if c.W.WriteRecord(wire.TypeStdin, 1, chunk[:n]) != nil || c.W.Flush() != nil {
				return
			}
			sent.Add(n)
		}
		if started.Load() {
			return
		}
		if plan.beforeCut != nil {
			plan.beforeCut()
		}
		if plan.hangUp {
			c.NC.Close()
			return
		}
		c.W.WriteRecord(wire.TypeStdin, 1, nil)
		c.W.Flush()
	})
	defer func() {
		c.Close()
		wg.Wait()
	}()
	c.NC.SetReadDeadline(time.Now().Add(30 * time.Second))
	var out []byte
	for {
		rec, err := c.R.Next()
		if err != nil {
			if !plan.hangUp && plan.until == "" {
				t.Errorf("after %d bytes of body sent, stdout %q: %v", sent.Load(), out, err)
			}
			return string(out), false
		}
		switch rec.Type {
		case wire.TypeStdout:
			started.Store(true)
			out = append(out, rec.Content...)
			if plan.until != "" && strings.Contains(string(out), plan.until) {
				return string(out), false
			}
		case wire.TypeEndRequest:
			return string(out), true
		}
	}
}

// TestWrapBodyEndings: whatever a script does with a body larger than
// the pipes hold, sent as nginx sends it (no more of it once the first
// STDOUT record has come), the request ends and the script's whole
// process group is gone: it reads it all after writing the start of its
// response (wrap must feed it the whole body before it passes that on);
// it exits without reading it; it closes its stdin and goes on running
// (its output must go out at once); it never reads it and keeps running
// (--timeout ends it: 504); the web server goes away half-way through
// the body, or ends it short of CONTENT_LENGTH (the script must not take
// the part it got for the whole).
// wrap serves on afterwards.
func TestWrapBodyEndings(t *testing.T) {
	dir := t.TempDir()
	wr := &wrapper{max: 2, slots: make(chan struct{}, 2), timeout: 3 * time.Second,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sock := strings.TrimPrefix(startServer(t, wr), "unix:")
	t.Cleanup(wr.running.Wait)
	const size = 5 << 20
	const hdr = `printf 'Content-Type: text/plain\r\n\r\n'; `
	for _, tc := range []struct {
		name   string
		script string   // after "echo $$ > pidfile"
		plan   bodyPlan // size defaults to 5 MB
		want   string   // STDOUT holds it
		ended  bool
	}{
		{name: "reads after writing", script: hdr + "printf 'length: '; wc -c",
			want: "length: 5242880\n", ended: true},
		{name: "exits unread", script: hdr + "echo ignored",
			want: "\r\n\r\nignored\n", ended: true},
		{name: "closes stdin", script: "exec 0<&-; " + hdr + "echo closed; exec sleep 1000",
			plan: bodyPlan{until: "closed\n"}, want: "\r\n\r\nclosed\n"},
		{name: "never reads", script: hdr + "echo ignored; exec sleep 1000",
			want: "Status: 504", ended: true},
		{name: "web server gone", script: hdr + "printf 'length: '; wc -c > " + filepath.Join(dir, "got"),
			plan: bodyPlan{cut: 1 << 20, hangUp: true}},
		{name: "body short", script: hdr + "printf 'length: '; wc -c > " + filepath.Join(dir, "got"),
			plan: bodyPlan{cut: 1 << 20}, want: "Status: 400", ended: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidfile := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".pid")
			script := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".cgi")
			body := "#!/bin/sh\necho $$ > " + pidfile + "\n" + tc.script + "\n"
			if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
				t.Fatal(err)
			}
			// The script has started: it is the one to stop.
			tc.plan.size = size
			tc.plan.beforeCut = func() { readPID(t, pidfile) }
			out, ended := nginxLikeRequest(t, sock, script, tc.plan)
			if !strings.Contains(out, tc.want) || ended != tc.ended {
				t.Errorf("stdout %q, END_REQUEST %v; want %q, %v", out, ended, tc.want, tc.ended)
			}
			waitGroupGone(t, readPID(t, pidfile))
		})
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "got")); len(b) > 0 {
		t.Errorf("a script given part of its body took %s bytes for the whole", b)
	}
	out, ended := nginxLikeRequest(t, sock, headerFirstScript(t, dir), bodyPlan{size: 100})
	if !ended || !strings.HasSuffix(out, "length: 100\n") {
		t.Errorf("afterwards: stdout %q, END_REQUEST %v", out, ended)
	}
	// Every slot comes back, once the handlers have seen their ends.
	deadline := time.Now().Add(10 * time.Second)
	for len(wr.slots) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(wr.slots); n != 0 {
		t.Errorf("%d of %d slots still taken", n, cap(wr.slots))
	}
}

// readPID waits for a script to write its PID, a line, to pidfile.
func readPID(t *testing.T, pidfile string) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(pidfile)
		if pid, err := strconv.Atoi(strings.TrimSuffix(string(b), "\n")); err == nil && strings.HasSuffix(string(b), "\n") {
			return pid
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: no PID in %q", pidfile, b)
			return 0
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWrapSecondSignal: a second SIGTERM during the grace ends it at
// once: wrap kills the running scripts' groups, children and all, before
// it exits, rather than die and leave them.
func TestWrapSecondSignal(t *testing.T) {
	wrap, out, done, pids := wrapHanging(t, "5m")
	stopTwice(t, wrap, out, done)
	waitGone(t, pids...)
}

// wrapHanging starts fcgi wrap with --grace grace (startFcgiOrphans) and
// one request for hangScript, and returns once the script has recorded
// its PIDs and its child's.
func wrapHanging(t *testing.T, grace string) (wrap *exec.Cmd, out *syncBuffer, done chan error, pids []int) {
	t.Helper()
	dir := t.TempDir()
	script, pidfile := hangScript(t, dir)
	sock := filepath.Join(dir, "wrap.sock")
	wrap, out, done = startFcgiOrphans(t, func() []int { return pids }, "wrap", "--listen", "unix:"+sock, "--grace", grace)
	waitDial(t, sock)
	wrapRequest(t, sock, script)
	pids = readPIDs(t, pidfile)
	return wrap, out, done, pids
}

// startFcgiOrphans starts the command in the background, as startFcgi
// does, but leaves its exit to the test, which reads it from done (and
// puts it back). The test's cleanup kills orphans() first, the processes
// a failure may leave behind holding the command's output pipe (on which
// Wait waits), then the command.
func startFcgiOrphans(t *testing.T, orphans func() []int, args ...string) (cmd *exec.Cmd, out *syncBuffer, done chan error) {
	t.Helper()
	cmd = exec.Command(fcgiBin, args...)
	out = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		for _, pid := range orphans() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		err := <-done
		t.Logf("fcgi %s: %v; output:\n%s", strings.Join(args, " "), err, out.String())
	})
	return cmd, out, done
}

// stopTwice sends the command SIGTERM, and a second one once it has
// begun to stop, and checks that it exits 1 soon, without waiting for
// its grace.
func stopTwice(t *testing.T, cmd *exec.Cmd, out *syncBuffer, done chan error) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	waitOutput(t, out, "stopping")
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("after a second SIGTERM: %v; want exit status 1", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still running 20 s after a second SIGTERM")
	}
}

// waitGone fails the test unless each of pids is gone (or a zombie)
// within 10 s.
func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if st := procStat(pid); len(st) > 1 && st[0] != "Z" {
			t.Errorf("process %d still running, parent %s", pid, st[1])
		}
	}
}

// TestWrapGraceKillsGroup: at the end of the grace after SIGTERM, a
// running script's whole group is killed, and wrap exits 0.
func TestWrapGraceKillsGroup(t *testing.T) {
	wrap, out, done, pids := wrapHanging(t, "1s")
	wrap.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("wrap after SIGTERM: %v; want exit status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("wrap still running 20 s after SIGTERM with --grace 1s")
	}
	waitGone(t, pids...)
	if !strings.Contains(out.String(), "grace period over") {
		t.Errorf("log lacks the end of the grace:\n%s", out.String())
	}
}

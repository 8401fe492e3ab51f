package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runRefused runs fcgi with args, which must be refused at start: a
// command still running after 10 s is killed and fails the test.
func runRefused(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fcgiBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("fcgi %s: still running after 10 s; want it refused at start\n%s%s", strings.Join(args, " "), out.String(), errb.String())
	}
	res := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestGatewayRootChecked: a --root that is not a directory, or a
// --front-controller that is not a file under it, is refused at start
// with exit status 2 and one line that says what is missing, rather than
// a gateway that answers 404 to every request.
func TestGatewayRootChecked(t *testing.T) {
	root := t.TempDir()
	index := filepath.Join(root, "index.php")
	if err := os.WriteFile(index, []byte("<?php"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(root, "dir.php"), 0o755)
	missing := filepath.Join(root, "public")
	backend := "unix:" + filepath.Join(t.TempDir(), "app.sock")
	for _, tc := range []struct {
		args []string
		want string // the whole of stderr but the usage hint
	}{
		{[]string{"--root", missing}, "fcgi gateway: --root " + missing + ": no such file or directory\n"},
		{[]string{"--root", index}, "fcgi gateway: --root " + index + ": not a directory\n"},
		{[]string{"--root", root, "--front-controller", "/app.php"},
			"fcgi gateway: --front-controller /app.php: " + filepath.Join(root, "app.php") + ": no such file or directory\n"},
		{[]string{"--root", root, "--front-controller", "/dir.php"},
			"fcgi gateway: --front-controller /dir.php: " + filepath.Join(root, "dir.php") + " is not a regular file\n"},
		{[]string{"--root", root, "--front-controller", "index.php"},
			"fcgi gateway: --front-controller index.php: want a path under --root starting with /, such as /index.php\n"},
		{[]string{"--root", missing, "--filter"}, "fcgi gateway: --root " + missing + ": no such file or directory\n"},
	} {
		const hint = "Run 'fcgi gateway --help' for usage.\n"
		args := append([]string{"gateway", "--listen", "127.0.0.1:0", "--backend", backend}, tc.args...)
		res := runRefused(t, args...)
		if res.code != exitUsage || res.stderr != tc.want+hint {
			t.Errorf("fcgi %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(args, " "), res.code, res.stderr, tc.want+hint)
		}
	}
	// Without --root there is nothing for a front controller to be under.
	res := runRefused(t, "gateway", "--listen", "127.0.0.1:0", "--backend", backend, "--front-controller", "/index.php")
	if res.code != exitUsage || !strings.Contains(res.stderr, "--front-controller needs --backend and --root") {
		t.Errorf("--front-controller without --root: exit %d, stderr %q", res.code, res.stderr)
	}
	// What exists starts.
	if u := gatewayURL(t, "--backend", backend, "--root", root, "--front-controller", "/index.php"); u == "" {
		t.Fatal("no URL")
	}
}

// getWith sends a GET to u with the header fields h, and returns the
// status and body.
func getWith(t *testing.T, u string, h map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitLines waits until read gives at least n lines, and returns them.
func waitLines(t *testing.T, what string, n int, read func() string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := read()
		if lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n"); s != "" && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d lines, have:\n%s", what, n, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// combined is an access log line in the combined log format; the request
// line, status, bytes, referer and user agent follow it.
const combined = `^127\.0\.0\.1 - %s \[[0-3][0-9]/[A-Z][a-z]{2}/20[0-9]{2}:[0-2][0-9]:[0-5][0-9]:[0-6][0-9] [+-][0-9]{4}\] `

// TestGatewayAccessLog: --access-log FILE appends a line for each request
// in the combined log format, as nginx writes it, quotes in the fields
// escaped as \x22; SIGHUP reopens the file after it was moved away;
// --access-log - writes to standard output, and counts the bytes of a
// static file sent by sendfile.
func TestGatewayAccessLog(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "access.log")
	proc, u := startGateway(t, "--access-log", logFile)
	read := func(name string) func() string {
		return func() string { b, _ := os.ReadFile(name); return string(b) }
	}
	code, body := getWith(t, u+"status/418?x=1", map[string]string{"Referer": "http://ref.example/", "User-Agent": `ua "quoted"`})
	if code != 418 {
		t.Fatalf("GET /status/418: %d", code)
	}
	waitLines(t, "access log", 1, read(logFile))
	_, envBody := getWith(t, strings.Replace(u, "http://", "http://alice:pw@", 1)+"env", nil)
	lines := waitLines(t, "access log", 2, read(logFile))
	for i, want := range []string{
		fmt.Sprintf(combined+`"GET /status/418\?x=1 HTTP/1\.1" 418 %d "http://ref\.example/" "ua \\x22quoted\\x22"$`, "-", len(body)),
		fmt.Sprintf(combined+`"GET /env HTTP/1\.1" 200 %d "-" "Go-http-client/1\.1"$`, "alice", len(envBody)),
	} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("access log line %d:\n%s\nwant it to match\n%s", i+1, lines[i], want)
		}
	}

	// logrotate: the file is moved away, then SIGHUP.
	if err := os.Rename(logFile, logFile+".1"); err != nil {
		t.Fatal(err)
	}
	if err := proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(logFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new access log after SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	getWith(t, u+"pid", nil)
	if lines := waitLines(t, "reopened access log", 1, read(logFile)); !strings.Contains(lines[0], `"GET /pid HTTP/1.1" 200 `) {
		t.Errorf("reopened access log: %q", lines)
	}
	if n := len(waitLines(t, "moved access log", 2, read(logFile+".1"))); n != 2 {
		t.Errorf("the moved access log has %d lines, want 2", n)
	}

	// To standard output, with static files under --root.
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "style.css"), []byte("body{}"), 0o644)
	backend := startServer(t, http.NotFoundHandler())
	_, out := startFcgi(t, "gateway", "--listen", "127.0.0.1:0", "--backend", backend, "--root", root, "--access-log", "-")
	re := regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+/`)
	waitLines(t, "gateway output", 1, out.String)
	u2 := re.FindString(out.String())
	if u2 == "" {
		t.Fatalf("no URL printed:\n%s", out.String())
	}
	if code, body := getWith(t, u2+"style.css", nil); code != 200 || body != "body{}" {
		t.Fatalf("GET /style.css: %d %q", code, body)
	}
	want := regexp.MustCompile(`(?m)` + fmt.Sprintf(combined, "-")[1:] + `"GET /style\.css HTTP/1\.1" 200 6 "-" "Go-http-client/1\.1"$`)
	deadline = time.Now().Add(10 * time.Second)
	for !want.MatchString(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for /style.css on standard output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayGrace: on SIGTERM a request still running when --grace is
// over is cut off, and the gateway exits 0 (startFcgi's cleanup checks)
// soon after the grace, not after 10 s.
func TestGatewayGrace(t *testing.T) {
	proc, u := startGateway(t, "--grace", "500ms")
	done := make(chan error, 1)
	go func() {
		_, err := httpGet(u + "sleep?d=20s")
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the request reaches the demo
	start := time.Now()
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for proc.Signal(syscall.Signal(0)) == nil {
		if time.Since(start) > 5*time.Second {
			t.Fatal("still running 5 s after SIGTERM with --grace 500ms")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("exited %v after SIGTERM, before the grace was over", d)
	}
	if err := <-done; err == nil {
		t.Error("the request outlived the grace and was answered")
	}
	if res := runRefused(t, "gateway", "--grace", "-1s"); res.code != exitUsage {
		t.Errorf("--grace -1s: exit %d, want 2", res.code)
	}
}

// TestGatewayMaxBodyDefault: the --max-body default is the Gateway's: the
// help states it, and a body declared one byte longer gets 413 while one
// of that size is read (the gateway asks for it with 100 Continue).
func TestGatewayMaxBodyDefault(t *testing.T) {
	help := runFcgi(t, nil, "gateway", "--help")
	m := regexp.MustCompile(`(?s)-max-body bytes\n[^-]*default, ([0-9]+) MiB`).FindStringSubmatch(help.stderr)
	if m == nil {
		t.Fatalf("--help states no --max-body default in MiB:\n%s", help.stderr)
	}
	mib, _ := strconv.ParseInt(m[1], 10, 64)
	u := gatewayURL(t)
	for _, tc := range []struct {
		length int64
		want   string
	}{
		{mib<<20 + 1, "HTTP/1.1 413 "},
		{mib << 20, "HTTP/1.1 100 Continue"},
	} {
		nc := dialGateway(t, u)
		fmt.Fprintf(nc, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", tc.length)
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(nc).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, tc.want) {
			t.Errorf("a body of %d bytes declared: %q %v; want %q", tc.length, line, err, tc.want)
		}
		nc.Close()
	}
}

// TestGatewayDemoPages: the demo's front page links every page, each of
// which answers; /env shows the whole CGI environment, the variables that
// made the request included; /sleep refuses a duration it cannot take.
func TestGatewayDemoPages(t *testing.T) {
	u := gatewayURL(t)
	code, front := getWith(t, u, nil)
	if code != 200 {
		t.Fatalf("GET /: %d", code)
	}
	links := regexp.MustCompile(`(?:href|action)="([^"]*)"`).FindAllStringSubmatch(front, -1)
	linked := map[string]string{}
	for _, l := range links {
		ref, err := url.Parse(l[1])
		if err != nil {
			t.Fatalf("link %q: %v", l[1], err)
		}
		linked[ref.Path] = l[1]
	}
	for _, p := range []string{"/env", "/echo", "/sleep", "/status/418", "/pid", "/id"} {
		if _, ok := linked[p]; !ok {
			t.Errorf("the front page does not link %s; its links: %q", p, links)
		}
	}
	for p, href := range linked {
		var resp *http.Response
		var err error
		if p == "/echo" {
			resp, err = http.PostForm(u+"echo", url.Values{"text": {"hello"}})
		} else {
			resp, err = http.Get(strings.TrimSuffix(u, "/") + href)
		}
		if err != nil {
			t.Fatalf("%s: %v", href, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := 200
		if p == "/status/418" {
			want = 418
		}
		if resp.StatusCode != want || len(b) == 0 {
			t.Errorf("%s: %d %q, want %d and a body", href, resp.StatusCode, b, want)
		}
	}

	code, env := getWith(t, u+"env?a=b", map[string]string{"X-Demo": "yes"})
	for _, want := range []string{
		"REQUEST_METHOD=GET", "QUERY_STRING=a=b", "REQUEST_URI=/env?a=b", "SCRIPT_NAME=/env",
		"SERVER_PROTOCOL=HTTP/1.1", "GATEWAY_INTERFACE=CGI/1.1", "REMOTE_ADDR=127.0.0.1",
		"HTTP_X_DEMO=yes", "HTTP_HOST=" + strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/"),
	} {
		if code != 200 || !strings.Contains("\n"+env, "\n"+want+"\n") {
			t.Errorf("GET /env: %d, no line %s in\n%s", code, want, env)
		}
	}
	if !regexp.MustCompile(`\nREMOTE_PORT=[1-9][0-9]*\n`).MatchString(env) {
		t.Errorf("GET /env: no REMOTE_PORT in\n%s", env)
	}

	for _, q := range []string{"bogus", "", "-1s", "2m"} {
		if code, body := getWith(t, u+"sleep?d="+q, nil); code != http.StatusBadRequest {
			t.Errorf("/sleep?d=%s: %d %q, want 400", q, code, body)
		}
	}
	if code, body := getWith(t, u+"sleep?d=10ms", nil); code != 200 || body != "slept 10ms\n" {
		t.Errorf("/sleep?d=10ms: %d %q", code, body)
	}
}

// TestGatewayBackendMalformed: a --backend that is no address is a usage
// error at start, as a malformed address is for every other subcommand.
func TestGatewayBackendMalformed(t *testing.T) {
	for _, addr := range []string{"localhost", "http://127.0.0.1:9000", "127.0.0.1:99999"} {
		res := runFcgi(t, nil, "gateway", "--listen", "127.0.0.1:0", "--backend", addr)
		if res.code != exitUsage || !strings.HasPrefix(res.stderr, "fcgi gateway: --backend: ") {
			t.Errorf("--backend %s: exit %d, stderr %q; want exit 2 naming --backend", addr, res.code, res.stderr)
		}
	}
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

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
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"relative --script", []string{"--script", rel}},
		{"--root /", []string{"--root", "/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "wrap.sock")
			startFcgi(t, append([]string{"wrap", "--listen", "unix:" + sock}, tc.args...)...)
			waitDial(t, sock)
			res := runFcgi(t, nil, "call", "--root", dir, "unix:"+sock, "/hello.cgi")
			if want := "hello " + script + "\n"; res.code != 0 || res.stdout != want {
				t.Errorf("fcgi wrap %s: exit %d, %q; want 0, %q", strings.Join(tc.args, " "), res.code, res.stdout, want)
			}
		})
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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

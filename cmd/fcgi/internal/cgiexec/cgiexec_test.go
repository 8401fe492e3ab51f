package cgiexec

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeBodyTooLarge: a body over http.MaxBytesReader's limit kills
// the script before its stdin closes (it never counts the part it got as
// the whole) and answers 413.
func TestServeBodyTooLarge(t *testing.T) {
	dir := t.TempDir()
	got := filepath.Join(dir, "got")
	script := filepath.Join(dir, "count.cgi")
	body := "#!/bin/sh\nwc -c > " + got + "\nprintf 'Content-Type: text/plain\\r\\n\\r\\ncounted\\n'\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	stdin := http.MaxBytesReader(w, io.NopCloser(strings.NewReader(strings.Repeat("x", 1<<20))), 100<<10)
	c := &Cmd{Path: script, Env: []string{"PATH=/usr/bin:/bin"}, Stdin: stdin}
	err := c.Serve(context.Background(), w)
	var mbe *http.MaxBytesError
	if !errors.As(err, &mbe) || w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("Serve: %v, status %d %q; want a *http.MaxBytesError and 413", err, w.Code, w.Body)
	}
	if b, _ := os.ReadFile(got); len(b) > 0 {
		t.Errorf("the script took %s bytes for the whole body", b)
	}
}

// TestServeLongStderrLine: a stderr line longer than the line buffer
// comes in pieces, and the lines after it still come.
func TestServeLongStderrLine(t *testing.T) {
	script := filepath.Join(t.TempDir(), "long.cgi")
	body := "#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' x >&2\necho >&2\necho after >&2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	var lines []string
	w := httptest.NewRecorder()
	c := &Cmd{Path: script, Env: []string{"PATH=/usr/bin:/bin"}, Stderr: func(line string) { lines = append(lines, line) }}
	if err := c.Serve(context.Background(), w); err != nil || w.Body.String() != "ok\n" {
		t.Fatalf("Serve: %v, body %q", err, w.Body)
	}
	if all := strings.Join(lines, ""); len(all) != 200000+len("after") || !strings.HasSuffix(all, "xafter") || lines[len(lines)-1] != "after" {
		t.Errorf("stderr in %d lines, %d bytes; want the 200000 x's, then the line \"after\"", len(lines), len(all))
	}
}

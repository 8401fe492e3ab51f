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

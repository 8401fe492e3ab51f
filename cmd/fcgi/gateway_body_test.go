package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestGatewayBodyFlags: a body over --max-body-memory waits in --temp-dir
// while it arrives and is gone once answered; a header field over
// --max-param gets 431.
func TestGatewayBodyFlags(t *testing.T) {
	tmp := t.TempDir()
	proc, url := startGateway(t, "--temp-dir", tmp, "--max-body-memory", "4096", "--max-param", "1000")
	// The files in --temp-dir and those the gateway holds open there (it
	// unlinks a body's file once open, where the system allows).
	files := func() int {
		ents, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		n := len(ents)
		fdDir := fmt.Sprintf("/proc/%d/fd", proc.Pid)
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			if target, err := os.Readlink(fdDir + "/" + fd.Name()); err == nil && strings.HasPrefix(target, tmp+"/") {
				n++
			}
		}
		return n
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d files in --temp-dir", what, files())
			}
		}
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	pr, pw := io.Pipe()
	defer pw.Close()
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Post(url+"echo", "application/octet-stream", pr) // chunked
		if err != nil {
			done <- result{nil, err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{b, err}
	}()
	pw.Write(data[:8<<10])
	poll("while the body arrives", func() bool { return files() == 1 })
	pw.Write(data[8<<10:])
	pw.Close()
	if r := <-done; r.err != nil || !bytes.Equal(r.body, data) {
		t.Fatalf("echo: %v, %d bytes back of %d", r.err, len(r.body), len(data))
	}
	poll("after the response", func() bool { return files() == 0 })

	req, _ := http.NewRequest("GET", url+"env", nil)
	req.Header.Set("X-Big", strings.Repeat("v", 1000))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 1000-byte header with --max-param 1000: %d, want 431", resp.StatusCode)
	}
}

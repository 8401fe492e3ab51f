package fcgicaddy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/fcgikit/fcgi"
)

// TestResponseBodyNeverClosed: a response whose body nobody closes gives
// back what its request held when the request's context ends: the spooled
// body's file, and the connection, so that the next request through a
// max_conns of 1 gets it.
func TestResponseBodyNeverClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d ", n)
		// Far more than the transport reads ahead: the connection is held
		// until the body is read or closed.
		w.Write(bytes.Repeat([]byte("x"), 1<<20))
	})}
	go srv.Serve(ln) // owned by the test; ends with Close
	t.Cleanup(func() { srv.Close() })

	dir := t.TempDir()
	tr := &Transport{MaxConns: 1, BodyMemory: 16, TempDir: dir}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := tr.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	tr.logger = zap.NewNop()
	defer tr.Cleanup()

	roundTrip := func(ctx context.Context) *http.Response {
		t.Helper()
		r := httptest.NewRequestWithContext(ctx, "POST", "/x.php", io.NopCloser(strings.NewReader(strings.Repeat("b", 100))))
		r.ContentLength = -1 // chunked: spooled, past BodyMemory to a file
		r.URL.Host = ln.Addr().String()
		resp, err := tr.RoundTrip(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	ctx, end := context.WithCancel(context.Background())
	resp := roundTrip(ctx)
	if n := len(openFiles(t, dir)); n != 1 {
		t.Fatalf("%d spool files open during the request, want 1", n)
	}
	_ = resp // never read, never closed
	end()

	deadline := time.Now().Add(20 * time.Second)
	for len(openFiles(t, dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("spool files still open 20s after the request ended: %v", openFiles(t, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx2, end2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer end2()
	resp2 := roundTrip(ctx2)
	b, err := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if err != nil || !bytes.HasPrefix(b, []byte("100 x")) || len(b) != 4+1<<20 {
		t.Errorf("next request: %d bytes %.10q, %v; want 100 and the page", len(b), b, err)
	}
}

// openFiles lists this process's descriptors open on files of dir, unlinked
// ones included.
func openFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	var files []string
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			files = append(files, target)
		}
	}
	return files
}

// TestSpoolMemoryBounded: the spooled bodies of concurrent requests hold
// at most max_total_memory together; past it a body goes to a temporary
// file, and reads back whole. The memory comes back as each request ends.
func TestSpoolMemoryBounded(t *testing.T) {
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, tc := range []struct {
		total, wantMax int64
	}{{3 << 19, 1 << 20}, {-1, 3 << 20}} {
		tr := &Transport{BodyMemory: 1 << 20, MaxTotalMemory: tc.total, TempDir: t.TempDir()}
		if err := tr.Provision(cctx); err != nil {
			t.Fatal(err)
		}
		body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		var held []*spooled
		for range 3 {
			s, err := tr.spool(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, s)
		}
		if used := tr.bodyMem.used.Load(); used != tc.wantMax {
			t.Errorf("max_total_memory %d: three 1 MiB bodies hold %d bytes of memory, want %d", tc.total, used, tc.wantMax)
		}
		for i, s := range held {
			got, err := io.ReadAll(s.reader())
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("max_total_memory %d: body %d read back %d bytes, %v", tc.total, i, len(got), err)
			}
			s.close()
		}
		if used := tr.bodyMem.used.Load(); used != 0 {
			t.Errorf("max_total_memory %d: %d bytes still accounted after every request ended", tc.total, used)
		}
		tr.Cleanup()
	}
}

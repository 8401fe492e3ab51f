package fcgi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

// pollLong polls cond for up to 20 seconds: long enough for a loaded
// 2-core machine, and the bound only matters when cond never holds.
func pollLong(cond func() bool) bool {
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// bodyPattern returns n bytes that are not all alike.
func bodyPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	return b
}

// A heldBody sends the first held bytes of data in small pieces, then
// waits for release (or fail) before sending the rest: an uploader that
// is still trickling its body for as long as the test wants.
type heldBody struct {
	data    []byte
	held    int
	off     int
	release chan struct{}
	fail    chan struct{} // closed: the upload breaks off with an error
}

func newHeldBody(data []byte, held int) *heldBody {
	return &heldBody{data: data, held: held, release: make(chan struct{}), fail: make(chan struct{})}
}

func (b *heldBody) Read(p []byte) (int, error) {
	if b.off >= b.held {
		select {
		case <-b.release:
		case <-b.fail:
			return 0, errors.New("uploader gave up")
		}
	} else if len(p) > 1024 {
		p = p[:1024]
		if b.off+len(p) > b.held {
			p = p[:b.held-b.off]
		}
	}
	if b.off >= len(b.data) {
		return 0, io.EOF
	}
	n := copy(p, b.data[b.off:])
	b.off += n
	return n, nil
}

// countingBodies counts the request body bytes h reads, in all.
func countingBodies(h http.Handler, read *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = &countingBody{r.Body, read}
		h.ServeHTTP(w, r)
	})
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// postBody posts body to url and returns what echoApp saw, or an error.
func postBody(c *http.Client, url string, body io.Reader, length int64) (echoed, int, error) {
	req, err := http.NewRequest("POST", url, body)
	if err != nil {
		return echoed{}, 0, err
	}
	req.ContentLength = length
	resp, err := c.Do(req)
	if err != nil {
		return echoed{}, 0, err
	}
	defer resp.Body.Close()
	var e echoed
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			return e, resp.StatusCode, err
		}
	}
	return e, resp.StatusCode, nil
}

// A slow upload does not hold a backend connection while it trickles in:
// with one connection allowed, GETs are served meanwhile, and the upload
// then reaches the application whole, with its exact CONTENT_LENGTH.
func TestGatewayShieldsBackendFromSlowUpload(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.Client.MaxConnsPerBackend = 1
	g.Client.ResponseHeaderTimeout = 30 * time.Second
	g.TempDir = t.TempDir()
	var read atomic.Int64
	srv := httptest.NewServer(countingBodies(g, &read))
	defer srv.Close()

	for _, chunked := range []bool{false, true} {
		data := bodyPattern(1 << 20)
		body := newHeldBody(data, 128<<10)
		release := sync.OnceFunc(func() { close(body.release) })
		defer release()
		length := int64(len(data))
		if chunked {
			length = -1
		}
		done := make(chan error, 1)
		var got echoed
		before := read.Load()
		go func() {
			e, code, err := postBody(srv.Client(), srv.URL+"/app.php", body, length)
			if err == nil && code != 200 {
				err = fmt.Errorf("status %d", code)
			}
			got = e
			done <- err
		}()
		if !pollLong(func() bool { return read.Load()-before >= 128<<10 }) {
			t.Fatalf("chunked %v: the gateway read %d bytes of the upload", chunked, read.Load()-before)
		}
		for i := 0; i < 5; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/app.php?i="+fmt.Sprint(i), nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				cancel()
				t.Fatalf("chunked %v: GET %d while an upload trickles: %v", chunked, i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode != 200 {
				t.Fatalf("chunked %v: GET %d: status %d", chunked, i, resp.StatusCode)
			}
		}
		release()
		if err := <-done; err != nil {
			t.Fatalf("chunked %v: upload: %v", chunked, err)
		}
		if got.Len != len(data) || got.MD5 != fmt.Sprintf("%x", md5.Sum(data)) || got.Params["CONTENT_LENGTH"] != fmt.Sprint(len(data)) {
			t.Fatalf("chunked %v: the application got %d bytes, CONTENT_LENGTH %q", chunked, got.Len, got.Params["CONTENT_LENGTH"])
		}
	}
}

// With StreamRequestBody a body of known length reaches the application
// as it arrives: the application starts while the client still sends.
func TestGatewayStreamRequestBody(t *testing.T) {
	checkLeaks(t)
	started := make(chan struct{}, 1)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.RunOnParams = true
		a.Handler = func(r *fakeReq) {
			started <- struct{}{}
			r.Write("Content-Type: text/plain\r\n\r\nstarted")
		}
	})
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.StreamRequestBody = true
	srv := httptest.NewServer(g)
	defer srv.Close()
	data := bodyPattern(1 << 20)
	body := newHeldBody(data, 128<<10)
	release := sync.OnceFunc(func() { close(body.release) })
	defer release()
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", srv.URL+"/app.php", body)
		req.ContentLength = int64(len(data))
		resp, err := srv.Client().Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "started" {
				err = fmt.Errorf("%d %q", resp.StatusCode, b)
			}
		}
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("upload ended before the application started: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the application did not start while the body was held back")
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// spooledFiles lists the files in dir and those under it that this process
// holds open: the gateway unlinks a body's file as soon as it has opened
// it (where the system allows), so an open descriptor is all that shows
// a body on disk, and a leaked one would show as "... (deleted)".
func spooledFiles(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return names // not Linux: a file is removed when it is closed
	}
	for _, fd := range fds {
		target, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err == nil && strings.HasPrefix(target, dir+string(os.PathSeparator)) {
			names = append(names, target)
		}
	}
	return names
}

// Each way a buffered request can end gives its memory and its temporary
// file back: success, too large, a client that breaks off mid-body, a
// backend that is down, and a response cut off (the handler panics with
// http.ErrAbortHandler).
func TestGatewayBodyResourcesComeBack(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	defer close(release)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["QUERY_STRING"] == "cut" {
				r.Write("Content-Type: text/plain\r\n\r\npartial")
				r.conn.nc.Close()
				return
			}
			r.Write(fmt.Sprintf("Content-Type: text/plain\r\n\r\n%d %x", len(r.Stdin), md5.Sum(r.Stdin)))
		}
	})
	root := docRoot(t)
	_, dead := unixAddr(t)
	tmp := t.TempDir()
	gateways := map[string]*fcgi.Gateway{}
	servers := map[string]*httptest.Server{}
	for name, addr := range map[string]string{"up": app.Addr, "down": dead} {
		g, _ := newGateway(t, addr, root)
		g.MaxMemoryBytes = 16 << 10
		g.MaxBodyBytes = 1 << 20
		g.TempDir = tmp
		g.Client.ResponseHeaderTimeout = 10 * time.Second
		gateways[name] = g
		srv := httptest.NewServer(g)
		defer srv.Close()
		servers[name] = srv
	}
	type result struct {
		code int
		body string
		err  error
	}
	for _, tc := range []struct {
		name    string
		backend string
		query   string
		size    int
		chunked bool
		breaks  bool // the client breaks off after 32 KiB
		code    int  // 0: the client gets no response
	}{
		{name: "in memory", backend: "up", size: 1000, code: 200},
		{name: "in memory, chunked", backend: "up", size: 1000, chunked: true, code: 200},
		{name: "spooled", backend: "up", size: 200 << 10, code: 200},
		{name: "spooled, chunked", backend: "up", size: 200 << 10, chunked: true, code: 200},
		{name: "too large, chunked", backend: "up", size: 2 << 20, chunked: true, code: 413},
		{name: "client breaks off", backend: "up", size: 200 << 10, breaks: true},
		{name: "client breaks off, chunked", backend: "up", size: 200 << 10, chunked: true, breaks: true},
		{name: "backend down, in memory", backend: "down", size: 1000, code: 502},
		{name: "backend down, spooled", backend: "down", size: 200 << 10, code: 502},
		{name: "response cut off, spooled", backend: "up", query: "cut", size: 200 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := bodyPattern(tc.size)
			held := len(data)
			if tc.breaks {
				held = 32 << 10
			}
			body := newHeldBody(data, held)
			if tc.breaks {
				close(body.fail)
			} else {
				close(body.release)
			}
			length := int64(len(data))
			if tc.chunked {
				length = -1
			}
			srv := servers[tc.backend]
			req, _ := http.NewRequest("POST", srv.URL+"/app.php?"+tc.query, body)
			req.ContentLength = length
			var res result
			resp, err := srv.Client().Do(req)
			if err == nil {
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				res = result{resp.StatusCode, string(b), rerr}
			} else {
				res.err = err
			}
			switch {
			case tc.code == 0 && res.err == nil:
				t.Fatalf("got %d %q, want no response", res.code, res.body)
			case tc.code != 0 && (res.err != nil || res.code != tc.code):
				t.Fatalf("got %d %q %v, want %d", res.code, res.body, res.err, tc.code)
			case tc.code == 200 && res.body != fmt.Sprintf("%d %x", len(data), md5.Sum(data)):
				t.Fatalf("the application got %q", res.body)
			}
			g := gateways[tc.backend]
			if !pollLong(func() bool { return len(spooledFiles(t, tmp)) == 0 && fcgi.GatewayBodyMemory(g) == 0 }) {
				t.Fatalf("left behind: temporary files %v, %d bytes of memory", spooledFiles(t, tmp), fcgi.GatewayBodyMemory(g))
			}
		})
	}
	// The gateway still serves.
	resp, err := servers["up"].Client().Post(servers["up"].URL+"/app.php", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("1 %x", md5.Sum([]byte("x"))); string(b) != want {
		t.Fatalf("after: %d %q", resp.StatusCode, b)
	}
}

// Stalled uploads hold at most MaxMemoryBytes each and MaxTotalMemoryBytes
// together; the rest of the bodies wait on disk. Before the bound, 40
// stalled 1 MiB uploads held over 80 MiB.
func TestGatewayBodyMemoryBounded(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	g, _ := newGateway(t, app.Addr, docRoot(t))
	const total = 8 << 20
	g.MaxTotalMemoryBytes = total
	tmp := t.TempDir()
	g.TempDir = tmp
	var read atomic.Int64
	srv := httptest.NewServer(countingBodies(g, &read))
	defer srv.Close()

	const n, sent = 40, 1 << 20 // each sends MaxMemoryBytes (the default), then stalls
	data := bodyPattern(sent + 1)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	bodies := make([]*heldBody, n)
	var wg sync.WaitGroup
	for i := range bodies {
		bodies[i] = newHeldBody(data, sent)
		wg.Add(1)
		go func(b *heldBody) {
			defer wg.Done()
			postBody(srv.Client(), srv.URL+"/app.php", b, -1)
		}(bodies[i])
	}
	defer func() {
		for _, b := range bodies {
			close(b.fail)
		}
		wg.Wait()
		if !pollLong(func() bool { return len(spooledFiles(t, tmp)) == 0 && fcgi.GatewayBodyMemory(g) == 0 }) {
			t.Errorf("after the uploads broke off: temporary files %v, %d bytes of memory", spooledFiles(t, tmp), fcgi.GatewayBodyMemory(g))
		}
	}()
	if !pollLong(func() bool { return read.Load() == n*sent }) {
		t.Fatalf("the gateway read %d bytes of %d", read.Load(), n*sent)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	held := int64(after.HeapInuse) - int64(before.HeapInuse)
	mem := fcgi.GatewayBodyMemory(g)
	t.Logf("%d stalled uploads of %d KiB: %d KiB accounted in memory, %d temporary files, heap in use +%d KiB",
		n, sent>>10, mem>>10, len(spooledFiles(t, tmp)), held>>10)
	// How much of the bound is used depends on the race between the
	// uploads (one that finds it taken moves to disk and frees its share
	// only once written), but never more than the bound.
	if mem > total || mem < sent {
		t.Errorf("%d bytes of bodies in memory, want at most %d, and at least one body", mem, total)
	}
	if files := len(spooledFiles(t, tmp)); files < n-total/sent {
		t.Errorf("%d temporary files, want at least %d", files, n-total/sent)
	}
	// Generous: the bodies in memory, plus each connection's buffers and
	// goroutines on both sides of the test, plus slack.
	if bound := int64(total + n*256<<10 + 16<<20); held > bound {
		t.Errorf("heap in use grew by %d KiB, want at most %d KiB", held>>10, bound>>10)
	}
}

// A trickleBody sends n pieces of data, one every interval.
type trickleBody struct {
	data     []byte
	pieces   int
	interval time.Duration
	sent     int
}

func (b *trickleBody) Read(p []byte) (int, error) {
	if b.sent == b.pieces {
		return 0, io.EOF
	}
	time.Sleep(b.interval)
	size := len(b.data) / b.pieces
	if b.sent == b.pieces-1 {
		size = len(b.data) - b.sent*(len(b.data)/b.pieces)
	}
	start := b.sent * (len(b.data) / b.pieces)
	b.sent++
	return copy(p, b.data[start:start+size]), nil
}

// A client that stops sending its body gets 408 after BodyReadTimeout,
// and what its body held comes back; one that keeps sending, however
// slowly, is not cut off.
func TestGatewayBodyReadTimeout(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write(fmt.Sprintf("Content-Type: text/plain\r\n\r\n%d %x", len(r.Stdin), md5.Sum(r.Stdin)))
		}
	})
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.BodyReadTimeout = 500 * time.Millisecond
	g.MaxMemoryBytes = 16 << 10
	tmp := t.TempDir()
	g.TempDir = tmp
	srv := httptest.NewServer(g)
	defer srv.Close()
	c := &http.Client{Timeout: 30 * time.Second}
	for _, tc := range []struct {
		name    string
		held    int
		chunked bool
	}{
		{"in memory", 8 << 10, false},
		{"in memory, chunked", 8 << 10, true},
		{"spooled", 64 << 10, false},
		{"spooled, chunked", 64 << 10, true},
		{"nothing sent", 0, false},
	} {
		data := bodyPattern(256 << 10)
		body := newHeldBody(data, tc.held)
		defer close(body.fail)
		req, _ := http.NewRequest("POST", srv.URL+"/app.php", body)
		req.ContentLength = int64(len(data))
		if tc.chunked {
			req.ContentLength = -1
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("%s: status %d, want 408", tc.name, resp.StatusCode)
		}
		if !pollLong(func() bool { return len(spooledFiles(t, tmp)) == 0 && fcgi.GatewayBodyMemory(g) == 0 }) {
			t.Fatalf("%s: left behind: temporary files %v, %d bytes of memory", tc.name, spooledFiles(t, tmp), fcgi.GatewayBodyMemory(g))
		}
	}
	if n := app.requests.Load(); n != 0 {
		t.Fatalf("%d timed-out requests reached the application", n)
	}

	// 40 pieces 25 ms apart: a second in all, each wait far below the
	// timeout.
	data := bodyPattern(40 << 10)
	req, _ := http.NewRequest("POST", srv.URL+"/app.php", &trickleBody{data: data, pieces: 40, interval: 25 * time.Millisecond})
	req.ContentLength = -1
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %x", len(data), md5.Sum(data)); string(b) != want {
		t.Fatalf("slow but steady upload: %d %q, want %q", resp.StatusCode, b, want)
	}
}

// BenchmarkGateway_Post: the cost of buffering a body per request, in
// memory (up to MaxMemoryBytes, 1 MiB) and in a temporary file beyond,
// against the fast backend, without HTTP.
func BenchmarkGateway_Post(b *testing.B) {
	app := startFastApp(b, "ok")
	root := b.TempDir()
	os.WriteFile(root+"/index.php", []byte("<?php"), 0o644)
	c := &fcgi.Client{Addr: app.addr}
	defer c.Close()
	g := &fcgi.Gateway{Client: c, Root: root, FrontController: "/index.php", TempDir: b.TempDir()}
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20, 4 << 20} {
		for _, unknown := range []bool{false, true} {
			name := fmt.Sprintf("%dKiB", size>>10)
			if unknown {
				name += "_chunked"
			}
			b.Run(name, func(b *testing.B) {
				data := bodyPattern(size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					var body io.Reader = bytes.NewReader(data)
					if unknown {
						body = chunked{body}
					}
					req := httptest.NewRequest("POST", "/upload", body)
					if unknown {
						req.ContentLength = -1
					}
					w := httptest.NewRecorder()
					g.ServeHTTP(w, req)
					if w.Code != 200 {
						b.Fatal(w.Code)
					}
				}
			})
		}
	}
}

// Memory is taken as a body arrives, not as it is declared, and one body
// never holds more than MaxMemoryBytes: beyond it, it moves to disk.
func TestGatewayBodyMemoryPerRequest(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.MaxTotalMemoryBytes = -1
	tmp := t.TempDir()
	g.TempDir = tmp
	var read atomic.Int64
	srv := httptest.NewServer(countingBodies(g, &read))
	defer srv.Close()
	const n = 10
	for _, tc := range []struct {
		name     string
		declared int64 // -1: chunked
		sent     int
		memMin   int64 // per body
		memMax   int64
		onDisk   bool
	}{
		{"chunked, 300 KiB so far", -1, 300 << 10, 300 << 10, 300<<10 + maxChunkSlack, false},
		{"1 MiB declared, 100 KiB so far", 1 << 20, 100 << 10, 100 << 10, 100<<10 + maxChunkSlack, false},
		{"chunked, past MaxMemoryBytes", -1, 1<<20 + 1, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := bodyPattern(2 << 20)
			if tc.declared > 0 {
				data = data[:tc.declared]
			}
			before := read.Load()
			var wg sync.WaitGroup
			bodies := make([]*heldBody, n)
			for i := range bodies {
				bodies[i] = newHeldBody(data, tc.sent)
				wg.Add(1)
				go func(b *heldBody) {
					defer wg.Done()
					postBody(srv.Client(), srv.URL+"/app.php", b, tc.declared)
				}(bodies[i])
			}
			defer func() {
				for _, b := range bodies {
					close(b.fail)
				}
				wg.Wait()
				if !pollLong(func() bool { return len(spooledFiles(t, tmp)) == 0 && fcgi.GatewayBodyMemory(g) == 0 }) {
					t.Errorf("after: temporary files %v, %d bytes of memory", spooledFiles(t, tmp), fcgi.GatewayBodyMemory(g))
				}
			}()
			if !pollLong(func() bool { return read.Load()-before == int64(n*tc.sent) }) {
				t.Fatalf("the gateway read %d bytes of %d", read.Load()-before, n*tc.sent)
			}
			if tc.onDisk {
				// The last byte read, a body moves to disk, then frees
				// its memory.
				pollLong(func() bool { return fcgi.GatewayBodyMemory(g) == 0 && len(spooledFiles(t, tmp)) == n })
			}
			mem, files := fcgi.GatewayBodyMemory(g), len(spooledFiles(t, tmp))
			if mem < n*tc.memMin || mem > n*tc.memMax {
				t.Errorf("%d KiB in memory for %d bodies, want %d to %d KiB each", mem>>10, n, tc.memMin>>10, tc.memMax>>10)
			}
			if want := map[bool]int{true: n}[tc.onDisk]; files != want {
				t.Errorf("%d temporary files, want %d", files, want)
			}
		})
	}
}

// maxChunkSlack is the most a body's memory exceeds what it holds: the
// room left in its last chunk.
const maxChunkSlack = 64 << 10

// A body that a middleware's http.MaxBytesReader cuts short is answered
// 413, as one over MaxBodyBytes is, not 400.
func TestGatewayBodyMaxBytesReader(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	g, _ := newGateway(t, app.Addr, docRoot(t))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1000)
		g.ServeHTTP(w, r)
	}))
	defer srv.Close()
	for _, size := range []int{1000, 1001} {
		_, code, err := postBody(srv.Client(), srv.URL+"/app.php", chunked{strings.NewReader(strings.Repeat("x", size))}, -1)
		if want := map[bool]int{true: 200, false: http.StatusRequestEntityTooLarge}[size <= 1000]; err != nil || code != want {
			t.Errorf("%d bytes under a 1000-byte MaxBytesReader: %d %v, want %d", size, code, err, want)
		}
	}
}

// With StreamRequestBody, an application that answers without reading the
// body, to a client that has stopped sending it, completes the response:
// the gateway does not wait for the rest of the body to return.
//
// The application answers once it has the part of the body the client
// sent, and flushes before it ends, so that the gateway's body writer is
// waiting for the client when the answer goes out, before the request's
// end stops that wait: net/http's HTTP/1 server, unless told the handler
// is full duplex, locks the request body to write the response header,
// and the waiting body read holds that lock.
func TestGatewayStreamRequestBodyStalledClient(t *testing.T) {
	checkLeaks(t)
	const sent = 128 << 10
	addr := startServer(t, "unix", &fcgi.Server{ErrorLog: quietLog}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadFull(r.Body, make([]byte, sent)); err != nil {
			t.Errorf("the application's read of the part sent: %v", err)
		}
		io.WriteString(w, "answered")
		w.(http.Flusher).Flush()
		time.Sleep(200 * time.Millisecond) // the gateway sends the answer meanwhile
	}))
	g, _ := newGateway(t, "unix:"+addr, docRoot(t))
	g.StreamRequestBody = true
	srv := httptest.NewServer(g)
	defer srv.Close()
	// A raw connection: net/http's client does not let a request whose
	// body blocks end before the body does.
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "POST /app.php HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 1<<20)
	nc.Write(bodyPattern(sent))
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The response ends when the handler does, not at the body's end: the
	// rest of the body never comes, and the connection closes.
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "answered" {
		t.Fatalf("%d %q %v", resp.StatusCode, b, err)
	}
}

// With StreamRequestBody too, a client that stops sending the body the
// application waits for is cut off after BodyReadTimeout: the
// application's worker is not held for ever.
func TestGatewayStreamRequestBodyTimeout(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t) // answers once the whole body is in
	g, logs := newGateway(t, app.Addr, docRoot(t))
	g.StreamRequestBody = true
	g.BodyReadTimeout = 300 * time.Millisecond
	g.Client.ResponseHeaderTimeout = 30 * time.Second
	srv := httptest.NewServer(g)
	defer srv.Close()
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "POST /app.php HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 1<<20)
	nc.Write(bodyPattern(128 << 10))
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("status %d %.200q, want 408; log:\n%.3000s", resp.StatusCode, b, logs.String())
	}
	if !pollLong(func() bool { return app.open.Load() == 0 }) {
		t.Errorf("%d connections to the application still open", app.open.Load())
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a client's stall logged as an error:\n%.2000s", logs.String())
	}
}

package fcgi_test

import (
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

// Slow uploads do not take PHP-FPM's workers while they trickle in: with
// pm.max_children = 2 and four uploads in progress, GETs are answered at
// once, and each upload then reaches PHP whole.
func TestGatewayPHPFPMSlowUploads(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	g, _, logs := phpGateway(t, fpm, 2)
	g.TempDir = t.TempDir()
	var read atomic.Int64
	srv := httptest.NewServer(countingBodies(g, &read))
	defer srv.Close()

	const uploads, size, held = 4, 1 << 20, 128 << 10
	data := bodyPattern(size)
	want := fmt.Sprintf("%d %x", size, md5.Sum(data))
	results := make(chan string, uploads)
	var releases []func()
	for i := 0; i < uploads; i++ {
		body := newHeldBody(data, held)
		release := sync.OnceFunc(func() { close(body.release) })
		defer release()
		releases = append(releases, release)
		go func() {
			req, _ := http.NewRequest("POST", srv.URL+"/raw", body)
			req.ContentLength = size
			resp, err := srv.Client().Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- string(b)
		}()
	}
	if !pollLong(func() bool { return read.Load() >= uploads*held }) {
		t.Fatalf("the gateway read %d bytes of the uploads", read.Load())
	}
	// The bound is a correctness bound: PHP answers in milliseconds, and
	// a GET that waited for a worker held by an upload would wait until
	// the uploads end, which they do not before the GETs are done.
	const bound = 2 * time.Second
	for i := 0; i < 8; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/page", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			cancel()
			t.Fatalf("GET %d while %d uploads trickle: %v", i, uploads, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != 200 || string(b) != "front /page" {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, b)
		}
	}
	for _, release := range releases {
		release()
	}
	for i := 0; i < uploads; i++ {
		if got := <-results; got != want {
			t.Errorf("upload: PHP read %q, want %q", got, want)
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("errors logged:\n%.3000s", logs.String())
	}
}

// PHP-FPM takes a header up to the size of one FastCGI record (it parses
// each PARAMS record on its own, and a longer pair needs two); a larger
// one is answered 431 by the gateway, and PHP-FPM serves on.
func TestGatewayPHPFPMHeaderLimit(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("len.php", `<?php echo strlen($_SERVER['HTTP_X_BIG'] ?? ''), ' ', strlen($_SERVER['QUERY_STRING']);`)
	_, srv, logs := phpGateway(t, fpm, 2)
	v := func(n int) string { return strings.Repeat("v", n) }
	for _, tc := range []struct {
		name   string
		target string
		size   int
		code   int
		body   string
	}{
		{"header at the limit", "/len.php", bigHeaderAtLimit, 200, fmt.Sprintf("%d 0", bigHeaderAtLimit)},
		{"header over the limit", "/len.php", bigHeaderAtLimit + 1, http.StatusRequestHeaderFieldsTooLarge, ""},
		{"URL at the limit", "/len.php?" + v(bigQueryAtLimit), 0, 200, fmt.Sprintf("0 %d", bigQueryAtLimit)},
		{"URL over the limit", "/len.php?" + v(bigQueryAtLimit+1), 0, http.StatusRequestURITooLong, ""},
		{"after", "/len.php", 10, 200, "10 0"},
	} {
		var h http.Header
		if tc.size > 0 {
			h = http.Header{"X-Big": {v(tc.size)}}
		}
		code, body := getWithHeader(t, srv, tc.target, h)
		if code != tc.code || tc.body != "" && body != tc.body {
			t.Errorf("%s: %d %.80q, want %d %q", tc.name, code, body, tc.code, tc.body)
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("errors logged:\n%.3000s", logs.String())
	}
}

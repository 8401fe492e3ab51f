package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dialGateway opens a raw HTTP connection to the gateway at url.
func dialGateway(t *testing.T, url string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// waitClosed reads nc until the gateway closes it and returns how long
// that took since start; a connection still open 20 s from now fails the
// test. A caller measuring a timeout takes start before its last write:
// the gateway's clock starts when it reads that, which may be before
// waitClosed is called.
func waitClosed(t *testing.T, nc net.Conn, r io.Reader, start time.Time) time.Duration {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", time.Since(start))
	}
	return time.Since(start)
}

// TestGatewayBodyTimeout: a request body that stops arriving is cut after
// --body-timeout without a byte; one that keeps coming, however slowly,
// is not, though it takes longer than the timeout.
func TestGatewayBodyTimeout(t *testing.T) {
	url := gatewayURL(t, "--body-timeout", "1s")

	for _, stalled := range []string{
		"Content-Length: 100\r\n\r\n0123456789",
		"Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
	} {
		nc := dialGateway(t, url)
		start := time.Now()
		io.WriteString(nc, "POST /echo HTTP/1.1\r\nHost: x\r\n"+stalled)
		if d := waitClosed(t, nc, nc, start); d < time.Second {
			t.Errorf("%q: cut after %v, before the timeout", stalled, d)
		}
	}

	nc := dialGateway(t, url)
	const pieces = 20
	io.WriteString(nc, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n")
	start := time.Now()
	for i := 0; i < pieces; i++ {
		if _, err := io.WriteString(nc, "0123456789"); err != nil {
			t.Fatalf("piece %d, after %v: %v", i, time.Since(start), err)
		}
		time.Sleep(150 * time.Millisecond) // a slow client, not an assertion
	}
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("slow but steady body, after %v: %v", time.Since(start), err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != strings.Repeat("0123456789", pieces) {
		t.Fatalf("slow but steady body: %d %q %v", resp.StatusCode, body, err)
	}
}

// TestGatewayIdleTimeout: a keep-alive connection with no request is
// closed after --idle-timeout, and not before.
func TestGatewayIdleTimeout(t *testing.T) {
	url := gatewayURL(t, "--idle-timeout", "500ms")
	nc := dialGateway(t, url)
	// The gateway's idle timer starts once it has written the response,
	// after this clock starts: the connection may not close sooner than
	// 500ms from here.
	start := time.Now()
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(nc)
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("status %d, close %v: not kept alive", resp.StatusCode, resp.Close)
	}
	waitClosed(t, nc, br, time.Now())
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("closed %v after the request was sent, before the idle timeout", d)
	}
}

// TestGatewaySendTimeout: with --max-conns 1, a client that stops
// reading a large response holds the only backend connection until
// --send-timeout, then the next request is served.
func TestGatewaySendTimeout(t *testing.T) {
	chunk := []byte(strings.Repeat("x", 1<<20))
	app := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			io.WriteString(w, "ok")
			return
		}
		for i := 0; i < 64; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	url := gatewayURL(t, "--backend", app, "--max-conns", "1", "--send-timeout", "300ms")
	nc := dialGateway(t, url)
	io.WriteString(nc, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	// Reads no more.
	c := &http.Client{Timeout: 20 * time.Second}
	got, err := c.Get(url + "next")
	if err != nil {
		t.Fatalf("next request while a client stalls: %v", err)
	}
	body, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("next request: %d %q", got.StatusCode, body)
	}
	waitClosed(t, nc, br, time.Now())
}

// TestGatewayBodyTimeoutSlowBackend: a backend that takes its time before
// reading a large body is no client stalling; the body arrives whole,
// over HTTP/1 and over HTTP/2 (where a deadline left to pass while
// nothing reads would close the body at once).
func TestGatewayBodyTimeoutSlowBackend(t *testing.T) {
	app := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond) // the application thinks first
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	}))
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeCert(t, cert, key)
	plain := gatewayURL(t, "--backend", app, "--body-timeout", "300ms")
	tlsURL := gatewayURL(t, "--backend", app, "--body-timeout", "300ms", "--tls-cert", cert, "--tls-key", key)
	body := bytes.Repeat([]byte("x"), 4<<20)
	for _, tc := range []struct {
		url string
		c   *http.Client
	}{
		{plain, &http.Client{Timeout: 30 * time.Second}},
		{tlsURL, &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}},
	} {
		resp, err := tc.c.Post(tc.url+"upload", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tc.c.CloseIdleConnections()
		if want := fmt.Sprintf("%d <nil>", len(body)); string(got) != want {
			t.Errorf("HTTP/%d: the application read %q, want %q", resp.ProtoMajor, got, want)
		}
	}
}

// TestGatewayHeaderTimeout: a request header that stops arriving is cut
// after --header-timeout, and not before.
func TestGatewayHeaderTimeout(t *testing.T) {
	url := gatewayURL(t, "--header-timeout", "500ms")
	nc := dialGateway(t, url)
	start := time.Now()
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow:")
	if d := waitClosed(t, nc, nc, start); d < 500*time.Millisecond {
		t.Errorf("cut after %v, before the timeout", d)
	}
}

// TestGatewayTimeoutFlagsNegative: a negative timeout is a usage error.
func TestGatewayTimeoutFlagsNegative(t *testing.T) {
	for _, flag := range []string{"--header-timeout", "--body-timeout", "--idle-timeout", "--send-timeout"} {
		res := runFcgi(t, nil, "gateway", "--listen", "127.0.0.1:0", flag, "-1s")
		if res.code != exitUsage || !strings.Contains(res.stderr, flag[2:]) {
			t.Errorf("%s -1s: exit %d, stderr %q; want 2", flag, res.code, res.stderr)
		}
	}
}

// TestGatewayBodyTimeoutHTTP2: over HTTP/2 too, a body that stops
// arriving is cut after --body-timeout with 408.
func TestGatewayBodyTimeoutHTTP2(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeCert(t, cert, key)
	url := gatewayURL(t, "--body-timeout", "500ms", "--tls-cert", cert, "--tls-key", key)
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer c.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		pw.Write([]byte("0123456789")) // and then nothing more
	}()
	start := time.Now()
	resp, err := c.Post(url+"echo", "text/plain", pr)
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("HTTP/%d %d %q", resp.ProtoMajor, resp.StatusCode, body)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("cut after %v, before the timeout", d)
	}
}

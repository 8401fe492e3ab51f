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
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

// bigStream answers /big with a response far larger than the socket
// buffers between the application and the HTTP client, written in pieces
// until it is sent or the gateway stops reading it; anything else gets "ok".
func bigStream(r *fakeReq) {
	if r.Params["REQUEST_URI"] != "/big" {
		r.Write("Content-Type: text/plain\r\n\r\nok")
		return
	}
	r.Write("Content-Type: application/octet-stream\r\n\r\n")
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for i := 0; i < 64; i++ {
		select {
		case <-r.Aborted:
			return
		default:
		}
		if !writeOK(r, chunk) {
			return // the gateway closed the connection
		}
	}
}

// A client that reads the response header and then stops reading holds
// the only backend connection (or, multiplexed, a request on it); after
// SendTimeout without progress the request ends, the backend connection
// is released (the request aborted) and the next request is served.
func TestGatewaySendTimeout(t *testing.T) {
	for _, mpx := range []bool{false, true} {
		t.Run(map[bool]string{false: "one-request", true: "multiplexed"}[mpx], func(t *testing.T) {
			checkLeaks(t)
			app := startFake(t, "unix", func(a *fakeApp) { a.Handler = bigStream })
			g, logs := newGateway(t, app.Addr, docRoot(t))
			g.Client.MaxConnsPerBackend = 1
			g.Client.ResponseHeaderTimeout = 0
			if mpx {
				g.Client.Multiplex = fcgi.MultiplexOn
			}
			g.SendTimeout = 200 * time.Millisecond
			srv := httptest.NewServer(g)
			defer srv.Close()

			nc, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			io.WriteString(nc, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReaderSize(nc, 4096)
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("stalled client's response: %v %v", resp, err)
			}
			// The client reads no more. Another request needs the one
			// backend connection.
			start := time.Now()
			hc := &http.Client{Timeout: 20 * time.Second}
			got, err := hc.Get(srv.URL + "/")
			if err != nil {
				t.Fatalf("second request not served while the first client stalls (%v): %v", time.Since(start), err)
			}
			body, _ := io.ReadAll(got.Body)
			got.Body.Close()
			hc.CloseIdleConnections()
			if got.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("second request: %d %q", got.StatusCode, body)
			}
			t.Logf("second request served after %v", time.Since(start))
			// Multiplexed, the second request needs no wait; the
			// stalled one is cut all the same.
			if !waitLog(logs, "timed out") {
				t.Fatalf("the send timeout is not logged: %s", logs.String())
			}
			// The stalled client's connection is closed: reading on finds
			// the end, short of the response (a cut chunked body).
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = io.Copy(io.Discard, resp.Body)
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("stalled client's response: %v; want it cut", err)
			}
			if time.Since(start) < g.SendTimeout {
				t.Fatalf("cut after %v, before the send timeout", time.Since(start))
			}
			if mpx {
				// The stalled request was aborted; its connection serves on.
				if !eventually(func() bool { return app.aborts.Load() == 1 }) || app.conns.Load() != 1 {
					t.Fatalf("aborts %d, connections %d", app.aborts.Load(), app.conns.Load())
				}
			} else if !eventually(func() bool { return app.open.Load() <= 1 }) {
				// At most the kept one of the second request.
				t.Fatalf("backend connections open: %d", app.open.Load())
			}
		})
	}
}

// waitLog polls logs for up to 10 s for s.
func waitLog(logs *logBuffer, s string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// A client that reads steadily, with pauses shorter than SendTimeout,
// gets the whole response, though it takes longer than the timeout: the
// deadline moves with progress.
func TestGatewaySendTimeoutMovesWithProgress(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) { a.Handler = bigStream })
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.Client.ResponseHeaderTimeout = 0
	g.SendTimeout = 1500 * time.Millisecond
	srv := httptest.NewServer(g)
	defer srv.Close()
	start := time.Now()
	resp, err := srv.Client().Get(srv.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var n int64
	for {
		m, err := io.CopyN(io.Discard, resp.Body, 4<<20)
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes, %v: %v", n, time.Since(start), err)
		}
		time.Sleep(250 * time.Millisecond) // a slow reader, not an assertion
	}
	if n != 64<<20 {
		t.Fatalf("got %d bytes", n)
	}
	if d := time.Since(start); d < g.SendTimeout {
		t.Logf("read in %v, less than the timeout: the test proves nothing on this machine", d)
	}
}

// headGateway serves a Gateway in front of an application that answers
// every request with the CGI header *head (set before each request) and
// the body "body".
func headGateway(t *testing.T, head *string) (*httptest.Server, *logBuffer) {
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) { r.Write(*head + "\r\nbody") }
	})
	g, logs := newGateway(t, app.Addr, docRoot(t))
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv, logs
}

// Response headers an HTTP client cannot act on are refused with 502
// rather than passed on: a client told two lengths, or a length that is
// no number, waits for bytes that never come, and one given an interim
// status (101 without an upgrade asked for) waits for the final one.
func TestGatewayRefusesBadResponseHeader(t *testing.T) {
	checkLeaks(t)
	var head string
	srv, logs := headGateway(t, &head)
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		head   string
		status int
	}{
		{"Content-Length: 4\r\nContent-Length: 7\r\n", 502},
		{"Content-Length: 4, 7\r\n", 502},
		{"Content-Length: -4\r\n", 502},
		{"Content-Length: four\r\n", 502},
		{"Status: 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", 502},
		{"Status: 100 Continue\r\n", 502},
		{"Status: 103 Early Hints\r\n", 502},
		{"Content-Length: 4\r\nContent-Length: 4\r\n", 200},
		{"Content-Length: 4\r\n", 200},
	} {
		head = tc.head
		resp, err := hc.Get(srv.URL + "/")
		if err != nil {
			t.Errorf("%q: %v", tc.head, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.status {
			t.Errorf("%q: %d %q %v, want %d", tc.head, resp.StatusCode, body, err, tc.status)
		}
		if tc.status == 200 && (string(body) != "body" || resp.ContentLength != 4) {
			t.Errorf("%q: body %q, Content-Length %d", tc.head, body, resp.ContentLength)
		}
	}
	if !strings.Contains(logs.String(), "Content-Length") || !strings.Contains(logs.String(), "interim") {
		t.Errorf("the reasons are not logged: %s", logs.String())
	}
}

// spoofHeaders are request header names that PHP (which registers $_SERVER
// with ' ', '.' and '[' folded into '_') or a CGI program would take for
// X-Real-Ip, and others with characters beyond letters, digits and '-'.
var spoofHeaders = []string{"X_Real_Ip", "X.Real.Ip", "X[Real[Ip", "X Real Ip", "X.Real-Ip", "X~Real", "X!Real", "X*Real", "X'Real", "X|Real", "X^Real", "X`Real", "X#Real", "X$Real", "X%Real", "X&Real", "X+Real"}

// Header names that fold into another's CGI variable are dropped: nginx
// drops those with '_' (underscores_in_headers off), and PHP folds '.',
// ' ' and '[' into '_' as well, so X.Real.Ip would set
// $_SERVER['HTTP_X_REAL_IP']. Only letters, digits and '-' pass.
func TestGatewayDropsFoldingHeaderNames(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	g, _ := newGateway(t, app.Addr, docRoot(t))
	req := httptest.NewRequest("GET", "/app.php", nil)
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("X-Ok-2", "kept")
	for _, k := range spoofHeaders {
		req.Header[k] = []string{"spoof"}
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, req)
	var e echoed
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("%d %q: %v", w.Code, w.Body.String(), err)
	}
	if e.Params["HTTP_X_FORWARDED_FOR"] != "10.0.0.1" || e.Params["HTTP_X_OK_2"] != "kept" {
		t.Errorf("plain headers lost: %v", e.Params)
	}
	for k, v := range e.Params {
		if v == "spoof" {
			t.Errorf("%s = %q passed", k, v)
		}
	}

	// Over the wire too: net/http accepts every token character in a
	// name, '.' included.
	srv := httptest.NewServer(g)
	defer srv.Close()
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /app.php HTTP/1.1\r\nHost: x\r\nX.Real.Ip: spoof\r\nX~Real: spoof\r\nConnection: close\r\n\r\n")
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	e = echoed{}
	json.NewDecoder(resp.Body).Decode(&e)
	if e.Params["HTTP_HOST"] != "x" {
		t.Fatalf("%d %v", resp.StatusCode, e.Params)
	}
	for k, v := range e.Params {
		if v == "spoof" {
			t.Errorf("over HTTP: %s = %q passed", k, v)
		}
	}
}

// Against PHP itself: a header named X.Real.Ip does not become
// $_SERVER['HTTP_X_REAL_IP'].
func TestGatewayFoldingHeaderNamesPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	fpm.WriteFile("env.php", dumpServer)
	_, srv, _ := phpGateway(t, fpm, 1)
	req, _ := http.NewRequest("GET", srv.URL+"/env.php", nil)
	req.Header["X.Real.Ip"] = []string{"10.6.6.6"}
	req.Header["X.Forwarded-For"] = []string{"10.6.6.7"}
	req.Header.Set("X-Real-Ip-Ok", "kept")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var server map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&server); err != nil {
		t.Fatalf("%d: %v", resp.StatusCode, err)
	}
	if server["HTTP_X_REAL_IP_OK"] != "kept" {
		t.Fatalf("$_SERVER: %v", server)
	}
	for k, v := range server {
		if v == "10.6.6.6" || v == "10.6.6.7" {
			t.Errorf("$_SERVER[%q] = %q from a header with '.' in its name", k, v)
		}
	}
}

// A backend that pauses longer than SendTimeout is no client stalling:
// the deadline runs only while a write waits. Over HTTP/1 a deadline left
// to pass would fail the response's last write (the end of a chunked
// body); over HTTP/2 it resets the stream even with no write waiting.
func TestGatewaySendTimeoutBackendPause(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write("Content-Type: text/plain\r\n\r\na")
			time.Sleep(700 * time.Millisecond) // the application thinks
			if r.Params["REQUEST_URI"] == "/middle" {
				r.Write("b")
			}
		}
	})
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.Client.ResponseHeaderTimeout = 0
	g.SendTimeout = 200 * time.Millisecond
	for _, h2 := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(g)
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		for path, want := range map[string]string{"/end": "a", "/middle": "ab"} {
			resp, err := srv.Client().Get(srv.URL + path)
			if err != nil {
				t.Fatalf("h2 %v, %s: %v", h2, path, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != want || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
				t.Errorf("HTTP/%d, %s: %q %v, want %q", resp.ProtoMajor, path, body, err, want)
			}
		}
		srv.Close()
	}
}

// Over HTTP/2 the stalled stream is reset, and the backend connection it
// held serves the next request.
func TestGatewaySendTimeoutHTTP2(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) { a.Handler = bigStream })
	g, logs := newGateway(t, app.Addr, docRoot(t))
	g.Client.MaxConnsPerBackend = 1
	g.Client.ResponseHeaderTimeout = 0
	g.SendTimeout = 200 * time.Millisecond
	srv := httptest.NewUnstartedServer(g)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	stalled, err := srv.Client().Get(srv.URL + "/big")
	if err != nil || stalled.ProtoMajor != 2 {
		t.Fatalf("%v %v", stalled, err)
	}
	defer stalled.Body.Close()
	// The client reads no more of it; another connection needs the
	// backend.
	other := &http.Client{Transport: srv.Client().Transport.(*http.Transport).Clone(), Timeout: 20 * time.Second}
	defer other.CloseIdleConnections()
	got, err := other.Get(srv.URL + "/")
	if err != nil {
		t.Fatalf("second request not served while the first stream stalls: %v", err)
	}
	body, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("second request: %d %q", got.StatusCode, body)
	}
	if _, err := io.Copy(io.Discard, stalled.Body); err == nil {
		t.Fatal("the stalled stream ended cleanly")
	}
	if !eventually(func() bool { return app.open.Load() <= 1 }) {
		t.Fatalf("backend connections open: %d", app.open.Load())
	}
	if !strings.Contains(logs.String(), "timed out") {
		t.Errorf("the send timeout is not logged: %s", logs.String())
	}
}

// An http.Server WriteTimeout bounds the whole response still: moving the
// deadline with progress does not carry it past the server's, whether
// SendTimeout is shorter than WriteTimeout or not.
func TestGatewaySendTimeoutKeepsServerWriteTimeout(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) { a.Handler = bigStream })
	for _, send := range []time.Duration{400 * time.Millisecond, 0} {
		g, _ := newGateway(t, app.Addr, docRoot(t))
		g.Client.ResponseHeaderTimeout = 0
		g.SendTimeout = send
		srv := httptest.NewUnstartedServer(g)
		srv.Config.WriteTimeout = 1 * time.Second
		srv.Start()
		start := time.Now()
		resp, err := srv.Client().Get(srv.URL + "/big")
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for {
			m, err := io.CopyN(io.Discard, resp.Body, 1<<20)
			n += m
			if err == io.EOF {
				t.Fatalf("SendTimeout %v: all %d bytes in %v: the server's WriteTimeout did not apply", send, n, time.Since(start))
			}
			if err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // a slow reader, not an assertion
		}
		resp.Body.Close()
		if d := time.Since(start); d < srv.Config.WriteTimeout {
			t.Fatalf("SendTimeout %v: cut after %v, before the server's WriteTimeout", send, d)
		}
		srv.Close()
	}
}

// A body longer or shorter than the application's own Content-Length is
// the application's fault, logged as such, and the client can tell the
// response is broken (it is cut short of its length).
func TestGatewayContentLengthMismatch(t *testing.T) {
	checkLeaks(t)
	var head string
	srv, logs := headGateway(t, &head)
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for head0, want := range map[string]string{
		"Content-Length: 7\r\n": "shorter than its Content-Length",
		"Content-Length: 2\r\n": "longer than its Content-Length",
	} {
		head = head0
		resp, err := hc.Get(srv.URL + "/")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Errorf("%q: the response looks whole", head)
		}
		if !waitLog(logs, want) {
			t.Errorf("%q: not logged as %q: %s", head, want, logs.String())
		}
	}
	// HEAD and 304 answers carry a length with no body: no complaint.
	for _, tc := range []struct{ method, head string }{
		{"HEAD", "Content-Length: 7\r\n"},
		{"GET", "Status: 304\r\nContent-Length: 7\r\n"},
	} {
		head = tc.head
		req, _ := http.NewRequest(tc.method, srv.URL+"/", nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %q: %v", tc.method, tc.head, err)
		}
		resp.Body.Close()
	}
	if n := strings.Count(logs.String(), "than its Content-Length"); n != 2 {
		t.Errorf("%d complaints, want 2: %s", n, logs.String())
	}
}

// writeOK sends p on r's STDOUT and reports whether it went: false once
// the gateway has closed the connection.
func writeOK(r *fakeReq, p []byte) bool {
	c := r.conn
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.wr.WriteStream(wire.TypeStdout, r.ID, p) == nil && c.wr.Flush() == nil
}

// An authorizer that allows, and then sends a body without end (which is
// ignored), does not hold the request: the gateway reads a little of it
// and then gives the connection up.
func TestGatewayAuthorizerEndlessBody(t *testing.T) {
	checkLeaks(t)
	auth := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write("Status: 200\r\nVariable-AUTH_USER: alice\r\n\r\n")
			chunk := make([]byte, 32<<10)
			for writeOK(r, chunk) {
			}
		}
	})
	app := echoApp(t)
	root := docRoot(t)
	ag, _ := newGateway(t, auth.Addr, root)
	ag.Client.ResponseHeaderTimeout = 0
	g, _ := newGateway(t, app.Addr, root)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := httptest.NewRequest("GET", "/app.php", nil).WithContext(ctx)
	w := httptest.NewRecorder()
	ag.Authorizer(g).ServeHTTP(w, req)
	var e echoed
	json.Unmarshal(w.Body.Bytes(), &e)
	if w.Code != 200 || e.Params["AUTH_USER"] != "alice" {
		t.Fatalf("allowed: %d %q (%v)", w.Code, w.Body.String(), ctx.Err())
	}
	if !eventually(func() bool { return auth.open.Load() == 0 }) {
		t.Fatalf("authorizer connections open: %d", auth.open.Load())
	}
}

// Against PHP-FPM with one worker: a client that stops reading a large
// page holds the worker until SendTimeout; then the worker serves the
// next request.
func TestGatewaySendTimeoutPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	fpm.WriteFile("big.php", `<?php $s = str_repeat("x", 1 << 20); for ($i = 0; $i < 64; $i++) { echo $s; flush(); }`)
	fpm.WriteFile("ok.php", `<?php echo "ok";`)
	g, srv, logs := phpGateway(t, fpm, 1)
	g.SendTimeout = 300 * time.Millisecond
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /big.php HTTP/1.1\r\nHost: x\r\n\r\n")
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	// Reads no more.
	hc := &http.Client{Timeout: 20 * time.Second}
	defer hc.CloseIdleConnections()
	got, err := hc.Get(srv.URL + "/ok.php")
	if err != nil {
		t.Fatalf("next request while a client stalls: %v", err)
	}
	body, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if got.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("next request: %d %q", got.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "timed out") {
		t.Errorf("the send timeout is not logged: %s", logs.String())
	}
}

// Against PHP-FPM: a script that answers 101, or sends two different
// Content-Length fields, gets the client a 502 rather than a hang.
func TestGatewayBadResponseHeaderPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	fpm.WriteFile("upgrade.php", `<?php http_response_code(101); header("Upgrade: websocket"); echo "body";`)
	fpm.WriteFile("lengths.php", `<?php header("Content-Length: 4"); header("Content-Length: 7", false); echo "body";`)
	fpm.WriteFile("same.php", `<?php header("Content-Length: 4"); header("Content-Length: 4", false); echo "body";`)
	_, srv, _ := phpGateway(t, fpm, 1)
	hc := &http.Client{Timeout: 20 * time.Second}
	defer hc.CloseIdleConnections()
	for path, want := range map[string]int{"/upgrade.php": 502, "/lengths.php": 502, "/same.php": 200} {
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != want || want == 200 && string(body) != "body" {
			t.Errorf("%s: %d %q %v, want %d", path, resp.StatusCode, body, err, want)
		}
	}
}

// A static file (ServeStatic) is held to SendTimeout too: a client that
// stops reading a large one is cut off, while one that reads steadily
// gets it whole.
func TestGatewaySendTimeoutStatic(t *testing.T) {
	checkLeaks(t)
	root := docRoot(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 4<<20) // 64 MiB
	if err := os.WriteFile(filepath.Join(root, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	app := startFake(t, "unix", nil)
	g, logs := newGateway(t, app.Addr, root)
	g.ServeStatic = true
	g.SendTimeout = 300 * time.Millisecond
	srv := httptest.NewServer(g)
	defer srv.Close()

	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(big)) {
		t.Fatalf("%v %v", resp, err)
	}
	// Reads no more, until the gateway has given up on it.
	if !waitLog(logs, "timed out") {
		t.Fatalf("the send timeout is not logged: %s", logs.String())
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n == int64(len(big)) {
		t.Fatalf("stalled client got %d bytes, %v; want it cut", n, err)
	}

	// Steady, with pauses shorter than the timeout, though the whole
	// takes longer: served whole.
	g2, _ := newGateway(t, app.Addr, root)
	g2.ServeStatic = true
	g2.SendTimeout = 1500 * time.Millisecond
	srv2 := httptest.NewServer(g2)
	defer srv2.Close()
	start := time.Now()
	resp, err = srv2.Client().Get(srv2.URL + "/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := md5.New()
	for {
		_, err := io.CopyN(h, resp.Body, 4<<20)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("steady reader, after %v: %v", time.Since(start), err)
		}
		time.Sleep(250 * time.Millisecond) // a slow reader, not an assertion
	}
	if got, want := fmt.Sprintf("%x", h.Sum(nil)), fmt.Sprintf("%x", md5.Sum(big)); got != want {
		t.Fatalf("steady reader got a different file")
	}

	// Ranges go through the same writer.
	for rng, want := range map[string]string{"bytes=16-31": "0123456789abcdef", "bytes=3-5": "345"} {
		req, _ := http.NewRequest("GET", srv2.URL+"/big.bin", nil)
		req.Header.Set("Range", rng)
		resp, err := srv2.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 206 || string(body) != want {
			t.Errorf("Range %s: %d %q", rng, resp.StatusCode, body)
		}
	}
	req, _ := http.NewRequest("GET", srv2.URL+"/big.bin", nil)
	req.Header.Set("Range", "bytes=0-1,16-17")
	resp, err = srv2.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, mp, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 206 || err != nil {
		t.Fatalf("two ranges: %d %q %v", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	var parts []string
	mr := multipart.NewReader(resp.Body, mp["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("two ranges: %v", err)
		}
		b, _ := io.ReadAll(p)
		parts = append(parts, string(b))
	}
	if strings.Join(parts, ",") != "01,01" {
		t.Errorf("two ranges: parts %q, want 01 and 01", parts)
	}
}

// A 304 or 204 that the application sends with a body anyway: the client
// gets no body, and the backend connection is kept (the body read and
// dropped) rather than closed for it.
func TestGatewayBodyNotAllowedKeepsConn(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write("Status: " + strings.TrimPrefix(r.Params["REQUEST_URI"], "/") + "\r\n\r\nan unwanted body")
		}
	})
	g, logs := newGateway(t, app.Addr, docRoot(t))
	srv := httptest.NewServer(g)
	defer srv.Close()
	for _, code := range []int{304, 204, 304, 200} {
		resp, err := srv.Client().Get(fmt.Sprintf("%s/%d", srv.URL, code))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != code || (code != 200) != (len(body) == 0) {
			t.Fatalf("%d: %d %q", code, resp.StatusCode, body)
		}
	}
	if n := app.conns.Load(); n != 1 {
		t.Errorf("%d backend connections for 4 requests, want 1: %s", n, logs.String())
	}
}

// A client that closes its connection in the middle of a large response
// frees the backend connection at once, with no send timeout at all.
func TestGatewayClientClosesMidResponse(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) { a.Handler = bigStream })
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.Client.MaxConnsPerBackend = 1
	g.Client.ResponseHeaderTimeout = 0
	g.SendTimeout = -1
	srv := httptest.NewServer(g)
	defer srv.Close()
	for _, rst := range []bool{false, true} {
		nc, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(nc), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		if rst {
			nc.(*net.TCPConn).SetLinger(0)
		}
		nc.Close()
		hc := &http.Client{Timeout: 20 * time.Second}
		got, err := hc.Get(srv.URL + "/")
		if err != nil {
			t.Fatalf("reset %v: next request: %v", rst, err)
		}
		body, _ := io.ReadAll(got.Body)
		got.Body.Close()
		hc.CloseIdleConnections()
		if string(body) != "ok" {
			t.Fatalf("reset %v: next request: %d %q", rst, got.StatusCode, body)
		}
	}
	if !eventually(func() bool { return app.open.Load() <= 1 }) {
		t.Fatalf("backend connections open: %d", app.open.Load())
	}
}

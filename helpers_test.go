package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"go.uber.org/goleak"
)

// forEachNetwork runs f in a subtest for each network the package serves
// and dials on, named by the network: "tcp" (loopback) and "unix".
func forEachNetwork(t *testing.T, f func(t *testing.T, network string)) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) { f(t, network) })
	}
}

// startServer serves h with srv (a fresh Server if nil) on network and
// returns the address; the server is closed at the end of the test.
func startServer(t testing.TB, network string, srv *fcgi.Server, h http.Handler) string {
	t.Helper()
	var l net.Listener
	var err error
	if network == "unix" {
		l, err = net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	if srv == nil {
		srv = &fcgi.Server{}
	}
	srv.Handler = h
	serveOn(t, l, srv)
	return l.Addr().String()
}

// serveOn runs srv.Serve(l) until the end of the test, logging into the
// test's log unless srv has an ErrorLog, and then closes srv and waits
// for its handlers to return.
func serveOn(t testing.TB, l net.Listener, srv *fcgi.Server) {
	t.Helper()
	if srv.ErrorLog == nil {
		srv.ErrorLog = testLogger(t)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, fcgi.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		// Handlers were told by Close; give them a moment to return so
		// the leak check sees a quiet process.
		deadline := time.Now().Add(5 * time.Second)
		for srvBusy(srv) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// testLogger logs at debug level into the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func srvBusy(srv *fcgi.Server) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	return srv.Shutdown(ctx) != nil
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func dial(t *testing.T, network, addr string) *fcgitest.Conn {
	return fcgitest.Dial(t, network, addr)
}

// parseCGI splits a CGI response into its header lines and body.
func parseCGI(t *testing.T, stdout []byte) (map[string]string, string) {
	t.Helper()
	head, body, ok := strings.Cut(string(stdout), "\r\n\r\n")
	if !ok {
		t.Fatalf("no end of CGI header in %q", stdout)
	}
	h := make(map[string]string)
	for _, line := range strings.Split(head, "\r\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("bad header line %q", line)
		}
		h[k] = v
	}
	return h, body
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello, "+r.URL.Path) }

// checkLeaks fails t if a goroutine that starts during t is still running
// when t and its cleanups end. TestMain finds the same leaks, but only
// checkLeaks names the test that left them.
func checkLeaks(t testing.TB) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// eventually polls cond for up to two seconds.
func eventually(cond func() bool) bool { return eventuallyFor(2*time.Second, cond) }

// eventuallyFor polls cond for up to d.
func eventuallyFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// quietLog discards what a Client or Server logs.
var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func newClient(addr string) *fcgi.Client {
	return &fcgi.Client{Addr: addr, ErrorLog: quietLog}
}

func get(uri string) *fcgi.Request {
	return &fcgi.Request{Params: map[string]string{"REQUEST_METHOD": "GET", "REQUEST_URI": uri}}
}

// replayablePost is a POST of body that the client may send again, as
// Gateway makes them (GetBody set).
func replayablePost(body string) *fcgi.Request {
	req := get("/")
	req.Params["REQUEST_METHOD"] = "POST"
	req.Body = strings.NewReader(body)
	req.GetBody = func() (io.Reader, error) { return strings.NewReader(body), nil }
	return req
}

func doString(t testing.TB, c *fcgi.Client, req *fcgi.Request) (*fcgi.Response, string) {
	t.Helper()
	resp, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// logBuffer is a slog destination safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

package fcgi_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// An application that floods STDERR, as a PHP script warning in a loop
// does, costs a bounded log: the first 64 KiB of a request's stderr are
// logged, then one line says the rest was dropped.
func TestGatewayStderrFloodBounded(t *testing.T) {
	checkLeaks(t)
	line := strings.Repeat("PHP Warning: again ", 800) + "\n" // ~15 KiB
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_URI"] == "/flood" {
				for range 300 { // ~4.5 MiB
					r.WriteErr(line)
				}
			}
			r.Write("Content-Type: text/plain\r\n\r\nhello")
		}
	})
	g, logs := newGateway(t, app.Addr, docRoot(t))
	if w := serveGW(g, "GET", "/flood", nil); w.Code != http.StatusOK || w.Body.String() != "hello" {
		t.Fatalf("flood: %d %q", w.Code, w.Body.String())
	}
	if n := len(logs.String()); n > 256<<10 {
		t.Fatalf("%d bytes logged for one request's stderr", n)
	}
	if !strings.Contains(logs.String(), "PHP Warning: again") || !strings.Contains(logs.String(), "stderr truncated") {
		t.Fatalf("log lacks the stderr or the truncation note: %q", clipLog(logs.String()))
	}
	// The bound is per request: the next one's stderr is logged again.
	before := strings.Count(logs.String(), "PHP Warning")
	if w := serveGW(g, "GET", "/flood", nil); w.Code != http.StatusOK {
		t.Fatalf("second flood: %d", w.Code)
	}
	if strings.Count(logs.String(), "PHP Warning") <= before {
		t.Fatal("the second request's stderr was not logged")
	}
}

func clipLog(s string) string {
	if len(s) > 2000 {
		return s[:1000] + " ... " + s[len(s)-1000:]
	}
	return s
}

// A HEAD request gets the application's header and no body: the Gateway
// gives the backend request up once the header is sent, as nginx does,
// rather than reading and dropping a body that may never end while the
// client, answered, keeps its connection open.
func TestGatewayHeadFreesBackend(t *testing.T) {
	checkLeaks(t)
	ended := make(chan struct{}, 1)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_METHOD"] != "HEAD" {
				r.Write("Content-Type: text/plain\r\n\r\nhello")
				return
			}
			defer func() { ended <- struct{}{} }()
			r.Write("Content-Type: text/event-stream\r\n\r\n")
			chunk := strings.Repeat("data: x\n\n", 1000)
			for range 2000 { // 20 s at most
				select {
				case <-r.Aborted:
					return
				case <-time.After(10 * time.Millisecond):
				}
				r.conn.wmu.Lock()
				err := r.conn.wr.WriteStream(wire.TypeStdout, r.ID, []byte(chunk))
				if err == nil {
					err = r.conn.wr.Flush()
				}
				r.conn.wmu.Unlock()
				if err != nil {
					return
				}
			}
		}
	})
	for _, mpx := range []fcgi.MultiplexMode{fcgi.MultiplexOff, fcgi.MultiplexOn} {
		g, _ := newGateway(t, app.Addr, docRoot(t))
		g.Client.MaxConnsPerBackend = 1
		g.Client.Multiplex = mpx
		srv := httptest.NewServer(g)
		nc, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, "HEAD /events HTTP/1.1\r\nHost: x\r\n\r\n")
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(nc)
		resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("mpx %v: HEAD: %v %v", mpx, resp, err)
		}
		// The client keeps its connection, and the backend must be let go.
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatalf("mpx %v: the backend request of an answered HEAD still runs", mpx)
		}
		io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("mpx %v: GET after HEAD: %v", mpx, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "hello" {
			t.Fatalf("mpx %v: GET after HEAD: %d %q", mpx, resp.StatusCode, body)
		}
		nc.Close()
		srv.Close()
		g.Client.Close()
	}
}

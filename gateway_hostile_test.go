package fcgi_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
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
			r.Dribble([]byte(strings.Repeat("data: x\n\n", 1000)))
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

// Hostile HTTP clients, each against a Gateway whose backend allows one
// connection: afterwards no request is in flight at the gateway, no body
// memory or temporary file is held, the backend connection is idle, and a
// fresh request is served.
func TestGatewayHostileClients(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Params["REQUEST_URI"] == "/slow" {
				time.Sleep(100 * time.Millisecond)
			}
			r.Write("Content-Type: text/plain\r\n\r\n" + r.Params["REQUEST_URI"] + " " + r.Params["CONTENT_LENGTH"])
		}
	})
	spool := t.TempDir()
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.Client.MaxConnsPerBackend = 1
	g.TempDir = spool
	g.MaxMemoryBytes = 8 << 10
	g.MaxBodyBytes = 1 << 20
	g.BodyReadTimeout = 300 * time.Millisecond
	srv := httptest.NewServer(g)
	defer srv.Close()
	chunked := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteString("1000\r\n" + strings.Repeat("z", 4096) + "\r\n")
		}
		return b.String()
	}
	for _, tc := range []struct {
		name string
		send string // written at once
		rst  bool   // reset after send, without reading
		want []string
	}{
		{"pipelined", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", false,
			[]string{"200 /slow ", "200 /a ", "200 /b "}},
		{"http10", "GET /c HTTP/1.0\r\n\r\n", false, []string{"200 /c "}},
		{"expect-over-limit", "POST /d HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n", false, []string{"413"}},
		{"chunked-over-limit", "POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(300) + "0\r\n\r\n", false, []string{"413"}},
		{"chunked-malformed", "POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(4) + "zz\r\n", false, []string{"400"}},
		{"chunked-spilled", "POST /g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(16) + "0\r\n\r\n", false, []string{"200 /g 65536"}},
		{"chunked-stalls", "POST /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(16), false, []string{"408"}},
		{"chunked-reset", "POST /i HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(16), true, nil},
		{"expect-reset", "POST /j HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("z", 50000), true, nil},
		{"conflicting-length", "POST /k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", false, []string{"400"}},
		{"cookies", "GET /l HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("Cookie: "+strings.Repeat("c", 1000)+"\r\n", 100) + "\r\n", false, []string{"431"}},
		{"many-headers", "GET /n HTTP/1.1\r\nHost: x\r\n" + manyHeaders(8000) + "\r\n", false, []string{"200 /n "}},
		{"long-uri", "GET /m?" + strings.Repeat("q", 70000) + " HTTP/1.1\r\nHost: x\r\n\r\n", false, []string{"414"}},
		// net/http answers it itself.
		{"options-star", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", false, []string{"200 "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			go io.WriteString(nc, tc.send) // the server may answer before it has read it all
			if tc.rst {
				time.Sleep(100 * time.Millisecond)
				nc.(*net.TCPConn).SetLinger(0)
				nc.Close()
			}
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(nc)
			for i, want := range tc.want {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				var got string
				if resp.StatusCode == 200 {
					got = strconv.Itoa(resp.StatusCode) + " " + string(body)
				} else {
					got = strconv.Itoa(resp.StatusCode)
				}
				if got != want {
					t.Fatalf("response %d: %q, want %q (%v %q)", i, got, want, resp.Header, body)
				}
			}
			nc.Close()
			if !eventuallyFor(5*time.Second, func() bool {
				open, idle := fcgi.PoolCounts(g.Client)
				return g.Stats().InFlight == 0 && fcgi.GatewayBodyMemory(g) == 0 && len(spooledFiles(t, spool)) == 0 && open == idle
			}) {
				open, idle := fcgi.PoolCounts(g.Client)
				t.Fatalf("in flight %d, body memory %d, files %v, %d open %d idle", g.Stats().InFlight, fcgi.GatewayBodyMemory(g), spooledFiles(t, spool), open, idle)
			}
			resp, err := srv.Client().Get(srv.URL + "/next")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "/next " {
				t.Fatalf("next request: %d %q", resp.StatusCode, body)
			}
		})
	}
	srv.Client().CloseIdleConnections()
}

// The Gateway answers some requests without reading their body to the end:
// a body over MaxBodyBytes, a header or URL the application cannot take, a
// path with no script, a static file, an authorizer's refusal. A client
// that then stops sending the body must still get the answer: net/http
// reads up to 256 KiB of an unread body before it sends a response on a
// connection it keeps, and waits, with no deadline, for a client that has
// stopped. The answer closes the connection instead.
func TestGatewayEarlyAnswerUnreadBody(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			if r.Role == wire.RoleAuthorizer && r.Params["REQUEST_URI"] == "/deny" {
				r.Write("Status: 403\r\n\r\nno")
				return
			}
			r.Write("Content-Type: text/plain\r\n\r\nhello")
		}
	})
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.FrontController = ""
	g.ServeStatic = true
	g.MaxBodyBytes = 64 << 10
	g.BodyReadTimeout = -1 // only the answer may end the wait
	mux := http.NewServeMux()
	mux.Handle("/deny", g.Authorizer(g))
	mux.Handle("/", g)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	chunk := "1000\r\n" + strings.Repeat("z", 4096) + "\r\n"
	for _, tc := range []struct {
		name, send string
		code       int
	}{
		{"413-chunked", "POST /index.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat(chunk, 20), 413},
		{"431", "POST /index.php HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 70000) + "\r\nContent-Length: 1000\r\n\r\n", 431},
		{"414", "POST /index.php?" + strings.Repeat("q", 70000) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", 414},
		{"404", "POST /missing.php HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", 404},
		{"400", "POST /a%01.php HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", 400},
		{"static", "POST /style.css HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", 200},
		{"authorizer-denies", "POST /deny HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			go io.WriteString(nc, tc.send) // and then nothing more
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if !resp.Close {
				t.Error("the connection is kept, with the body unread")
			}
		})
	}
	// A request whose body was read keeps its connection.
	resp, err := srv.Client().Post(srv.URL+"/index.php", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Error("a request whose body was read closes its connection")
	}
	srv.Client().CloseIdleConnections()
}

// An application that hands a file over with X-Accel-Redirect but goes on
// sending a body nobody wants, slowly, is let go once its header is in: the
// file is served at once, not after the application's body has ended.
func TestGatewaySendfileDropsSlowBody(t *testing.T) {
	checkLeaks(t)
	private := t.TempDir()
	os.WriteFile(filepath.Join(private, "f.txt"), []byte("the file"), 0o644)
	ended := make(chan struct{}, 1)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			defer func() { ended <- struct{}{} }()
			r.Write("X-Accel-Redirect: /protected/f.txt\r\n\r\nunwanted")
			r.Dribble([]byte("x"))
		}
	})
	for _, mpx := range []fcgi.MultiplexMode{fcgi.MultiplexOff, fcgi.MultiplexOn} {
		g, _ := newGateway(t, app.Addr, docRoot(t))
		g.Client.Multiplex = mpx
		g.Sendfile = &fcgi.Sendfile{Locations: []fcgi.SendfileLocation{{Prefix: "/protected/", Dir: private}}}
		srv := httptest.NewServer(g)
		hc := &http.Client{Timeout: 5 * time.Second}
		resp, err := hc.Get(srv.URL + "/index.php")
		if err != nil {
			t.Fatalf("mpx %v: %v", mpx, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "the file" {
			t.Fatalf("mpx %v: %d %q", mpx, resp.StatusCode, body)
		}
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatalf("mpx %v: the application's request still runs", mpx)
		}
		hc.CloseIdleConnections()
		srv.Close()
		g.Client.Close()
	}
}

// Hostile backends behind a Gateway in an http.Server, one connection
// allowed, with and without multiplexing: each misbehaviour gets the
// answer it calls for, and afterwards the gateway holds nothing, the
// backend connection is idle or closed, and a fresh request is served.
func TestGatewayHostileBackends(t *testing.T) {
	checkLeaks(t)
	stdout := func(r *fakeReq, p string) {
		raw(r, func(w *wire.Writer) { w.WriteStream(wire.TypeStdout, r.ID, []byte(p)) })
	}
	hang := func(r *fakeReq) {
		select {
		case <-r.Aborted:
		case <-time.After(3 * time.Second):
		}
	}
	for _, tc := range []struct {
		name string
		run  func(r *fakeReq)
		code int
		body string
	}{
		{"end-before-stdout", func(r *fakeReq) { raw(r, func(w *wire.Writer) { w.WriteEndRequest(r.ID, 0, 0) }) }, 502, ""},
		{"stdout-after-end", func(r *fakeReq) {
			r.Write("\r\nok")
			r.End(0, 0)
			stdout(r, "Status: 500\r\n\r\npoison")
		}, 200, "ok"},
		{"huge-line", func(r *fakeReq) {
			line := strings.Repeat("y", 60000)
			stdout(r, "X: ")
			for range 170 { // 10 MB
				stdout(r, line)
			}
		}, 502, ""},
		{"many-fields", func(r *fakeReq) {
			var b strings.Builder
			for i := range 100000 {
				b.WriteString("X" + strconv.Itoa(i) + ": v\r\n")
				if b.Len() > 60000 {
					stdout(r, b.String())
					b.Reset()
				}
			}
			stdout(r, b.String()+"\r\n")
		}, 502, ""},
		{"status-malformed", func(r *fakeReq) { r.Write("Status: twohundred\r\n\r\nx") }, 502, ""},
		{"status-101", func(r *fakeReq) { r.Write("Status: 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n") }, 502, ""},
		{"interim-flood", func(r *fakeReq) {
			for range 20 {
				r.Write("Status: 103\r\nLink: </a.css>; rel=preload\r\n\r\n")
			}
			r.Write("\r\nlate")
		}, 502, ""},
		{"status-999", func(r *fakeReq) { r.Write("Status: 999 Odd\r\n\r\nodd") }, 999, "odd"},
		{"204-body", func(r *fakeReq) { r.Write("Status: 204\r\n\r\n" + strings.Repeat("b", 200000)) }, 204, ""},
		{"304-endless", func(r *fakeReq) {
			r.Write("Status: 304\r\n\r\n")
			for range 2000 {
				select {
				case <-r.Aborted:
					return
				default:
				}
				r.Write(strings.Repeat("b", 1000))
			}
		}, 304, ""},
		{"location-only", func(r *fakeReq) { r.Write("Location: /index.php\r\n\r\n") }, 302, ""},
		{"overloaded", func(r *fakeReq) { r.End(0, wire.StatusOverloaded) }, 503, ""},
		{"unknown-role", func(r *fakeReq) { r.End(0, wire.StatusUnknownRole) }, 502, ""},
		{"short-end", func(r *fakeReq) {
			raw(r, func(w *wire.Writer) {
				w.WriteStream(wire.TypeStdout, r.ID, []byte("\r\nbody"))
				w.WriteRecord(wire.TypeEndRequest, r.ID, []byte{1})
			})
			hang(r)
		}, 0, ""}, // the response is cut short: its connection closes
		{"close-mid-record", func(r *fakeReq) {
			r.Write("Content-Length: 100\r\n\r\nabc")
			r.conn.wmu.Lock()
			r.conn.nc.Write([]byte{1, byte(wire.TypeStdout), 0, byte(r.ID), 0, 50, 0, 0, 'x'})
			r.conn.nc.Close()
			r.conn.wmu.Unlock()
		}, 0, ""},
		{"management-mid-body", func(r *fakeReq) {
			r.Write("\r\nab")
			raw(r, func(w *wire.Writer) {
				w.WriteRecord(wire.TypeGetValuesResult, 0, wire.AppendPair(nil, "FCGI_MPXS_CONNS", "1"))
				w.WriteRecord(wire.TypeUnknownType, 0, make([]byte, 8))
			})
			r.Write("cd")
		}, 200, "abcd"},
		{"data-record", func(r *fakeReq) {
			r.Write("\r\nab")
			raw(r, func(w *wire.Writer) { w.WriteStream(wire.TypeData, r.ID, []byte("x")) })
			hang(r)
		}, 0, ""},
	} {
		forEachMultiplex(t, tc.name, func(t *testing.T, mpx fcgi.MultiplexMode) {
			app := startHostileApp(t, tc.run)
			g, _ := newGateway(t, app.Addr, docRoot(t))
			g.Client.MaxConnsPerBackend = 1
			g.Client.Multiplex = mpx
			g.Client.ReadTimeout = 2 * time.Second
			g.ErrorLog = quietLog
			srv := httptest.NewServer(g)
			defer srv.Close()
			hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			defer hc.CloseIdleConnections()
			resp, err := hc.Get(srv.URL + "/hostile")
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if tc.code == 0 {
				// Cut short once begun: an error, at once or mid-body.
				if err == nil {
					t.Fatalf("%d %q, want a response cut short", resp.StatusCode, body)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if resp.StatusCode != tc.code || (tc.body != "" || tc.code < 300) && string(body) != tc.body && tc.code != 502 {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, body, tc.code, tc.body)
			}
			if !eventuallyFor(5*time.Second, func() bool {
				open, idle := fcgi.PoolCounts(g.Client)
				return g.Stats().InFlight == 0 && open == idle
			}) {
				open, idle := fcgi.PoolCounts(g.Client)
				t.Fatalf("in flight %d, %d open %d idle", g.Stats().InFlight, open, idle)
			}
			for range 2 {
				resp, err = hc.Get(srv.URL + "/next")
				if err != nil {
					t.Fatal(err)
				}
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "hello" {
					t.Fatalf("next: %d %q", resp.StatusCode, body)
				}
			}
		})
	}
}

// An application that answers before it has read a large buffered body:
// the answer reaches the client, the body's writer ends, its temporary file
// is removed, and the next request is served over the one connection
// allowed.
func TestGatewayAnswerBeforeReadingBody(t *testing.T) {
	checkLeaks(t)
	var served atomic.Int64
	app := startFake(t, "unix", func(a *fakeApp) {
		a.RunOnParams = true
		a.Handler = func(r *fakeReq) {
			served.Add(1)
			r.Write("Status: 413\r\nContent-Type: text/plain\r\n\r\nno thanks")
		}
	})
	spool := t.TempDir()
	g, _ := newGateway(t, app.Addr, docRoot(t))
	g.Client.MaxConnsPerBackend = 1
	g.TempDir = spool
	g.MaxMemoryBytes = 64 << 10
	srv := httptest.NewServer(g)
	defer srv.Close()
	for _, n := range []int{64 << 10, 8 << 20} { // in memory, in a file
		resp, err := srv.Client().Post(srv.URL+"/index.php", "application/octet-stream", strings.NewReader(strings.Repeat("b", n)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || string(body) != "no thanks" {
			t.Fatalf("%d bytes: %d %q", n, resp.StatusCode, body)
		}
		if !eventuallyFor(5*time.Second, func() bool {
			open, idle := fcgi.PoolCounts(g.Client)
			return g.Stats().InFlight == 0 && fcgi.GatewayBodyMemory(g) == 0 && len(spooledFiles(t, spool)) == 0 && open == idle
		}) {
			open, idle := fcgi.PoolCounts(g.Client)
			t.Fatalf("%d bytes: in flight %d, memory %d, files %v, %d open %d idle", n, g.Stats().InFlight, fcgi.GatewayBodyMemory(g), spooledFiles(t, spool), open, idle)
		}
	}
	if served.Load() != 2 {
		t.Fatalf("%d requests reached the application, want 2", served.Load())
	}
	srv.Client().CloseIdleConnections()
}

// manyHeaders returns n distinct header lines of some 120 bytes each.
func manyHeaders(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("X-H" + strconv.Itoa(i) + ": " + strings.Repeat("v", 100) + "\r\n")
	}
	return b.String()
}

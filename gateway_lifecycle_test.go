package fcgi_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

// The life of a Gateway request, enumerated: an HTTP client and a hostile
// backend take a request to a stage, and it is ended there each way it
// can end. Meanwhile another request is served; afterwards the pool holds
// nothing, every open connection is idle, no body memory or temporary
// file is left, and a fresh request is served.

type gwStage struct {
	name    string
	backend string // the hostile backend's stage; "" for none
}

var gwStages = []gwStage{
	{name: "slow-upload"},                      // the body is still coming
	{name: "header-wait", backend: "header"},   // the application has not answered
	{name: "body-stall", backend: "body"},      // it stopped mid-response
	{name: "client-stalled", backend: "flood"}, // the client stopped reading
}

var gwEndings = []string{"client-fin", "client-rst", "backend-fin", "backend-rst", "backend-malformed", "timeout"}

func TestGatewayRequestEveryStageEveryEnding(t *testing.T) {
	// net/http lingers half a second on a connection it closes after an
	// error response (its RST avoidance); wait for it, not to see it as
	// a leak.
	t.Cleanup(func() {
		eventuallyFor(3*time.Second, func() bool {
			buf := make([]byte, 1<<20)
			return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "net/http.(*conn).closeWriteAndWait")
		})
	})
	for _, st := range gwStages {
		for _, end := range gwEndings {
			if strings.HasPrefix(end, "backend-") && (st.backend == "" || st.backend == "flood") {
				continue
			}
			t.Run(st.name+"/"+end, func(t *testing.T) {
				t.Parallel()
				testGatewayCell(t, st, end)
			})
		}
	}
}

func testGatewayCell(t *testing.T, st gwStage, end string) {
	stage := st.backend
	if stage == "" {
		stage = "none"
	}
	b := startHostile(t, stage)
	root := t.TempDir()
	for _, f := range []string{"hostile.php", "ok.php"} {
		os.WriteFile(filepath.Join(root, f), nil, 0o644)
	}
	spool := t.TempDir()
	c := &fcgi.Client{Addr: b.ln.Addr().String(), MaxConnsPerBackend: 2, ErrorLog: quietLog}
	if st.backend == "" {
		// One connection: the upload must not hold it.
		c.MaxConnsPerBackend = 1
	}
	g := &fcgi.Gateway{Client: c, Root: root, TempDir: spool, ErrorLog: quietLog}
	if end == "timeout" {
		const d = 300 * time.Millisecond
		switch st.name {
		case "slow-upload":
			g.BodyReadTimeout = d
		case "header-wait":
			c.ResponseHeaderTimeout = d
		case "body-stall":
			c.ReadTimeout = d
		case "client-stalled":
			g.SendTimeout = d
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: g, ErrorLog: nil}
	go hs.Serve(l)
	defer func() {
		hs.Close()
		c.Close()
	}()
	base := "http://" + l.Addr().String()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	getOK := func(when string) {
		t.Helper()
		resp, err := hc.Get(base + "/ok.php")
		if err != nil {
			t.Fatalf("request %s: %v", when, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "partial ok" {
			t.Fatalf("request %s: %d %q", when, resp.StatusCode, body)
		}
	}

	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	if st.backend == "" {
		fmt.Fprintf(nc, "POST /hostile.php HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n%s", strings.Repeat("u", 1000))
		waitForMsg(t, "the upload to be buffered", func() bool { return fcgi.GatewayBodyMemory(g) > 0 })
	} else {
		fmt.Fprintf(nc, "POST /hostile.php HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst rest")
		select {
		case <-b.reached:
		case <-time.After(10 * time.Second):
			t.Fatal("the backend did not reach the stage")
		}
		if st.backend != "header" {
			// The response has begun: take its header.
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
				t.Fatalf("response header: %v %v", resp, err)
			}
		}
	}
	getOK("while the hostile one is under way")

	var want int // the status the client is to get, 0 for none
	switch end {
	case "client-fin":
		nc.Close()
	case "client-rst":
		nc.(*net.TCPConn).SetLinger(0)
		nc.Close()
	case "backend-fin", "backend-rst", "backend-malformed":
		want = 502
	case "timeout":
		switch st.name {
		case "slow-upload":
			want = 408
		case "header-wait":
			want = 504
		}
	}
	if st.backend != "" {
		act := "stall"
		if strings.HasPrefix(end, "backend-") {
			act = strings.TrimPrefix(end, "backend-")
		}
		b.act <- act
	}
	if end == "timeout" || strings.HasPrefix(end, "backend-") {
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if st.backend == "" || st.backend == "header" {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer after %s: %v", end, err)
			}
			if want != 0 && resp.StatusCode != want {
				t.Fatalf("after %s: status %d, want %d", end, resp.StatusCode, want)
			}
			resp.Body.Close()
		} else if st.backend == "body" {
			// The response is cut: the client sees it end short.
			io.Copy(io.Discard, br)
		}
		// A client that stopped reading goes on not reading: the
		// Gateway must free the backend by itself.
		if st.backend != "flood" {
			nc.Close()
		}
	}

	settled := func() bool {
		inflight, waiters, conns, idle, mpx := fcgi.PoolState(c)
		return inflight == 0 && waiters == 0 && conns == idle+mpx && fcgi.GatewayBodyMemory(g) == 0 && len(spooledFiles(t, spool)) == 0
	}
	if !eventually(settled) {
		inflight, waiters, conns, idle, mpx := fcgi.PoolState(c)
		t.Fatalf("after %s: %d in flight, %d waiting, %d open, %d idle, %d multiplexed; %d body bytes in memory; files %v",
			end, inflight, waiters, conns, idle, mpx, fcgi.GatewayBodyMemory(g), spooledFiles(t, spool))
	}
	getOK("after the ending")
	hs.Close()
	c.Close()
	if !eventually(func() bool { _, _, conns, _, _ := fcgi.PoolState(c); return conns == 0 }) {
		t.Fatal("connections open after Close")
	}
}

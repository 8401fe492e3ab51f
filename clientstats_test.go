package fcgi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

// recObserver records what it is told, for the tests.
type recObserver struct {
	mu  sync.Mutex
	got []fcgi.RequestDoneInfo
}

func (o *recObserver) RequestDone(ri fcgi.RequestDoneInfo) {
	o.mu.Lock()
	o.got = append(o.got, ri)
	o.mu.Unlock()
}

func (o *recObserver) all() []fcgi.RequestDoneInfo {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]fcgi.RequestDoneInfo(nil), o.got...)
}

func stats1(c *fcgi.Client) fcgi.BackendStats { return c.Stats()[0] }

// errorCounts are the error counters of st, for comparing them whole.
func errorCounts(st fcgi.BackendStats) [5]int64 {
	return [5]int64{st.Overloaded, st.DialErrors, st.ResetErrors, st.Timeouts, st.ProtocolErrors}
}

// Requests over MaxConnsPerBackend wait in line: Waiting counts them while
// they do and is 0 again once they are served; WaitCount and WaitDuration
// record the waits, and each waiting request's Observer Wait is as long as
// the connection was held.
func TestClientStatsQueue(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			<-release
			r.Write("Content-Type: text/plain\r\n\r\nok")
		}
	})
	var obs recObserver
	c := newClient(app.Addr)
	c.MaxConnsPerBackend = 1
	c.Observer = &obs
	defer c.Close()
	const n = 3
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, body := doString(t, c, get("/")); body != "ok" {
				t.Errorf("body %q", body)
			}
		})
	}
	if !eventually(func() bool { st := stats1(c); return st.Waiting == n-1 && st.InFlight == n }) {
		t.Fatalf("stats while queued: %+v, want Waiting %d, InFlight %d", stats1(c), n-1, n)
	}
	st := stats1(c)
	if st.OpenConnections != 1 || st.Idle != 0 || st.WaitCount != n-1 {
		t.Errorf("stats while queued: %+v, want 1 connection open, none idle, WaitCount %d", st, n-1)
	}
	const hold = 100 * time.Millisecond
	time.Sleep(hold)
	close(release)
	wg.Wait()
	st = stats1(c)
	if st.Waiting != 0 || st.InFlight != 0 || st.OpenConnections != 1 || st.Idle != 1 {
		t.Errorf("stats after: %+v, want nothing waiting or in flight, 1 connection open and idle", st)
	}
	if st.Requests != n || st.WaitCount != n-1 || st.WaitDuration < 2*hold {
		t.Errorf("stats after: %+v, want Requests %d, WaitCount %d, WaitDuration >= %v", st, n, n-1, 2*hold)
	}
	if errorCounts(st) != [5]int64{} || st.Retries != 0 {
		t.Errorf("stats after: %+v, want no error nor retry", st)
	}
	got := obs.all()
	if len(got) != n {
		t.Fatalf("observer called %d times, want %d", len(got), n)
	}
	waited := 0
	for _, ri := range got {
		if ri.Outcome != fcgi.OutcomeOK || ri.Err != nil || ri.Status != 200 || ri.Backend != app.Addr {
			t.Errorf("observed %+v, want ok 200 from %s", ri, app.Addr)
		}
		if ri.Wait >= hold {
			waited++
		}
		if ri.Wait > ri.FirstByte || ri.FirstByte > ri.Total || ri.Total < hold {
			t.Errorf("observed durations %+v: want Wait <= FirstByte <= Total, Total >= %v", ri, hold)
		}
	}
	if waited != n-1 {
		t.Errorf("%d requests observed waiting >= %v, want %d", waited, hold, n-1)
	}
}

// Each cause of failure is counted once, under its own counter, and
// reported to the Observer with its Outcome.
func TestClientStatsErrors(t *testing.T) {
	checkLeaks(t)
	type counts = [5]int64 // Overloaded, DialErrors, ResetErrors, Timeouts, ProtocolErrors
	for _, tc := range []struct {
		name    string
		app     func(a *fakeApp) // nil: no backend at all
		client  func(c *fcgi.Client)
		want    counts
		outcome fcgi.Outcome
	}{
		{"dial", nil, nil, counts{0, 1, 0, 0, 0}, fcgi.OutcomeDialError},
		{"reset", func(a *fakeApp) { a.DropRequestN = 1 }, nil, counts{0, 0, 1, 0, 0}, fcgi.OutcomeReset},
		{"timeout", func(a *fakeApp) {
			a.Handler = func(r *fakeReq) { time.Sleep(300 * time.Millisecond) }
		}, func(c *fcgi.Client) { c.ResponseHeaderTimeout = 50 * time.Millisecond }, counts{0, 0, 0, 1, 0}, fcgi.OutcomeTimeout},
		{"protocol", func(a *fakeApp) {
			a.Handler = func(r *fakeReq) { r.Write("no header here\r\n\r\n") }
		}, nil, counts{0, 0, 0, 0, 1}, fcgi.OutcomeProtocolError},
		{"overloaded", func(a *fakeApp) {
			a.Handler = func(r *fakeReq) { r.End(0, wire.StatusOverloaded) }
		}, nil, counts{1, 0, 0, 0, 0}, fcgi.OutcomeOverloaded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := "unix:" + filepath.Join(t.TempDir(), "none")
			if tc.app != nil {
				addr = startFake(t, "unix", tc.app).Addr
			}
			var obs recObserver
			c := newClient(addr)
			c.Observer = &obs
			if tc.client != nil {
				tc.client(c)
			}
			defer c.Close()
			_, err := c.Do(context.Background(), get("/"))
			if err == nil {
				t.Fatal("Do succeeded")
			}
			st := stats1(c)
			if errorCounts(st) != tc.want || st.Requests != 1 || st.Retries != 0 || st.InFlight != 0 {
				t.Errorf("stats %+v, want errors %v (Overloaded, DialErrors, ResetErrors, Timeouts, ProtocolErrors), 1 request, no retry", st, tc.want)
			}
			got := obs.all()
			if len(got) != 1 || got[0].Outcome != tc.outcome || !errors.Is(got[0].Err, err) || got[0].FirstByte != 0 || got[0].Status != 0 || got[0].Total <= 0 {
				t.Errorf("observed %+v, want one %v for %v with no first byte", got, tc.outcome, err)
			}
		})
	}
}

// A backend whose dial fails is set aside, the request retried on the
// other, and it is back in rotation after BackendCooldown.
func TestClientStatsSetAside(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", nil)
	dead := "unix:" + filepath.Join(t.TempDir(), "none")
	var obs recObserver
	c := &fcgi.Client{Backends: []string{dead, app.Addr}, BackendCooldown: 300 * time.Millisecond, ErrorLog: quietLog, Observer: &obs}
	defer c.Close()
	for i := 0; i < 2; i++ {
		if _, body := doString(t, c, get("/")); body != "hello" {
			t.Fatalf("body %q", body)
		}
	}
	st := c.Stats()
	if st[0].Addr != dead || st[1].Addr != app.Addr {
		t.Fatalf("stats of %s and %s, want %s and %s", st[0].Addr, st[1].Addr, dead, app.Addr)
	}
	if !st[0].SetAside || st[0].DialErrors != 1 || st[0].Retries != 1 || st[0].Requests != 1 {
		t.Errorf("dead backend %+v, want set aside after 1 request, 1 dial error, 1 retry", st[0])
	}
	if st[1].SetAside || st[1].Requests != 2 || errorCounts(st[1]) != [5]int64{} {
		t.Errorf("live backend %+v, want 2 requests, no error", st[1])
	}
	got := obs.all()
	retried := 0
	for _, ri := range got {
		if ri.Retried {
			retried++
		}
		if ri.Backend != app.Addr || ri.Outcome != fcgi.OutcomeOK {
			t.Errorf("observed %+v, want ok from %s", ri, app.Addr)
		}
	}
	if len(got) != 2 || retried != 1 {
		t.Errorf("observed %+v, want 2 requests, 1 retried", got)
	}
	if !eventuallyFor(3*time.Second, func() bool { return !c.Stats()[0].SetAside }) {
		t.Errorf("dead backend still set aside after its cooldown: %+v", c.Stats()[0])
	}
}

// A kept connection dropped by a recycled worker before answering costs a
// reset and a retry, and the request succeeds.
func TestClientStatsRetry(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) { a.DropRequestN = 2; a.DropOnce = true })
	var obs recObserver
	c := newClient(app.Addr)
	c.Observer = &obs
	defer c.Close()
	for i := 0; i < 2; i++ {
		if _, body := doString(t, c, get("/")); body != "hello" {
			t.Fatalf("body %q", body)
		}
	}
	st := stats1(c)
	if st.Retries != 1 || st.ResetErrors != 1 || st.Requests != 3 || errorCounts(st) != [5]int64{0, 0, 1, 0, 0} {
		t.Errorf("stats %+v, want 3 requests sent, 1 reset, 1 retry", st)
	}
	got := obs.all()
	if len(got) != 2 || got[0].Retried || !got[1].Retried || got[1].Outcome != fcgi.OutcomeOK {
		t.Errorf("observed %+v, want the second retried, both ok", got)
	}
}

// Against PHP-FPM recycling its workers (pm.max_requests), every request
// succeeds, and the retries the recycling costs are counted consistently:
// as many as requests the Observer saw retried, each after a reset.
func TestClientStatsPHPFPMRecycling(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2, MaxRequests: 5})
	var obs recObserver
	c := newClient(fpm.Addr())
	c.MaxConnsPerBackend = 2
	c.Observer = &obs
	defer c.Close()
	const total = 200
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < total; i += 4 {
				uri := "/r/" + strconv.Itoa(i)
				if _, body := doString(t, c, fpmRequest(fpm, "GET", uri, nil, "")); body != "front "+uri {
					t.Errorf("body %q", body)
				}
			}
		})
	}
	wg.Wait()
	st := stats1(c)
	retried := 0
	got := obs.all()
	for _, ri := range got {
		if ri.Retried {
			retried++
		}
		if ri.Outcome != fcgi.OutcomeOK {
			t.Errorf("observed %+v", ri)
		}
	}
	t.Logf("stats %+v", st)
	if len(got) != total || st.Retries != int64(retried) || st.Requests != total+st.Retries ||
		st.ResetErrors != st.Retries || st.InFlight != 0 || st.Waiting != 0 || st.WaitCount == 0 {
		t.Errorf("stats %+v with %d observed (%d retried), want Requests = %d + Retries, Retries = resets = retried observed, some waits", st, len(got), retried, total)
	}
}

// The Observer hears of every request once: a response read to its end, a
// failure of Do, a caller that gives up while reading, and a Body closed
// early, each with durations in order.
func TestClientObserver(t *testing.T) {
	checkLeaks(t)
	// The rest of /slow's body is sent once the caller has had the header
	// for 100ms, so that the gap holds however late the first byte is read.
	release := make(chan struct{})
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			r.Write("Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nfirst")
			if r.Params["REQUEST_URI"] == "/slow" {
				<-release
				r.Write("more")
			} else if r.Params["REQUEST_URI"] == "/stuck" {
				select {
				case <-r.Aborted:
				case <-time.After(time.Second):
				}
			}
		}
	})
	var obs recObserver
	c := newClient(app.Addr)
	c.Observer = &obs
	defer c.Close()

	resp, err := c.Do(context.Background(), get("/slow"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if body := string(b); err != nil || resp.StatusCode != 201 || body != "firstmore" {
		t.Fatalf("%d %q %v", resp.StatusCode, body, err)
	}
	got := obs.all()
	if len(got) != 1 {
		t.Fatalf("observed %d times, want 1", len(got))
	}
	ri := got[0]
	if ri.Outcome != fcgi.OutcomeOK || ri.Err != nil || ri.Status != 201 || ri.Retried || ri.Backend != app.Addr {
		t.Errorf("observed %+v, want ok 201", ri)
	}
	if ri.FirstByte <= 0 || ri.Total-ri.FirstByte < 100*time.Millisecond || ri.Total > 5*time.Second {
		t.Errorf("observed FirstByte %v, Total %v: want the body's 100ms between them", ri.FirstByte, ri.Total)
	}

	// Given up on while reading the body.
	ctx, cancel := context.WithCancel(context.Background())
	resp, err = c.Do(ctx, get("/stuck"))
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Fatalf("reading: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	// Closed early.
	resp, err = c.Do(context.Background(), get("/stuck"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Do itself failing: the application's connection dropped.
	c2 := newClient("unix:" + filepath.Join(t.TempDir(), "none"))
	c2.Observer = &obs
	defer c2.Close()
	if _, err := c2.Do(context.Background(), get("/")); err == nil {
		t.Fatal("Do succeeded without a backend")
	}

	got = obs.all()
	if len(got) != 4 {
		t.Fatalf("observed %d times, want 4: %+v", len(got), got)
	}
	for i, want := range []fcgi.Outcome{fcgi.OutcomeOK, fcgi.OutcomeAborted, fcgi.OutcomeAborted, fcgi.OutcomeDialError} {
		ri := got[i]
		if ri.Outcome != want || (want != fcgi.OutcomeOK) != (ri.Err != nil) || ri.FirstByte > ri.Total || ri.Wait > ri.Total {
			t.Errorf("observation %d: %+v, want %v with durations in order", i, ri, want)
		}
	}
	if got[1].Total < 50*time.Millisecond || got[1].Status != 201 || got[3].FirstByte != 0 {
		t.Errorf("observed %+v", got)
	}
	if st := stats1(c); errorCounts(st) != [5]int64{} || st.InFlight != 0 {
		t.Errorf("stats %+v: an abandoned request is not a backend error", st)
	}
}

// The Gateway counts each request, and the answers it gives itself by
// kind.
func TestGatewayStats(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", nil)
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "index.php"), []byte("<?php"), 0o644)
	os.WriteFile(filepath.Join(root, "a.txt"), []byte("static"), 0o644)
	g, _ := newGateway(t, app.Addr, root)
	g.FrontController = ""
	g.ServeStatic = true
	g.MaxBodyBytes = 10
	g.MaxParamPairBytes = 100
	for _, tc := range []struct {
		target string
		body   string
		header string
		code   int
	}{
		{"/index.php", "", "", 200},
		{"/a.txt", "", "", 200},
		{"/missing", "", "", 404},
		{"/index.php", strings.Repeat("x", 11), "", 413},
		{"/index.php", "", strings.Repeat("y", 200), 431},
		{"/a%01b", "", "", 400},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		req, _ := http.NewRequest("POST", "http://x"+tc.target, body)
		if tc.header != "" {
			req.Header.Set("X-Big", tc.header)
		}
		w := &statusRecorder{header: http.Header{}}
		g.ServeHTTP(w, req)
		if w.code != tc.code {
			t.Errorf("%s: %d, want %d", tc.target, w.code, tc.code)
		}
	}
	g.Client.Close()
	g.Client = newClient("unix:" + filepath.Join(t.TempDir(), "none"))
	defer g.Client.Close()
	if w := serveGW(g, "GET", "/index.php", nil); w.Code != 502 && w.Code != 503 {
		t.Errorf("backend gone: %d, want 502 or 503", w.Code)
	}
	want := fcgi.GatewayStats{Requests: 7, StaticFiles: 1, NotFound: 1, BadRequests: 1, BodyTooLarge: 1, HeaderTooLarge: 1, BackendErrors: 1}
	if got := g.Stats(); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

// statusRecorder is a minimal ResponseWriter keeping the status.
type statusRecorder struct {
	header http.Header
	code   int
}

func (w *statusRecorder) Header() http.Header { return w.header }
func (w *statusRecorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *statusRecorder) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	return len(p), nil
}

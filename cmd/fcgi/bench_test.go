package main

import (
	"encoding/json"
	"github.com/fcgikit/fcgi"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

func benchJSON(t *testing.T, args ...string) (benchResult, int) {
	t.Helper()
	res := runFcgi(t, nil, append([]string{"bench", "--json"}, args...)...)
	var r benchResult
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("bench --json output: %v", err)
	}
	return r, res.code
}

// TestBenchCount: -n N sends exactly N requests, in each mode, and the
// application sees each one; the report adds up.
func TestBenchCount(t *testing.T) {
	var served atomic.Int64
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	for _, mode := range [][]string{{}, {"--mpx", "8"}, {"--no-keep-conn"}} {
		t.Run(strings.Join(mode, ""), func(t *testing.T) {
			served.Store(0)
			r, code := benchJSON(t, append([]string{addr, "-c", "3", "-n", "500"}, mode...)...)
			if code != 0 || r.Requests != 500 || r.OK != 500 || r.Errors != 0 || r.Statuses["200"] != 500 {
				t.Errorf("exit %d, result %+v", code, r)
			}
			if n := served.Load(); n != 500 {
				t.Errorf("application served %d requests, want 500", n)
			}
			// STDOUT is CGI headers plus the 3-byte body, the same for
			// every request.
			if r.Bytes%500 != 0 || r.Bytes/500 < int64(3+len("\r\n\r\n")) {
				t.Errorf("stdout bytes %d: not 500 equal responses", r.Bytes)
			}
			var inHist uint64
			for _, b := range r.Histogram {
				inHist += b.Count
			}
			if inHist != 500 || r.Latency["p50"] > r.Latency["p99"] || r.Latency["p99"] > r.Latency["max"] {
				t.Errorf("histogram holds %d; latency %v", inHist, r.Latency)
			}
		})
	}
	r, _ := benchJSON(t, addr, "-n", "20", "--path", "/missing")
	if r.Statuses["404"] != 20 {
		t.Errorf("statuses %v, want 20 × 404", r.Statuses)
	}
}

// TestBenchDurationRate: --duration with --rate stops on time with about
// rate×duration requests.
func TestBenchDurationRate(t *testing.T) {
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	start := time.Now()
	r, code := benchJSON(t, addr, "-c", "2", "--duration", "1s", "--rate", "100")
	el := time.Since(start)
	if code != 0 || r.OK < 90 || r.OK > 101 {
		t.Errorf("exit %d, %d requests in 1s at 100/s", code, r.OK)
	}
	if el > 5*time.Second {
		t.Errorf("took %v for --duration 1s", el)
	}
}

// TestBenchRateNotReached: when the application cannot keep up with
// --rate, the run still ends at --duration, rather than send the backlog
// of requests scheduled before it, and the report says the rate was not
// reached.
func TestBenchRateNotReached(t *testing.T) {
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond)
	}))
	r, code := benchJSON(t, addr, "-c", "1", "--duration", "1s", "--rate", "100", "--timeout", "30s")
	// One connection serves 10 requests a second at most; the other 90
	// of the second's 100 were never sent.
	if code != 0 || r.Seconds > 5 || r.OK > 30 {
		t.Errorf("exit %d, %d requests in %.1f s; want 0 and about 10 in about 1 s", code, r.OK, r.Seconds)
	}
	if r.Unsent < 50 {
		t.Errorf("unsent %d, want the about 90 scheduled requests never sent", r.Unsent)
	}
	res := runFcgi(t, nil, "bench", addr, "-c", "1", "--duration", "1s", "--rate", "100", "--timeout", "30s")
	if !strings.Contains(res.stdout, "--rate 100 not reached") {
		t.Errorf("the report does not say the rate was not reached:\n%s", res.stdout)
	}
}

// TestBenchNoDashD: -d is a request body, as in curl and fcgi call, not
// a duration as in wrk; bench has no -d, so wrk's "-d 10s" is a usage
// error rather than a run of another length.
func TestBenchNoDashD(t *testing.T) {
	res := runFcgi(t, nil, "bench", "-d", "1s", "unix:/nonexistent/sock")
	if res.code != exitUsage || !strings.Contains(res.stderr, "-d") {
		t.Errorf("bench -d 1s: exit %d, stderr %q; want exit %d naming -d", res.code, res.stderr, exitUsage)
	}
}

// TestBenchErrors: a dead application is exit 3; the report still comes.
func TestBenchUnreachable(t *testing.T) {
	res := runFcgi(t, nil, "bench", "-n", "1", "unix:/nonexistent/sock")
	if res.code != exitUnreachable {
		t.Errorf("exit %d, want 3", res.code)
	}
}

func TestBenchPHPFPM(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	r, code := benchJSON(t, fpm.Addr(), "-c", "2", "-n", "200", "--path", "/ping")
	if code != 0 || r.OK != 200 || r.Statuses["200"] != 200 || r.Starved != 0 {
		t.Errorf("exit %d, result %+v; want 200 OK and no starved connection", code, r)
	}
	// One connection more than pm.max_children: PHP-FPM takes it only
	// once another closes, at the end. Its request waited the whole run
	// in the listen queue, which the report says rather than hide it
	// in the maximum latency.
	res := runFcgi(t, nil, "bench", fpm.Addr(), "-c", "3", "-n", "300", "--path", "/ping")
	if res.code != 0 || !strings.Contains(res.stdout, "1 of 3 connections") || !strings.Contains(res.stdout, "pm.max_children") {
		t.Errorf("-c 3 against 2 workers: exit %d; want 0 and a warning on the starved connection naming pm.max_children", res.code)
	}
	r, _ = benchJSON(t, fpm.Addr(), "-c", "3", "-n", "300", "--path", "/ping")
	if r.Starved != 1 {
		t.Errorf("starved_connections %d, want 1", r.Starved)
	}
}

// TestBenchBackendGone: when the application goes away during a run (a
// PHP-FPM restart), the connections wait between attempts to reconnect
// rather than spin: the failures counted are a handful per connection,
// not as many as the machine can dial, and the run still ends on time.
func TestBenchBackendGone(t *testing.T) {
	// With a count and the application gone for good, each connection
	// gives up once its dials have failed for --timeout.
	for _, mode := range [][]string{{"--duration", "2s"}, {"--duration", "2s", "--mpx", "4"}, {"-n", "1000000", "--timeout", "2s"}} {
		t.Run(strings.Join(mode, ""), func(t *testing.T) {
			srv := &fcgi.Server{}
			var served atomic.Int64
			srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if served.Add(1) == 50 {
					go srv.Close() // the socket file goes with the listener
				}
				pingHandler.ServeHTTP(w, r)
			})
			addr := startFcgiServer(t, srv, filepath.Join(t.TempDir(), "app.sock"))
			r, code := benchJSON(t, append([]string{addr, "-c", "4"}, mode...)...)
			// Closing, the server refuses with FCGI_OVERLOADED a request
			// that reaches a multiplexed connection meanwhile, which bench
			// reports as a refusal (exit 4), as documented.
			refused := code == exitProtocol && r.ErrorKinds["OVERLOADED"] > 0
			if code != exitFail && !refused || r.ErrorKinds["connect"] == 0 {
				t.Fatalf("exit %d, errors %v; want 1 and connect errors", code, r.ErrorKinds)
			}
			if n := r.ErrorKinds["connect"]; n > 200 {
				t.Errorf("%d connect errors from 4 connections in %.1f s: they spin", n, r.Seconds)
			}
			if r.Seconds > 20 {
				t.Errorf("the run took %.1f s, want about 2", r.Seconds)
			}
		})
	}
}

package fcgi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// nginxInFront serves srv on a unix socket and starts nginx in front of it
// with fastcgi_keep_conn on. It returns nginx and a channel with Serve's
// result.
func nginxInFront(t *testing.T, srv *fcgi.Server) (*peer.Nginx, <-chan error) {
	t.Helper()
	peer.Require(t, "nginx", "nginx")
	sock := filepath.Join(peer.TempDir(t), "app.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o666)
	if srv.ErrorLog == nil {
		srv.ErrorLog = quietLog
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	ngx := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + sock, Keepalive: 16, Workers: 1})
	return ngx, served
}

func loadClient(conns int) *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true},
	}
}

// Shutdown through real nginx under load: every request whose handler
// started is answered completely; afterwards the server is gone and
// nothing of it is left running.
func TestNginxShutdownUnderLoad(t *testing.T) {
	var started, finished atomic.Int64
	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		time.Sleep(time.Duration(5+started.Load()%20) * time.Millisecond)
		io.WriteString(w, "done "+r.URL.Query().Get("n"))
		finished.Add(1)
	})}
	ngx, served := nginxInFront(t, srv)
	client := loadClient(8)
	defer client.CloseIdleConnections()

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := fmt.Sprintf("%d-%d", g, i)
				resp, err := client.Get(ngx.URL() + "/?n=" + n)
				if err != nil {
					t.Errorf("GET: %v", err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err == nil && resp.StatusCode == 200 && string(body) == "done "+n:
					ok.Add(1)
				case resp.StatusCode == http.StatusBadGateway:
					// After shutdown nginx finds no server: expected.
					failed.Add(1)
				default:
					t.Errorf("request %s: %d %q %v", n, resp.StatusCode, body, err)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, fcgi.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	// Let the clients see the server gone, then stop them.
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d answered, %d refused after shutdown; handlers started %d, finished %d", ok.Load(), failed.Load(), started.Load(), finished.Load())
	if started.Load() != finished.Load() {
		t.Fatalf("%d handlers started but %d finished", started.Load(), finished.Load())
	}
	if ok.Load() != finished.Load() {
		t.Fatalf("%d handlers finished but clients got %d answers: accepted requests were lost", finished.Load(), ok.Load())
	}
	if ok.Load() < 100 || failed.Load() == 0 {
		t.Fatalf("test did not exercise both sides of shutdown: ok=%d refused=%d", ok.Load(), failed.Load())
	}
	if st := srv.Stats(); st.Conns != 0 || st.InFlight != 0 {
		t.Fatalf("after Shutdown: %+v", st)
	}
	// nginx's log may show a reset, a broken pipe or "upstream
	// prematurely closed connection": a request it sent on an idle kept
	// connection just as Shutdown closed it. Such a request was never
	// read, so never accepted; nginx retries it, finds the listener
	// closed, and answers 502 (counted as refused above). That nothing
	// accepted was lost is what the counts above check.
}

// A soak through nginx with keep-alive: many requests, some of whose
// clients give up mid-request. No 5xx but the ones the test causes, every
// abandoned handler sees its context cancelled, and goroutines and heap
// return to where they were.
func TestNginxSoak(t *testing.T) {
	total := 200000
	if v, err := strconv.Atoi(os.Getenv("FCGI_SOAK_REQUESTS")); err == nil && v > 0 {
		total = v
	} else if testing.Short() {
		t.Skip("soak skipped in -short mode")
	}
	var cancelled, slowStarted atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, r.URL.RawQuery)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		slowStarted.Add(1)
		select {
		case <-r.Context().Done():
			cancelled.Add(1)
		case <-time.After(10 * time.Second):
			io.WriteString(w, "too late")
		}
	})
	srv := &fcgi.Server{Handler: mux}
	ngx, _ := nginxInFront(t, srv)
	const workers = 16
	client := loadClient(workers)
	defer client.CloseIdleConnections()

	// Warm up, then take the baseline.
	for i := range 200 {
		resp, err := client.Get(fmt.Sprintf("%s/fast?%d", ngx.URL(), i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	client.CloseIdleConnections()
	// Each connection nginx keeps open is one goroutine here: count
	// goroutines beside them.
	goroutines := func() int { return runtime.NumGoroutine() - int(srv.Stats().Conns) }
	baseG := goroutines()
	baseHeap := heapInUse()

	var next, fast, aborted atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(total) {
					return
				}
				if i%500 == 0 {
					// A client that gives up mid-request.
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
					req, _ := http.NewRequestWithContext(ctx, "GET", ngx.URL()+"/slow", nil)
					resp, err := client.Do(req)
					cancel()
					if err == nil {
						resp.Body.Close()
						t.Errorf("slow request answered %d", resp.StatusCode)
						return
					}
					aborted.Add(1)
					continue
				}
				q := strconv.FormatInt(i, 10)
				resp, err := client.Get(ngx.URL() + "/fast?" + q)
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != q {
					t.Errorf("request %d: %d %q", i, resp.StatusCode, body)
					return
				}
				fast.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if t.Failed() {
		return
	}
	// Every abandoned handler learns of it (nginx closes its upstream
	// connection when the client goes).
	waitFor(t, func() bool { return cancelled.Load() == slowStarted.Load() && srv.Stats().InFlight == 0 })
	client.CloseIdleConnections()
	var g int
	deadline := time.Now().Add(10 * time.Second)
	for {
		g = goroutines()
		if g <= baseG+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	heap := heapInUse()
	t.Logf("%d requests (%d fast, %d abandoned, %d slow handlers cancelled) in %v: %.0f req/s; goroutines %d -> %d; heap %d -> %d KiB; stats %+v",
		total, fast.Load(), aborted.Load(), cancelled.Load(), elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(),
		baseG, g, baseHeap>>10, heap>>10, srv.Stats())
	if g > baseG+2 {
		t.Errorf("goroutines: %d before, %d after", baseG, g)
	}
	if heap > baseHeap+16<<20 {
		t.Errorf("heap: %d KiB before, %d KiB after", baseHeap>>10, heap>>10)
	}
	if n := strings.Count(ngx.ErrorLog(), "reset by peer"); n > 0 {
		t.Errorf("nginx logged %d connection resets", n)
	}
}

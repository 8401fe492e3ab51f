// Sidebyside compares fcgikit's FastCGI server with net/http/fcgi's, and
// both with nginx proxying plain HTTP to net/http, in one run on one
// machine. Figures from different runs or machines are not comparable;
// the ratios printed here are meant to be.
//
// Every server answers "/.../hello" with "hello world\n" (12 bytes) and
// "/.../64k" with a 64 KiB body, from the same handler.
//
// Part "direct" drives the two FastCGI servers over unix sockets with an
// in-process client that behaves like nginx with fastcgi_keep_conn: N
// kept connections, one request in flight on each, request ID 1 reused,
// pre-encoded requests.
//
// Part "nginx" starts nginx (as root, in the foreground, everything in a
// temporary directory) with kept upstream connections to each FastCGI
// server and to the net/http server (proxy_pass over HTTP/1.1), all over
// unix sockets, and drives it over loopback with wrk.
//
// Usage:
//
//	sidebyside [-duration 2s] [-rounds 3] [-conns 8] [-parts direct,nginx]
//
// It prints a Markdown table per part. All traffic stays on loopback and
// unix sockets; nginx and wrk are stopped before it exits.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	stdfcgi "net/http/fcgi"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/benchmarks/internal/benchutil"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

func main() {
	duration := flag.Duration("duration", 2*time.Second, "length of each measurement")
	rounds := flag.Int("rounds", 3, "measurements per server and response size, interleaved between servers; medians are reported")
	conns := flag.Int("conns", 8, "concurrent connections: kept FastCGI connections for part direct, wrk connections for part nginx")
	parts := flag.String("parts", "direct,nginx", "comma-separated parts to run: direct, nginx")
	workers := flag.Int("nginx-workers", 1, "nginx worker_processes")
	wrkThreads := flag.Int("wrk-threads", 2, "wrk threads")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("sidebyside: ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *duration, *rounds, *conns, *parts, *workers, *wrkThreads); err != nil {
		log.Print(err)
		stop()
		os.Exit(1)
	}
}

var (
	helloBody = []byte("hello world\n")
	bigBody   = bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
)

// handler is every server's handler.
var handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/64k") {
		w.Write(bigBody)
		return
	}
	w.Write(helloBody)
})

// sizes are the two responses, by path suffix and name.
var sizes = []struct{ path, name string }{
	{"hello", "12 B"},
	{"64k", "64 KiB"},
}

// servers holds the three servers under test and their unix sockets.
type servers struct {
	dir                    string
	fcgikit, stdlib, plain string // socket paths
	closers                []func()
}

func startServers(dir string) (*servers, error) {
	s := &servers{
		dir:     dir,
		fcgikit: filepath.Join(dir, "fcgikit.sock"),
		stdlib:  filepath.Join(dir, "stdlib.sock"),
		plain:   filepath.Join(dir, "http.sock"),
	}
	listen := func(path string) (net.Listener, error) { return net.Listen("unix", path) }

	l, err := listen(s.fcgikit)
	if err != nil {
		return nil, err
	}
	srv := &fcgi.Server{Handler: handler}
	go srv.Serve(l)
	s.closers = append(s.closers, func() { srv.Close() })

	l, err = listen(s.stdlib)
	if err != nil {
		s.close()
		return nil, err
	}
	go stdfcgi.Serve(l, handler)
	s.closers = append(s.closers, func() { l.Close() })

	l, err = listen(s.plain)
	if err != nil {
		s.close()
		return nil, err
	}
	hs := &http.Server{Handler: handler}
	go hs.Serve(l)
	s.closers = append(s.closers, func() { hs.Close() })
	return s, nil
}

func (s *servers) close() {
	for _, c := range s.closers {
		c()
	}
}

func run(ctx context.Context, d time.Duration, rounds, conns int, parts string, workers, wrkThreads int) error {
	want := map[string]bool{}
	for _, p := range strings.Split(parts, ",") {
		switch p = strings.TrimSpace(p); p {
		case "direct", "nginx":
			want[p] = true
		default:
			return fmt.Errorf("unknown part %q (want direct, nginx)", p)
		}
	}
	dir, err := os.MkdirTemp("", "sidebyside-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := startServers(dir)
	if err != nil {
		return err
	}
	defer s.close()

	fmt.Printf("# fcgikit side by side\n\n%s, GOMAXPROCS %d, %d CPUs; %d interleaved rounds of %v per server and size, %d connections.\n"+
		"Figures are medians over the rounds; ratios are medians of the per-round ratios.\n\n",
		time.Now().UTC().Format(time.DateTime), runtime.GOMAXPROCS(0), runtime.NumCPU(), rounds, d, conns)
	if want["direct"] {
		if err := direct(ctx, s, d, rounds, conns); err != nil {
			return err
		}
	}
	if want["nginx"] {
		if err := viaNginx(ctx, s, dir, d, rounds, conns, workers, wrkThreads); err != nil {
			return err
		}
	}
	return nil
}

// direct is part (a).
func direct(ctx context.Context, s *servers, d time.Duration, rounds, conns int) error {
	fmt.Printf("## Direct: in-process FastCGI client, %d kept connections, request ID 1\n\n", conns)
	fmt.Println("| response | fcgikit req/s | net/http/fcgi req/s | fcgikit / stdlib |")
	fmt.Println("|---|---:|---:|---:|")
	for _, size := range sizes {
		req := fcgitest.NginxGet("/" + size.path)
		socks := []string{s.fcgikit, s.stdlib}
		for _, sock := range socks { // warm up
			if _, err := load(ctx, sock, req, conns, d/4); err != nil {
				return err
			}
		}
		rates, err := benchutil.Interleave(len(socks), rounds, func(i int) (float64, error) {
			return load(ctx, socks[i], req, conns, d)
		})
		if err != nil {
			return err
		}
		fmt.Printf("| %s | %.0f | %.0f | %.2f× |\n", size.name, benchutil.Median(rates[0]), benchutil.Median(rates[1]), benchutil.MedianRatio(rates[0], rates[1]))
	}
	fmt.Println()
	return nil
}

// load keeps conns connections to the FastCGI server at sock busy with req
// for d and returns the completed requests per second.
func load(ctx context.Context, sock string, req []byte, conns int, d time.Duration) (float64, error) {
	// Each connection finishes its request in flight when d is up, so the
	// server never sees a connection closed mid-request; an interrupt
	// (ctx) closes the connections at once.
	var stopping atomic.Bool
	timer := time.AfterFunc(d, func() { stopping.Store(true) })
	defer timer.Stop()
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := time.Now()
	for range conns {
		nc, err := net.Dial("unix", sock)
		if err != nil {
			return 0, err
		}
		stop := context.AfterFunc(ctx, func() { nc.Close() })
		defer stop()
		wg.Go(func() {
			defer nc.Close()
			rd := wire.NewReader(nc)
			defer rd.Release()
			for !stopping.Load() {
				if err := roundTrip(nc, rd, req); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := ctx.Err(); err != nil {
		return 0, err // interrupted
	}
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("%s: %w", sock, err)
	}
	return float64(done.Load()) / elapsed.Seconds(), nil
}

// roundTrip sends req and reads records until END_REQUEST.
func roundTrip(nc net.Conn, rd *wire.Reader, req []byte) error {
	if _, err := nc.Write(req); err != nil {
		return err
	}
	for {
		rec, err := rd.Next()
		if err != nil {
			return err
		}
		switch rec.Type {
		case wire.TypeStdout, wire.TypeStderr:
		case wire.TypeEndRequest:
			return nil
		default:
			return fmt.Errorf("unexpected record %v", rec.Header)
		}
	}
}

// viaNginx is part (b).
func viaNginx(ctx context.Context, s *servers, dir string, d time.Duration, rounds, conns, workers, wrkThreads int) error {
	wrk, err := benchutil.LookWrk()
	if err != nil {
		return fmt.Errorf("part nginx: %w", err)
	}
	ng, err := startNginx(ctx, s, filepath.Join(dir, "nginx"), workers)
	if err != nil {
		return err
	}
	defer ng.Stop()

	fmt.Printf("## Through nginx %s (%d worker), wrk -t%d -c%d, kept upstream connections\n\n", ng.Version, workers, wrkThreads, conns)
	fmt.Println("| response | fcgikit req/s | net/http/fcgi req/s | proxy_pass → net/http req/s | fcgikit / stdlib | fcgikit / proxy_pass |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, size := range sizes {
		var urls []string
		for _, prefix := range []string{"fcgikit", "stdlib", "proxy"} {
			url := ng.URL + "/" + prefix + "/" + size.path
			if err := check(url, size.path); err != nil {
				return fmt.Errorf("%w\nnginx error log:\n%s", err, ng.ErrorLog())
			}
			if _, err := benchutil.RunWrk(ctx, wrk, url, wrkThreads, conns, time.Second); err != nil { // warm up
				return err
			}
			urls = append(urls, url)
		}
		rates, err := benchutil.Interleave(len(urls), rounds, func(i int) (float64, error) {
			return benchutil.RunWrk(ctx, wrk, urls[i], wrkThreads, conns, d)
		})
		if err != nil {
			return err
		}
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.2f× | %.2f× |\n", size.name,
			benchutil.Median(rates[0]), benchutil.Median(rates[1]), benchutil.Median(rates[2]),
			benchutil.MedianRatio(rates[0], rates[1]), benchutil.MedianRatio(rates[0], rates[2]))
	}
	fmt.Println()
	return nil
}

// check makes one request through nginx and verifies the body.
func check(url, path string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	want := helloBody
	if path == "64k" {
		want = bigBody
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, want) {
		return fmt.Errorf("GET %s: %s, %d bytes", url, resp.Status, len(b))
	}
	return nil
}

// Clientbench compares fcgikit's FastCGI client with other Go FastCGI
// clients, and fcgikit's Gateway with nginx's fastcgi_pass, in one run on
// one machine. Figures from different runs or machines are not comparable;
// the ratios printed here are meant to be.
//
// The backend is fcgikit's own fcgi.Server, in a child process (this
// program run again with -backend) on a unix socket, answering
// "/hello.php" with 12 bytes and "/64k.php" with 64 KiB. It runs apart so
// that the memory statistics of this process count the clients alone.
//
// Part "client" drives the backend from N goroutines for a fixed time
// through each client, every request reading the whole body:
//
//   - fcgikit: fcgi.Client.Do, default settings (kept connections);
//   - gofast: github.com/yookoala/gofast's ClientPool of N clients;
//   - Caddy: the FastCGI transport of Caddy's reverse proxy,
//     fastcgi.Transport.RoundTrip, called directly;
//   - fcgikit's fcgi.Gateway.ServeHTTP, called directly: like Caddy's
//     transport, and unlike the two clients, it builds the FastCGI
//     parameters from an *http.Request.
//
// It reports requests per second, heap allocations and bytes per request
// (runtime.MemStats deltas around each measurement, divided by the
// requests), and the connections the backend accepted per request.
//
// Part "gateway" serves the backend over HTTP on loopback, through
// fcgi.Gateway in a net/http server in this process and through nginx
// (fastcgi_pass, fastcgi_keep_conn on, upstream keepalive), with the same
// routing (try_files on the script), and drives both with wrk. It also
// runs the Gateway behind a minimal HTTP/1.1 loop in place of net/http's
// server, a measuring device that shows the server's share, and reports
// the CPU time per request of the proxy, the backend and wrk.
//
// Usage:
//
//	clientbench [-duration 1.5s] [-rounds 3] [-conns 8] [-parts client,gateway]
//
// Measurements are interleaved round by round between contenders, and the
// tables give medians. Everything stays on loopback and unix sockets; the
// backend, nginx and wrk are stopped before it exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi/benchmarks/internal/benchutil"
)

func main() {
	duration := flag.Duration("duration", 1500*time.Millisecond, "length of each measurement (whole seconds for wrk)")
	rounds := flag.Int("rounds", 3, "measurements per contender and response size, interleaved; medians are reported")
	conns := flag.Int("conns", 8, "concurrency: goroutines for part client, wrk connections for part gateway")
	parts := flag.String("parts", "client,gateway", "comma-separated parts to run: client, gateway")
	workers := flag.Int("nginx-workers", 1, "nginx worker_processes")
	wrkThreads := flag.Int("wrk-threads", 2, "wrk threads")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (clients, gateway; not the backend) to this file")
	backendSock := flag.String("backend", "", "internal: serve as the FastCGI backend on this unix socket")
	procs := flag.Int("gomaxprocs", 0, "GOMAXPROCS of this process (clients and proxies), not of the backend's; 0 leaves Go's default")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	log.SetFlags(0)
	log.SetPrefix("clientbench: ")

	if *backendSock != "" {
		if err := serveBackend(*backendSock); err != nil {
			log.Fatal(err)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	cfg := config{d: *duration, rounds: *rounds, conns: *conns, workers: *workers, wrkThreads: *wrkThreads}
	if err := run(ctx, cfg, *parts); err != nil {
		log.Print(err)
		stop()
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

type config struct {
	d                   time.Duration
	rounds, conns       int
	workers, wrkThreads int
	dir, root           string
	backend             *backend
}

func run(ctx context.Context, cfg config, parts string) error {
	want := map[string]bool{}
	for _, p := range strings.Split(parts, ",") {
		switch p = strings.TrimSpace(p); p {
		case "client", "gateway":
			want[p] = true
		default:
			return fmt.Errorf("unknown part %q (want client, gateway)", p)
		}
	}
	if cfg.rounds < 1 || cfg.conns < 1 || cfg.d <= 0 {
		return fmt.Errorf("-rounds, -conns and -duration must be positive")
	}
	dir, err := os.MkdirTemp("", "clientbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.dir = dir
	// The document root: the scripts exist, for the gateway's and nginx's
	// try_files; their content is never read.
	cfg.root = filepath.Join(dir, "www")
	if err := os.Mkdir(cfg.root, 0o755); err != nil {
		return err
	}
	for _, s := range sizes {
		if err := os.WriteFile(filepath.Join(cfg.root, s.script), []byte("<?php"), 0o644); err != nil {
			return err
		}
	}
	b, err := startBackend(ctx, filepath.Join(dir, "backend.sock"))
	if err != nil {
		return err
	}
	defer b.Stop()
	cfg.backend = b

	fmt.Printf("# fcgikit client and gateway\n\n%s, %s, GOMAXPROCS %d, %d CPUs; %d interleaved rounds of %v per contender and size, concurrency %d.\n"+
		"Backend: fcgikit's fcgi.Server in a child process, unix socket. Figures are medians over the rounds; ratios are medians of the per-round ratios.\n\n",
		time.Now().UTC().Format(time.DateTime), runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), cfg.rounds, cfg.d, cfg.conns)
	if want["client"] {
		if err := clientPart(ctx, cfg); err != nil {
			return err
		}
	}
	if want["gateway"] {
		if err := gatewayPart(ctx, cfg); err != nil {
			return err
		}
	}
	return nil
}

// A sample is one measurement of one contender.
type sample struct {
	rate, allocs, bytes, conns float64 // per second; per request
}

// clientPart is part "client".
func clientPart(ctx context.Context, cfg config) error {
	sock := cfg.backend.sock
	if err := startCaddy(); err != nil {
		return fmt.Errorf("starting caddy: %w", err)
	}
	defer stopCaddy()
	ct, err := caddyTransport(sock, cfg.root)
	if err != nil {
		return err
	}
	// The ratios below index this list.
	cs := []*contender{
		fcgikitClient(sock, cfg.root, 0),
		fcgikitClient(sock, cfg.root, cfg.conns),
		gofastClient(sock, cfg.root, cfg.conns),
		ct,
		fcgikitGateway(sock, cfg.root, cfg.conns),
	}
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()

	type row struct {
		size    string
		samples [][]sample // by contender, by round
	}
	var rows []row
	for _, size := range sizes {
		works := make([][]func(context.Context) error, len(cs))
		for i, c := range cs {
			for range cfg.conns {
				w, err := c.worker(size.script, size.body)
				if err != nil {
					return err
				}
				works[i] = append(works[i], w)
			}
			if _, err := measure(ctx, cfg.backend, works[i], cfg.d/4); err != nil { // warm up
				return fmt.Errorf("%s: %w", c.name, err)
			}
		}
		samples := make([][]sample, len(cs))
		for range cfg.rounds {
			for i, c := range cs {
				s, err := measure(ctx, cfg.backend, works[i], cfg.d)
				if err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				samples[i] = append(samples[i], s)
			}
		}
		rows = append(rows, row{size.name, samples})
	}

	fmt.Printf("## Client: %d goroutines, each request reading the whole body\n\n", cfg.conns)
	fmt.Println("| response | client | req/s | allocs/req | B/req | new conns/req |")
	fmt.Println("|---|---|---:|---:|---:|---:|")
	for _, r := range rows {
		for i, c := range cs {
			fmt.Printf("| %s | %s | %.0f | %.1f | %.0f | %.3f |\n", r.size, c.name,
				med(r.samples[i], func(s sample) float64 { return s.rate }),
				med(r.samples[i], func(s sample) float64 { return s.allocs }),
				med(r.samples[i], func(s sample) float64 { return s.bytes }),
				med(r.samples[i], func(s sample) float64 { return s.conns }))
		}
	}
	fmt.Println()
	fmt.Println("Ratios of req/s; target ≥ 2× for fcgikit's client against each peer. \"limit\": MaxConnsPerBackend set to the concurrency.")
	fmt.Println()
	fmt.Println("| response | fcgikit / gofast, defaults | fcgikit / gofast, limit | fcgikit / Caddy, defaults | fcgikit / Caddy, limit | Gateway.ServeHTTP / Caddy, limit |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		rate := func(i int) []float64 {
			var v []float64
			for _, s := range r.samples[i] {
				v = append(v, s.rate)
			}
			return v
		}
		fmt.Printf("| %s | %.2f× | %.2f× | %.2f× | %.2f× | %.2f× |\n", r.size,
			benchutil.MedianRatio(rate(0), rate(2)),
			benchutil.MedianRatio(rate(1), rate(2)),
			benchutil.MedianRatio(rate(0), rate(3)),
			benchutil.MedianRatio(rate(1), rate(3)),
			benchutil.MedianRatio(rate(4), rate(3)))
	}
	fmt.Println()
	return nil
}

func med(v []sample, f func(sample) float64) float64 {
	var x []float64
	for _, s := range v {
		x = append(x, f(s))
	}
	return benchutil.Median(x)
}

// measure runs one goroutine per work function for d, each calling it in
// a loop, and returns the completed requests per second and, per request,
// the heap allocations and bytes of this process and the connections the
// backend accepted. Each goroutine finishes the request in flight when d
// is up.
func measure(ctx context.Context, b *backend, works []func(context.Context) error, d time.Duration) (sample, error) {
	connsBefore, err := b.accepted()
	if err != nil {
		return sample{}, err
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	var stopping atomic.Bool
	timer := time.AfterFunc(d, func() { stopping.Store(true) })
	defer timer.Stop()
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(works))
	start := time.Now()
	for _, work := range works {
		wg.Go(func() {
			for !stopping.Load() && ctx.Err() == nil {
				if err := work(ctx); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	close(errs)
	if err := ctx.Err(); err != nil {
		return sample{}, err
	}
	if err := <-errs; err != nil {
		return sample{}, err
	}
	connsAfter, err := b.accepted()
	if err != nil {
		return sample{}, err
	}
	n := float64(done.Load())
	if n == 0 {
		return sample{}, fmt.Errorf("no request completed in %v", d)
	}
	return sample{
		rate:   n / elapsed.Seconds(),
		allocs: float64(after.Mallocs-before.Mallocs) / n,
		bytes:  float64(after.TotalAlloc-before.TotalAlloc) / n,
		conns:  float64(connsAfter-connsBefore) / n,
	}, nil
}

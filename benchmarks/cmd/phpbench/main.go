// Phpbench compares the fronts that put PHP-FPM on the web, on PHP-FPM's
// "hello" page (<?php echo "hello";), in one run on one machine: nginx's
// fastcgi_pass with kept connections (fastcgi_keep_conn on and an
// upstream keepalive) and with nginx's default of a connection per
// request, fcgikit's `fcgi gateway` (as it starts, and with
// GOMAXPROCS=1), Caddy's own php_fastcgi, and Caddy with fcgikit's
// php_fcgikit. Three Caddy baselines split Caddy's own
// overhead: reverse_proxy with the fcgikit transport alone (php_fcgikit
// without php_fastcgi's try_files and rewrite), php_fcgikit's routes
// before a transport that answers "hello" itself (cmd/benchcaddy's
// benchnull: everything Caddy does but FastCGI), and a site answering
// `respond "hello"` itself (Caddy's HTTP server, no proxy).
//
// Each front has its own PHP-FPM master and static pool, all with the
// same settings: a kept FastCGI connection pins a worker, so fronts
// sharing a pool would starve one another. The program writes every
// configuration into a temporary directory, builds `fcgi` and
// cmd/benchcaddy (Caddy with fcgikit's module and benchnull) with go
// build, starts every server in a process group of its own and stops them
// by PID before it exits.
//
// wrk drives each front in turn with the same threads, connections and
// duration, round after round, so that load from elsewhere on the machine
// falls on all of them alike. CPU per request is the front's process
// group's CPU time (benchutil.GroupCPU) over the requests wrk completed,
// and the same for the front's PHP-FPM pool.
//
// Usage, from the benchmarks module:
//
//	go run ./cmd/phpbench [-duration 3s] [-rounds 3] [-conns 8] [-wrk-threads 2] [-children 4]
//
// It prints a Markdown table and the ratios.
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
	"strings"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi/benchmarks/internal/benchutil"
)

func main() {
	duration := flag.Duration("duration", 3*time.Second, "length of each measurement")
	rounds := flag.Int("rounds", 3, "measurements per front, interleaved between fronts; medians are reported")
	conns := flag.Int("conns", 8, "wrk connections")
	wrkThreads := flag.Int("wrk-threads", 2, "wrk threads")
	children := flag.Int("children", 4, "pm.max_children of every PHP-FPM pool (pm = static); also php_fcgikit's max_conns and the gateway's --max-conns")
	workers := flag.Int("nginx-workers", 1, "nginx worker_processes")
	repo := flag.String("repo", "..", "the fcgikit repository: cmd/fcgi and benchmarks/cmd/benchcaddy are built from it")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("phpbench: ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, config{*duration, *rounds, *conns, *wrkThreads, *children, *workers, *repo}); err != nil {
		log.Print(err)
		stop()
		os.Exit(1)
	}
}

type config struct {
	d                                   time.Duration
	rounds, conns, wrkThreads, children int
	workers                             int
	repo                                string
}

// front is one contender: its URL, its process group, and its pool (nil
// for the static baseline).
type front struct {
	name string
	url  string
	proc func() int // the front's process group
	pool *pool
}

// sample is one wrk run against one front.
type sample struct {
	frontCPU, poolCPU float64 // µs per request
}

func run(ctx context.Context, c config) error {
	wrk, err := benchutil.LookWrk()
	if err != nil {
		return err
	}
	fpm, err := lookPHPFPM()
	if err != nil {
		return err
	}
	repo, err := filepath.Abs(c.repo)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "phpbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fcgiBin, caddyBin := filepath.Join(dir, "fcgi"), filepath.Join(dir, "caddy")
	if err := goBuild(repo, "./cmd/fcgi", fcgiBin); err != nil {
		return err
	}
	if err := goBuild(filepath.Join(repo, "benchmarks"), "./cmd/benchcaddy", caddyBin); err != nil {
		return err
	}
	root := filepath.Join(dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "hello.php"), []byte(phpHello), 0o644); err != nil {
		return err
	}

	pools := map[string]*pool{}
	for _, name := range []string{"nginx-keep", "nginx-plain", "gateway", "gateway-1p", "caddy-fastcgi", "caddy-fcgikit", "caddy-proxy"} {
		p, err := startPool(ctx, fpm, filepath.Join(dir, "fpm-"+name), c.children)
		if err != nil {
			return err
		}
		defer p.Stop()
		pools[name] = p
	}

	// nginx: both servers in one nginx; only one is driven at a time, so
	// the group's CPU is that server's.
	port2, err := benchutil.FreePort()
	if err != nil {
		return err
	}
	ngConf := strings.NewReplacer(
		"{{keepsock}}", pools["nginx-keep"].sock,
		"{{plainsock}}", pools["nginx-plain"].sock,
		"{{keepalive}}", fmt.Sprint(max(1, c.children-1)),
		"{{root}}", root,
		"{{port2}}", fmt.Sprint(port2),
	).Replace(nginxHTTP)
	ng, err := benchutil.StartNginx(ctx, filepath.Join(dir, "nginx"), c.workers, ngConf)
	if err != nil {
		return err
	}
	defer ng.Stop()

	gwPort, err := benchutil.FreePort()
	if err != nil {
		return err
	}
	gwAddr := fmt.Sprintf("127.0.0.1:%d", gwPort)
	gw, err := startProc(ctx, "fcgi gateway", nil, "tcp", gwAddr, fcgiBin, "gateway",
		"--listen", gwAddr, "--backend", "unix:"+pools["gateway"].sock,
		"--max-conns", fmt.Sprint(c.children), "--root", root)
	if err != nil {
		return err
	}
	defer gw.Stop()
	// The same gateway on one P: the Go scheduler's cost of a second P
	// when the gateway shares two cores with its pool and wrk.
	gw1Port, err := benchutil.FreePort()
	if err != nil {
		return err
	}
	gw1Addr := fmt.Sprintf("127.0.0.1:%d", gw1Port)
	gw1, err := startProc(ctx, "fcgi gateway, GOMAXPROCS 1", []string{"GOMAXPROCS=1"}, "tcp", gw1Addr, fcgiBin, "gateway",
		"--listen", gw1Addr, "--backend", "unix:"+pools["gateway-1p"].sock,
		"--max-conns", fmt.Sprint(c.children), "--root", root)
	if err != nil {
		return err
	}
	defer gw1.Stop()

	var ports []int
	for range 5 {
		p, err := benchutil.FreePort()
		if err != nil {
			return err
		}
		ports = append(ports, p)
	}
	caddyDir := filepath.Join(dir, "caddy-run")
	if err := os.MkdirAll(caddyDir, 0o755); err != nil {
		return err
	}
	cf := filepath.Join(caddyDir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(caddyfile(caddyDir, root, ports,
		pools["caddy-fastcgi"].sock, pools["caddy-fcgikit"].sock, pools["caddy-proxy"].sock, c.children)), 0o644); err != nil {
		return err
	}
	cd, err := startProc(ctx, "caddy", caddyEnv(caddyDir), "tcp", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	if err != nil {
		return err
	}
	defer cd.Stop()
	caddyVersion, _ := output(caddyBin, "version")

	caddyURL := func(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", ports[i]) }
	fronts := []front{
		{"nginx fastcgi_pass, kept", ng.URL + "/hello.php", ng.Pgid, pools["nginx-keep"]},
		{"nginx fastcgi_pass, default", fmt.Sprintf("http://127.0.0.1:%d/hello.php", port2), ng.Pgid, pools["nginx-plain"]},
		{"fcgi gateway", "http://" + gwAddr + "/hello.php", gw.Pgid, pools["gateway"]},
		{"fcgi gateway, GOMAXPROCS=1", "http://" + gw1Addr + "/hello.php", gw1.Pgid, pools["gateway-1p"]},
		{"Caddy php_fastcgi", caddyURL(0) + "/hello.php", cd.Pgid, pools["caddy-fastcgi"]},
		{"Caddy php_fcgikit", caddyURL(1) + "/hello.php", cd.Pgid, pools["caddy-fcgikit"]},
		{"Caddy reverse_proxy, transport fcgikit", caddyURL(3) + "/hello.php", cd.Pgid, pools["caddy-proxy"]},
		{"Caddy php_fcgikit's routes, benchnull transport (no PHP)", caddyURL(4) + "/hello.php", cd.Pgid, nil},
		{"Caddy respond (no PHP)", caddyURL(2) + "/hello.php", cd.Pgid, nil},
	}
	for _, f := range fronts {
		if err := benchutil.Check(f.url, []byte("hello")); err != nil {
			return err
		}
		if _, err := benchutil.RunWrk(ctx, wrk, f.url, c.wrkThreads, c.conns, time.Second); err != nil { // warm up
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}

	samples := make([][]sample, len(fronts))
	rates, err := benchutil.Interleave(len(fronts), c.rounds, func(i int) (float64, error) {
		f := fronts[i]
		fc0 := benchutil.GroupCPU(f.proc())
		var pc0 time.Duration
		if f.pool != nil {
			pc0 = benchutil.GroupCPU(f.pool.Pgid())
		}
		r, err := benchutil.Wrk(ctx, wrk, f.url, c.wrkThreads, c.conns, c.d)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", f.name, err)
		}
		fc := benchutil.GroupCPU(f.proc()) - fc0
		var pc time.Duration
		if f.pool != nil {
			pc = benchutil.GroupCPU(f.pool.Pgid()) - pc0
		}
		var s sample
		if r.Requests > 0 {
			s.frontCPU = float64(fc.Microseconds()) / float64(r.Requests)
			s.poolCPU = float64(pc.Microseconds()) / float64(r.Requests)
		}
		samples[i] = append(samples[i], s)
		return r.Rate, nil
	})
	if err != nil {
		return err
	}

	fmt.Printf("# PHP-FPM hello page, each front its own pool\n\n%s, %d CPUs; %s, %s, %s; "+
		"every pool pm = static, pm.max_children %d; wrk -t%d -c%d, %d interleaved rounds of %v per front.\n"+
		"Figures are medians over the rounds; ratios are medians of the per-round ratios. "+
		"CPU is user + system time of the front's processes (and of its pool's master and workers) over the requests served, to the kernel's 10 ms.\n\n",
		time.Now().UTC().Format(time.DateTime), runtime.NumCPU(), ng.Version, strings.Fields(caddyVersion + " ?")[0], phpVersion(fpm),
		c.children, c.wrkThreads, c.conns, c.rounds, c.d)
	fmt.Println("| front | req/s | front CPU µs/req | PHP-FPM CPU µs/req |")
	fmt.Println("|---|---:|---:|---:|")
	frontCPU := make([]float64, len(fronts))
	for i, f := range fronts {
		var fcpu, pcpu []float64
		for _, s := range samples[i] {
			fcpu = append(fcpu, s.frontCPU)
			pcpu = append(pcpu, s.poolCPU)
		}
		pool := fmt.Sprintf("%.1f", benchutil.Median(pcpu))
		if f.pool == nil {
			pool = "–"
		}
		frontCPU[i] = benchutil.Median(fcpu)
		fmt.Printf("| %s | %.0f | %.1f | %s |\n", f.name, benchutil.Median(rates[i]), frontCPU[i], pool)
	}
	ratio := func(a, b int) float64 { return benchutil.MedianRatio(rates[a], rates[b]) }
	const (
		ngKeep = iota
		ngPlain
		gateway
		gateway1P
		stock
		fcgikit
		proxy
		null
		static
	)
	fmt.Printf("\n| ratio (req/s) | value |\n|---|---:|\n")
	fmt.Printf("| php_fcgikit / php_fastcgi | %.2f× |\n", ratio(fcgikit, stock))
	fmt.Printf("| php_fcgikit / fcgi gateway | %.2f× |\n", ratio(fcgikit, gateway))
	fmt.Printf("| fcgi gateway / nginx kept | %.2f× |\n", ratio(gateway, ngKeep))
	fmt.Printf("| fcgi gateway / nginx default | %.2f× |\n", ratio(gateway, ngPlain))
	fmt.Printf("| fcgi gateway GOMAXPROCS=1 / nginx kept | %.2f× |\n", ratio(gateway1P, ngKeep))
	fmt.Printf("| fcgi gateway GOMAXPROCS=1 / fcgi gateway | %.2f× |\n", ratio(gateway1P, gateway))
	fmt.Printf("| php_fastcgi / fcgi gateway | %.2f× |\n", ratio(stock, gateway))
	fmt.Printf("| Caddy reverse_proxy fcgikit / php_fcgikit | %.2f× |\n", ratio(proxy, fcgikit))
	fmt.Printf("| Caddy reverse_proxy fcgikit / fcgi gateway | %.2f× |\n", ratio(proxy, gateway))
	fmt.Printf("| Caddy respond / fcgi gateway | %.2f× |\n", ratio(static, gateway))
	// What no transport can beat: Caddy's handlers before one that costs
	// nothing and runs no PHP.
	fmt.Printf("| Caddy php_fcgikit's routes, benchnull / php_fastcgi | %.2f× |\n", ratio(null, stock))
	fmt.Printf("| Caddy php_fcgikit's routes, benchnull / php_fcgikit | %.2f× |\n", ratio(null, fcgikit))
	fmt.Printf("\nCaddy's own CPU per request before the transport (benchnull site): %.1f µs; "+
		"php_fcgikit's transport and FastCGI round trip on top of it: %.1f µs; "+
		"php_fastcgi's: %.1f µs.\n", frontCPU[null], frontCPU[fcgikit]-frontCPU[null], frontCPU[stock]-frontCPU[null])
	return nil
}

// phpVersion returns "PHP 8.2.x" from php-fpm -v.
func phpVersion(fpm string) string {
	out, _ := output(fpm, "-v")
	f := strings.Fields(out)
	if len(f) >= 2 {
		return f[0] + " " + f[1]
	}
	return "PHP ?"
}

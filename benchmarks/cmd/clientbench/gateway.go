package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/benchmarks/internal/benchutil"
)

// nginxHTTP serves the backend the way fcgi.Gateway's documentation
// describes nginx doing it: the script must exist (try_files), kept
// upstream connections.
const nginxHTTP = `    upstream backend { server unix:{{sock}}; keepalive 32; }

    server {
        listen 127.0.0.1:{{port}};
        server_name localhost;
        root {{root}};
        location ~ [^/]\.php(/|$) {
            fastcgi_split_path_info ^(.+?\.php)(/.*)$;
            try_files $fastcgi_script_name =404;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            include {{dir}}/fastcgi_params;
            fastcgi_pass backend;
            fastcgi_keep_conn on;
        }
    }
`

// gatewayPart is part "gateway".
func gatewayPart(ctx context.Context, cfg config) error {
	wrk, err := benchutil.LookWrk()
	if err != nil {
		return fmt.Errorf("part gateway: %w", err)
	}

	// fcgi.Gateway in a net/http server on loopback, with the client's
	// defaults and with MaxConnsPerBackend set to the concurrency.
	var gwURLs []string
	for _, maxConns := range []int{0, cfg.conns} {
		c := newClient(cfg.backend.sock, maxConns)
		defer c.Close()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: &fcgi.Gateway{Client: c, Root: cfg.root}}
		go hs.Serve(l)
		defer hs.Close()
		gwURLs = append(gwURLs, "http://"+l.Addr().String())
	}

	// The same Gateway behind a minimal HTTP/1.1 loop instead of
	// net/http's server: what the Gateway would do with a server that
	// cost nothing but parsing and one write.
	{
		c := newClient(cfg.backend.sock, 0)
		defer c.Close()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		floorDone := make(chan struct{})
		go func() { serveFloor(l, &fcgi.Gateway{Client: c, Root: cfg.root}); close(floorDone) }()
		defer func() { l.Close(); <-floorDone }()
		gwURLs = append(gwURLs, "http://"+l.Addr().String())
	}

	conf := strings.NewReplacer("{{sock}}", cfg.backend.sock, "{{root}}", cfg.root).Replace(nginxHTTP)
	ng, err := benchutil.StartNginx(ctx, filepath.Join(cfg.dir, "nginx"), cfg.workers, conf)
	if err != nil {
		return err
	}
	defer ng.Stop()

	fmt.Printf("## Gateway: fcgi.Gateway (net/http server) vs %s fastcgi_pass (%d worker), wrk -t%d -c%d\n\n",
		ng.Version, cfg.workers, cfg.wrkThreads, cfg.conns)
	fmt.Println("| response | Gateway req/s, defaults | Gateway req/s, limit | nginx req/s | Gateway / nginx, defaults (target ≥ 0.8×) | Gateway / nginx, limit (target ≥ 0.8×) | Gateway without net/http / nginx (no target) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	var cpuRows []string
	for _, size := range sizes {
		urls := []string{gwURLs[0] + size.script, gwURLs[1] + size.script, gwURLs[2] + size.script, ng.URL + size.script}
		const ngx = 3 // nginx's index in urls
		for _, url := range urls {
			if err := benchutil.Check(url, size.body); err != nil {
				return fmt.Errorf("%w\nnginx error log:\n%s", err, ng.ErrorLog())
			}
			if _, err := benchutil.RunWrk(ctx, wrk, url, cfg.wrkThreads, cfg.conns, time.Second); err != nil { // warm up
				return err
			}
		}
		// CPU time per request, by whom, alongside the rates: the
		// machine is shared by wrk, the backend and the proxy, so the
		// proxy's cost per request is what decides its throughput.
		cpu := make([][3][]float64, len(urls)) // proxy, backend, wrk; µs per request
		rates, err := benchutil.Interleave(len(urls), cfg.rounds, func(i int) (float64, error) {
			proxy := benchutil.SelfCPU
			if i == ngx {
				proxy = func() time.Duration { return benchutil.GroupCPU(ng.Pgid()) }
			}
			p0, b0 := proxy(), benchutil.GroupCPU(cfg.backend.Pgid())
			r, err := benchutil.Wrk(ctx, wrk, urls[i], cfg.wrkThreads, cfg.conns, cfg.d)
			if err != nil {
				return 0, err
			}
			if r.Requests == 0 {
				return 0, fmt.Errorf("wrk %s: no request completed", urls[i])
			}
			perReq := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(r.Requests) }
			cpu[i][0] = append(cpu[i][0], perReq(proxy()-p0))
			cpu[i][1] = append(cpu[i][1], perReq(benchutil.GroupCPU(cfg.backend.Pgid())-b0))
			cpu[i][2] = append(cpu[i][2], perReq(r.CPU))
			return r.Rate, nil
		})
		if err != nil {
			return err
		}
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.2f× | %.2f× | %.2f× |\n", size.name,
			benchutil.Median(rates[0]), benchutil.Median(rates[1]), benchutil.Median(rates[ngx]),
			benchutil.MedianRatio(rates[0], rates[ngx]), benchutil.MedianRatio(rates[1], rates[ngx]),
			benchutil.MedianRatio(rates[2], rates[ngx]))
		for i, name := range []string{"Gateway, defaults", "Gateway, limit", "Gateway without net/http", "nginx"} {
			cpuRows = append(cpuRows, fmt.Sprintf("| %s | %s | %.1f | %.1f | %.1f |", size.name, name,
				benchutil.Median(cpu[i][0]), benchutil.Median(cpu[i][1]), benchutil.Median(cpu[i][2])))
		}
	}
	fmt.Println()
	fmt.Println("CPU time per request, µs (user + system, all threads; medians over the rounds):")
	fmt.Println()
	fmt.Println("| response | setup | proxy | backend | wrk |")
	fmt.Println("|---|---|---:|---:|---:|")
	for _, r := range cpuRows {
		fmt.Println(r)
	}
	fmt.Println()
	return nil
}

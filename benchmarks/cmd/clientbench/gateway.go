package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/benchmarks/internal/benchutil"
)

// nginxHTTP serves the backend the way fcgi.Gateway's documentation
// describes nginx doing it: the script must exist (try_files), kept
// upstream connections. Under /proxy/ it proxies the same requests to the
// backend's net/http server instead, with kept connections too: the same
// job over HTTP.
const nginxHTTP = `    upstream backend { server unix:{{sock}}; keepalive 32; }
    upstream httpbackend { server unix:{{sock}}.http; keepalive 32; }

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
        location ^~ /proxy/ {
            proxy_pass http://httpbackend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
`

// front is one HTTP front under wrk in part gateway.
type front struct {
	name  string // its row in the CPU table
	url   string // the base URL; the script's path follows
	nginx bool   // its CPU is nginx's process group's, not this process's
}

// gatewayPart is part "gateway".
func gatewayPart(ctx context.Context, cfg config) error {
	wrk, err := benchutil.LookWrk()
	if err != nil {
		return fmt.Errorf("part gateway: %w", err)
	}
	var cs []front
	serve := func(name string, h http.Handler) error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: h}
		go hs.Serve(l)
		context.AfterFunc(ctx, func() { hs.Close() })
		cs = append(cs, front{name: name, url: "http://" + l.Addr().String()})
		return nil
	}

	// fcgi.Gateway in a net/http server on loopback, with the client's
	// defaults and with MaxConnsPerBackend set to the concurrency.
	for _, maxConns := range []int{0, cfg.conns} {
		c := newClient(cfg.backend.sock, maxConns)
		defer c.Close()
		name := "Gateway, defaults"
		if maxConns > 0 {
			name = "Gateway, limit"
		}
		if err := serve(name, &fcgi.Gateway{Client: c, Root: cfg.root}); err != nil {
			return err
		}
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
		cs = append(cs, front{name: "Gateway without net/http", url: "http://" + l.Addr().String()})
	}

	// Go's own reverse proxy to the backend's net/http server: the same
	// job as the Gateway's with HTTP instead of FastCGI, on the same
	// net/http server, its cost the floor of a proxy written in Go.
	{
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", cfg.backend.sock+".http")
			},
			MaxIdleConnsPerHost: cfg.conns,
		}
		defer tr.CloseIdleConnections()
		rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: "backend"})
		rp.Transport = tr
		// wrk closes its connections mid-request at the end of each run;
		// the proxy's log of each would drown the tables.
		rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
		if err := serve("Go httputil.ReverseProxy", rp); err != nil {
			return err
		}
	}

	// net/http's server and the minimal loop answering by themselves,
	// no backend: the floor under any http.Handler, the Gateway's
	// included, and the loop's own cost, which leaves the FastCGI round
	// trip's when taken from the Gateway's behind the loop.
	bodies := map[string][]byte{}
	for _, size := range sizes {
		bodies[size.script] = size.body
	}
	alone := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.Write(bodies[r.URL.Path])
	})
	if err := serve("net/http alone, no backend", alone); err != nil {
		return err
	}
	{
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		floorDone := make(chan struct{})
		go func() { serveFloor(l, alone); close(floorDone) }()
		defer func() { l.Close(); <-floorDone }()
		cs = append(cs, front{name: "minimal loop alone, no backend", url: "http://" + l.Addr().String()})
	}

	conf := strings.NewReplacer("{{sock}}", cfg.backend.sock, "{{root}}", cfg.root).Replace(nginxHTTP)
	ng, err := benchutil.StartNginx(ctx, filepath.Join(cfg.dir, "nginx"), cfg.workers, conf)
	if err != nil {
		return err
	}
	defer ng.Stop()
	const (
		gwDefaults, gwLimit, gwFloor, goProxy, httpAlone = 0, 1, 2, 3, 4 // indices in cs
		ngx, ngxProxy                                    = 6, 7
	)
	cs = append(cs,
		front{name: "nginx fastcgi_pass", url: ng.URL, nginx: true},
		front{name: "nginx proxy_pass (HTTP)", url: ng.URL + "/proxy", nginx: true})

	fmt.Printf("## Gateway: fcgi.Gateway (net/http server) vs %s fastcgi_pass (%d worker), wrk -t%d -c%d\n\n",
		ng.Version, cfg.workers, cfg.wrkThreads, cfg.conns)
	fmt.Println("| response | Gateway req/s, defaults | Gateway req/s, limit | nginx req/s | Gateway / nginx, defaults (target ≥ 0.8×) | Gateway / nginx, limit (target ≥ 0.8×) | Gateway without net/http / nginx | Go ReverseProxy / nginx proxy_pass | net/http alone / nginx |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	var cpuRows []string
	for _, size := range sizes {
		for _, c := range cs {
			if err := benchutil.Check(c.url+size.script, size.body); err != nil {
				return fmt.Errorf("%s: %w\nnginx error log:\n%s", c.name, err, ng.ErrorLog())
			}
			if _, err := benchutil.RunWrk(ctx, wrk, c.url+size.script, cfg.wrkThreads, cfg.conns, time.Second); err != nil { // warm up
				return err
			}
		}
		// CPU time per request, by whom, alongside the rates: the
		// machine is shared by wrk, the backend and the proxy, so the
		// proxy's cost per request is what decides its throughput.
		cpu := make([][3][]float64, len(cs)) // proxy, backend, wrk; µs per request
		rates, err := benchutil.Interleave(len(cs), cfg.rounds, func(i int) (float64, error) {
			proxy := benchutil.SelfCPU
			if cs[i].nginx {
				proxy = func() time.Duration { return benchutil.GroupCPU(ng.Pgid()) }
			}
			p0, b0 := proxy(), benchutil.GroupCPU(cfg.backend.Pgid())
			r, err := benchutil.Wrk(ctx, wrk, cs[i].url+size.script, cfg.wrkThreads, cfg.conns, cfg.d)
			if err != nil {
				return 0, err
			}
			if r.Requests == 0 {
				return 0, fmt.Errorf("wrk %s: no request completed", cs[i].url+size.script)
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
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.2f× | %.2f× | %.2f× | %.2f× | %.2f× |\n", size.name,
			benchutil.Median(rates[gwDefaults]), benchutil.Median(rates[gwLimit]), benchutil.Median(rates[ngx]),
			benchutil.MedianRatio(rates[gwDefaults], rates[ngx]), benchutil.MedianRatio(rates[gwLimit], rates[ngx]),
			benchutil.MedianRatio(rates[gwFloor], rates[ngx]), benchutil.MedianRatio(rates[goProxy], rates[ngxProxy]),
			benchutil.MedianRatio(rates[httpAlone], rates[ngx]))
		for i, c := range cs {
			cpuRows = append(cpuRows, fmt.Sprintf("| %s | %s | %.1f | %.1f | %.1f |", size.name, c.name,
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

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var exporterCmd = &command{
	name:    "exporter",
	serves:  true,
	summary: "Prometheus exporter for PHP-FPM pools (replaces php-fpm_exporter)",
	usage: `
Usage: fcgi exporter [flags] --backend ADDR [--backend ADDR]...

Exporter serves PHP-FPM's pool status as Prometheus metrics on
http://--listen/metrics, with the metric names, types, help texts and
labels (pool, scrape_uri; child and state for the workers) of
hipages/php-fpm_exporter, so that its dashboards and alerts keep working.
Each scrape reads the status page (pm.status_path, --path) of every
--backend at once, over a connection kept from one scrape to the next.

A pool that does not answer within --timeout, such as a saturated one
whose status request waits in the listen queue behind the traffic, is
reported as phpfpm_up 0 with phpfpm_scrape_error{reason="timeout"} 1 and
a log line; the other pools are reported as usual. A status listener of
its own (pm.status_listen) answers even then: point --backend at it.

--opcache adds OPcache's figures (phpfpm_opcache_*): each scrape writes a
small PHP script to --opcache-dir, runs it through every pool and removes
it. The pool's workers must be able to read it there (see fcgi opcache).

Examples:

	fcgi exporter --backend unix:/run/php/php8.2-fpm.sock
	fcgi exporter --listen :9253 --backend 127.0.0.1:9000 --backend 127.0.0.1:9001
	fcgi exporter --backend 127.0.0.1:9001 --opcache --opcache-dir /run/fcgi-exporter
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		x := &exporter{log: e.log}
		listen := fs.String("listen", ":9253", "HTTP listen `address` of /metrics (php-fpm_exporter's port)")
		var backends stringList
		fs.Var(&backends, "backend", "PHP-FPM pool `address` (repeatable, one per pool or status listener)")
		fs.StringVar(&x.path, "path", "/status", "status `path` (PHP-FPM's pm.status_path)")
		fs.DurationVar(&x.timeout, "timeout", 3*time.Second, "how long a scrape waits for each pool; a pool later than this is down (phpfpm_up 0)")
		// PHP-FPM gives a kept connection a worker of its own: kept by
		// default, it would take one from the traffic of a pool's own
		// socket for good.
		idle := fs.Duration("idle-timeout", 0, "keep the connection to a pool between scrapes, closing it after this long without one; for a status listener (pm.status_listen) only, as it holds a worker (0: a new connection for each scrape)")
		fs.BoolVar(&x.fixCount, "fix-process-count", false, "count active and idle workers from the status page's list of workers, not from its totals")
		opcache := fs.Bool("opcache", false, "add OPcache's figures (phpfpm_opcache_*), read by running a PHP script through each pool")
		opcacheDir := fs.String("opcache-dir", os.TempDir(), "`directory` for --opcache's script: the pool's workers must read it there")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageError(e, fs, "unexpected argument %q: pools are given with --backend", args[0])
			}
			if len(backends) == 0 {
				return usageError(e, fs, "want at least one --backend")
			}
			x.log = e.log
			for _, addr := range backends {
				if _, _, err := parseAddr(addr); err != nil {
					return usageError(e, fs, "--backend: %v", err)
				}
				x.pools = append(x.pools, newFPMPool(e, addr, x.path, x.timeout, *idle))
			}
			defer func() {
				for _, p := range x.pools {
					p.c.Close()
				}
			}()
			if *opcache {
				x.script = &opcacheScript{dir: *opcacheDir, name: "fcgi-exporter-opcache"}
			}
			l, err := net.Listen("tcp", *listen)
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", x.handler(reg))
			mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "fcgi exporter: PHP-FPM metrics at /metrics\n")
			})
			srv := &http.Server{
				Handler:           mux,
				ReadHeaderTimeout: 10 * time.Second,
				ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelWarn),
			}
			fmt.Fprintf(e.stdout, "fcgi exporter: %s <- %s\n", openURL("http", l.Addr(), "/metrics"), strings.Join(backends, ", "))
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(l) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), x.timeout+time.Second)
			defer cancel()
			if srv.Shutdown(sctx) != nil {
				srv.Close()
			}
			<-errc
			return nil
		}
	},
}

// An exporter answers Prometheus's scrapes with the status of its pools.
type exporter struct {
	pools    []*fpmPool
	path     string
	timeout  time.Duration
	fixCount bool
	script   *opcacheScript // nil without --opcache
	log      *slog.Logger
}

// An fpmPool is one --backend: its client, which keeps one connection
// between scrapes with --idle-timeout, and what the exporter remembers of
// it.
type fpmPool struct {
	addr string
	uri  string // the scrape_uri label, as php-fpm_exporter writes it
	c    *fcgi.Client

	mu       sync.Mutex
	name     string // the pool's name at its last answer; "" before one
	failures int64  // scrapes that failed, phpfpm_scrape_failures
	warned   bool   // the process-count mismatch has been logged
	// down is the reason of the last scrape's failure, "" after an
	// answer, and downSince when the failures began: the log says when
	// a pool goes down, or fails otherwise, and when it answers again,
	// not at every scrape of an outage.
	down      string
	downSince time.Time
}

func newFPMPool(e *env, addr, path string, timeout, idle time.Duration) *fpmPool {
	c := newClient(e, addr, timeout)
	// One connection per pool: PHP-FPM gives each open connection a
	// worker of its own, so the exporter holds at most one.
	c.MaxConnsPerBackend = 1
	c.MaxIdleConnsPerBackend = 1
	c.IdleTimeout = idle
	if idle <= 0 {
		c.MaxIdleConnsPerBackend = -1
	}
	// A failing pool is tried again at the next scrape, not set aside.
	c.BackendCooldown = -1
	network, address, _ := parseAddr(addr)
	uri := "tcp://" + address + path
	if network == "unix" {
		uri = "unix://" + address + ";" + path
	}
	return &fpmPool{addr: addr, uri: uri, c: c}
}

// A poolScrape is what one scrape learnt of one pool.
type poolScrape struct {
	pool     *fpmPool
	name     string
	failures int64
	st       poolStatus // nil when the scrape failed
	procs    []fpmProcess
	reason   string // why it failed: a scrapeReason
	duration time.Duration
	opcache  *opcacheStatus // nil without --opcache or when its script failed
}

// An fpmProcess is one worker of the status page's full list.
type fpmProcess struct {
	PID               int64   `json:"pid"`
	State             string  `json:"state"`
	Requests          float64 `json:"requests"`
	RequestDuration   float64 `json:"request duration"`
	LastRequestCPU    float64 `json:"last request cpu"`
	LastRequestMemory float64 `json:"last request memory"`
}

// handler answers a scrape: the pools' metrics, gathered for this
// request under its own deadline, after the process's own.
func (x *exporter) handler(base prometheus.Gatherer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		timeout := x.timeout
		// Prometheus says how long it waits; answering within that
		// keeps its view of the other pools.
		if s, err := strconv.ParseFloat(r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"), 64); err == nil && s > 0 {
			timeout = min(timeout, time.Duration(s*float64(time.Second))*9/10)
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		reg := prometheus.NewRegistry()
		reg.MustRegister(&scrapeCollector{x: x, scrapes: x.scrape(ctx)})
		promhttp.HandlerFor(prometheus.Gatherers{base, reg}, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(x.log.Handler(), slog.LevelError),
		}).ServeHTTP(w, r)
	})
}

// scrape reads every pool at once and returns what each said, in the
// order of --backend.
func (x *exporter) scrape(ctx context.Context) []*poolScrape {
	opcache := false
	if x.script != nil {
		if err := x.script.acquire(); err != nil {
			x.log.Warn("OPcache: cannot write the script", "err", err)
		} else {
			opcache = true
			defer x.script.release()
		}
	}
	out := make([]*poolScrape, len(x.pools))
	var wg sync.WaitGroup
	for i, p := range x.pools {
		wg.Go(func() { out[i] = x.scrapePool(ctx, p, opcache) })
	}
	wg.Wait()
	return out
}

// scrapePool reads one pool's status page, then, when opcache is true,
// its OPcache figures through the script x.script holds in place.
func (x *exporter) scrapePool(ctx context.Context, p *fpmPool, opcache bool) *poolScrape {
	start := time.Now()
	st, _, err := readStatus(ctx, p.c, x.path, true)
	ps := &poolScrape{pool: p, st: st}
	if err == nil {
		if v, ok := st.raw("processes"); ok {
			if jerr := json.Unmarshal(v, &ps.procs); jerr != nil {
				err = &notStatusError{200, "the list of workers is not PHP-FPM's: " + jerr.Error()}
			}
		}
	}
	ps.duration = time.Since(start)
	p.mu.Lock()
	was, since := p.down, p.downSince
	if err != nil {
		ps.st = nil
		ps.reason = scrapeReason(err)
		p.failures++
		p.down = ps.reason
		if was == "" {
			p.downSince = start
		}
	} else {
		p.down = ""
		if v, ok := st.raw("pool"); ok {
			json.Unmarshal(v, &p.name)
		}
	}
	ps.name, ps.failures = p.name, p.failures
	p.mu.Unlock()
	if err != nil {
		level := slog.LevelWarn
		if was == ps.reason {
			level = slog.LevelDebug // said when it began
		}
		x.log.Log(ctx, level, "pool down", "scrape_uri", p.uri, "pool", ps.name, "reason", ps.reason, "err", err)
		return ps
	}
	if was != "" {
		x.log.Info("pool up again", "scrape_uri", p.uri, "pool", ps.name, "down_for", time.Since(since).Round(time.Second))
	}
	if !x.fixCount {
		active, idle := countProcesses(ps.procs)
		a, _ := st.int("active processes")
		i, _ := st.int("idle processes")
		p.mu.Lock()
		warn := !p.warned && (a != active || i != idle)
		p.warned = p.warned || warn
		p.mu.Unlock()
		if warn {
			x.log.Warn("PHP-FPM's active and idle totals disagree with its list of workers; --fix-process-count counts them from the list",
				"pool", ps.name, "active", a, "idle", i, "listed_active", active, "listed_idle", idle)
		}
	}
	if opcache {
		ops, err := x.script.run(ctx, p.c, false)
		if err != nil {
			x.log.Warn("OPcache: no figures", "scrape_uri", p.uri, "pool", ps.name, "err", err)
		} else {
			ps.opcache = ops
		}
	}
	return ps
}

// scrapeReason names why a pool's scrape failed, for the reason label
// of phpfpm_scrape_error.
func scrapeReason(err error) string {
	var ns *notStatusError
	var te *fcgi.TimeoutError
	var pe *fcgi.ProtocolStatusError
	switch {
	case errors.As(err, &ns) && ns.status != 200:
		return "http_status"
	case errors.As(err, &ns):
		return "not_status"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &te) && te.Op != "dial":
		return "timeout"
	case errors.As(err, &pe),
		errors.Is(err, fcgi.ErrMalformedResponse),
		errors.Is(err, fcgi.ErrResponseHeaderTooLarge),
		errors.Is(err, fcgi.ErrProtocol):
		return "protocol"
	}
	return "unreachable"
}

// PHP-FPM's worker states, as its status page names them.
const (
	stateIdle           = "Idle"
	stateRunning        = "Running"
	stateReadingHeaders = "Reading headers"
)

// fpmStates are the states php-fpm_exporter reports for every worker,
// each as a phpfpm_process_state series, 1 for the worker's state and 0
// for the others. The spelling "informations" is PHP-FPM's before 7.4,
// kept for the series' names; a state outside the list is reported too.
var fpmStates = []string{stateIdle, stateRunning, "Finishing", stateReadingHeaders, "Getting request informations", "Ending"}

// countProcesses counts the listed workers as php-fpm_exporter's
// --phpfpm.fix-process-count does: active are those running a request or
// reading one, idle those waiting for one.
func countProcesses(procs []fpmProcess) (active, idle int64) {
	for _, p := range procs {
		switch p.State {
		case stateRunning, stateReadingHeaders:
			active++
		case stateIdle:
			idle++
		}
	}
	return active, idle
}

func poolDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append([]string{"pool"}, append(labels, "scrape_uri")...), nil)
}

// The metrics of php-fpm_exporter, its names, help texts and labels; the
// types are given where they are sent.
var (
	descUp                  = poolDesc("phpfpm_up", "Could PHP-FPM be reached?")
	descScrapeFailures      = poolDesc("phpfpm_scrape_failures", "The number of failures scraping from PHP-FPM.")
	descStartSince          = poolDesc("phpfpm_start_since", "The number of seconds since FPM has started.")
	descAcceptedConnections = poolDesc("phpfpm_accepted_connections", "The number of requests accepted by the pool.")
	descListenQueue         = poolDesc("phpfpm_listen_queue", "The number of requests in the queue of pending connections.")
	descMaxListenQueue      = poolDesc("phpfpm_max_listen_queue", "The maximum number of requests in the queue of pending connections since FPM has started.")
	descListenQueueLength   = poolDesc("phpfpm_listen_queue_length", "The size of the socket queue of pending connections.")
	descIdleProcesses       = poolDesc("phpfpm_idle_processes", "The number of idle processes.")
	descActiveProcesses     = poolDesc("phpfpm_active_processes", "The number of active processes.")
	descTotalProcesses      = poolDesc("phpfpm_total_processes", "The number of idle + active processes.")
	descMaxActiveProcesses  = poolDesc("phpfpm_max_active_processes", "The maximum number of active processes since FPM has started.")
	descMaxChildrenReached  = poolDesc("phpfpm_max_children_reached", "The number of times, the process limit has been reached, when pm tries to start more children (works only for pm 'dynamic' and 'ondemand').")
	descSlowRequests        = poolDesc("phpfpm_slow_requests", "The number of requests that exceeded your 'request_slowlog_timeout' value.")
	descProcessRequests     = poolDesc("phpfpm_process_requests", "The number of requests the process has served.", "child")
	descProcessLastMemory   = poolDesc("phpfpm_process_last_request_memory", "The max amount of memory the last request consumed.", "child")
	descProcessLastCPU      = poolDesc("phpfpm_process_last_request_cpu", "The %cpu the last request consumed.", "child")
	descProcessDuration     = poolDesc("phpfpm_process_request_duration", "The duration in microseconds of the requests.", "child")
	descProcessState        = poolDesc("phpfpm_process_state", "The state of the process (Idle, Running, ...).", "child", "state")

	// fcgi exporter's own.
	descScrapeError    = poolDesc("phpfpm_scrape_error", "1 when the last scrape of the pool failed, with the reason: timeout (no answer within --timeout: saturated or stuck), unreachable, protocol, http_status or not_status.", "reason")
	descScrapeDuration = poolDesc("phpfpm_scrape_duration_seconds", "How long the last scrape of the pool's status page took.")
)

// scrapeCollector sends the metrics of one scrape.
type scrapeCollector struct {
	x       *exporter
	scrapes []*poolScrape
}

func (sc *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descScrapeFailures, descStartSince, descAcceptedConnections,
		descListenQueue, descMaxListenQueue, descListenQueueLength, descIdleProcesses, descActiveProcesses,
		descTotalProcesses, descMaxActiveProcesses, descMaxChildrenReached, descSlowRequests, descProcessRequests,
		descProcessLastMemory, descProcessLastCPU, descProcessDuration, descProcessState, descScrapeError, descScrapeDuration} {
		ch <- d
	}
	if sc.x.script != nil {
		describeOpcache(ch)
	}
}

func (sc *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ps := range sc.scrapes {
		name, uri := ps.name, ps.pool.uri
		send := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, t, v, append(append([]string{name}, labels...), uri)...)
		}
		send(descScrapeFailures, prometheus.CounterValue, float64(ps.failures))
		send(descScrapeDuration, prometheus.GaugeValue, ps.duration.Seconds())
		if ps.st == nil {
			send(descUp, prometheus.GaugeValue, 0)
			send(descScrapeError, prometheus.GaugeValue, 1, ps.reason)
			continue
		}
		field := func(f string) float64 {
			v, _ := ps.st.raw(f)
			n, _ := strconv.ParseFloat(string(v), 64)
			return n
		}
		active, idle := field("active processes"), field("idle processes")
		total := field("total processes")
		if sc.x.fixCount {
			a, i := countProcesses(ps.procs)
			active, idle, total = float64(a), float64(i), float64(a+i)
		}
		send(descUp, prometheus.GaugeValue, 1)
		send(descStartSince, prometheus.CounterValue, field("start since"))
		send(descAcceptedConnections, prometheus.CounterValue, field("accepted conn"))
		send(descListenQueue, prometheus.GaugeValue, field("listen queue"))
		send(descMaxListenQueue, prometheus.CounterValue, field("max listen queue"))
		send(descListenQueueLength, prometheus.GaugeValue, field("listen queue len"))
		send(descIdleProcesses, prometheus.GaugeValue, idle)
		send(descActiveProcesses, prometheus.GaugeValue, active)
		send(descTotalProcesses, prometheus.GaugeValue, total)
		send(descMaxActiveProcesses, prometheus.CounterValue, field("max active processes"))
		send(descMaxChildrenReached, prometheus.CounterValue, field("max children reached"))
		send(descSlowRequests, prometheus.CounterValue, field("slow requests"))
		for i, p := range ps.procs {
			child := strconv.Itoa(i)
			known := false
			for _, s := range fpmStates {
				v := 0.0
				if s == p.State {
					v, known = 1, true
				}
				send(descProcessState, prometheus.GaugeValue, v, child, s)
			}
			if !known {
				send(descProcessState, prometheus.GaugeValue, 1, child, p.State)
			}
			send(descProcessRequests, prometheus.CounterValue, p.Requests, child)
			send(descProcessLastMemory, prometheus.GaugeValue, p.LastRequestMemory, child)
			send(descProcessLastCPU, prometheus.GaugeValue, p.LastRequestCPU, child)
			send(descProcessDuration, prometheus.GaugeValue, p.RequestDuration, child)
		}
		if sc.x.script != nil {
			collectOpcache(ch, ps, name, uri)
		}
	}
}

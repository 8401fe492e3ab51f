package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// startExporter starts fcgi exporter on a free port with args and
// returns the URL of its /metrics and its output.
func startExporter(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	_, out := startFcgi(t, append([]string{"exporter", "--listen", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+/metrics`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if u := re.FindString(out.String()); u != "" {
			return u, out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no URL printed:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A sample is one line of an exposition.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// parseExposition reads the samples of Prometheus's text format.
func parseExposition(t *testing.T, text string) []sample {
	t.Helper()
	var out []sample
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample: %q", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[p[1]] = p[2]
		}
		out = append(out, s)
	}
	return out
}

// find returns the samples named name whose labels include want.
func find(samples []sample, name string, want map[string]string) []sample {
	var out []sample
	for _, s := range samples {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && s.labels[k] == v
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// one returns the value of the one sample find finds, failing the test
// when there is not exactly one.
func one(t *testing.T, samples []sample, name string, want map[string]string) float64 {
	t.Helper()
	got := find(samples, name, want)
	if len(got) != 1 {
		t.Fatalf("%s%v: %d samples, want 1: %v", name, want, len(got), got)
	}
	return got[0].value
}

// scrape GETs the exporter's /metrics and returns the body and how long
// the answer took.
func scrape(t *testing.T, url string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	body, err := httpGet(url)
	if err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
	return body, time.Since(start)
}

// fpmCounters are php-fpm_exporter's counters, whose names lack the
// _total Prometheus's conventions ask of a counter: the names dashboards
// use, kept by fcgi exporter.
var fpmCounters = []string{"phpfpm_scrape_failures", "phpfpm_start_since", "phpfpm_accepted_connections",
	"phpfpm_max_listen_queue", "phpfpm_max_active_processes", "phpfpm_max_children_reached",
	"phpfpm_slow_requests", "phpfpm_process_requests"}

// checkExposition runs promtool check metrics on an exposition of fcgi
// exporter: the only complaint allowed is the missing _total of
// php-fpm_exporter's counters.
func checkExposition(t *testing.T, text string) {
	t.Helper()
	bin := peer.Require(t, "promtool", "prometheus")
	out, code := promtool(t, bin, text, "check", "metrics")
	for line := range strings.Lines(out) {
		name, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !slices.Contains(fpmCounters, name) || rest != `counter metrics should have "_total" suffix` {
			t.Errorf("promtool check metrics: exit %d\n%s", code, out)
			return
		}
	}
}

// sleeper starts a request to script (a path) on the pool at addr that
// holds a worker until the test ends.
func sleeper(t *testing.T, addr, root, script string) {
	t.Helper()
	c := &fcgi.Client{Addr: addr, ResponseHeaderTimeout: -1, ReadTimeout: -1}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		resp, err := c.Do(ctx, &fcgi.Request{Params: map[string]string{
			"REQUEST_METHOD": "GET", "SCRIPT_FILENAME": root + script, "SCRIPT_NAME": script, "REQUEST_URI": script,
		}})
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		c.Close()
	})
}

// fpmStatus reads a pool's status page as PHP-FPM's JSON.
func fpmStatus(t *testing.T, addr string) map[string]any {
	t.Helper()
	res := runFcgi(t, nil, "status", "--format", "json", addr)
	if res.code != 0 {
		t.Fatalf("fcgi status %s: exit %d", addr, res.code)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitActive waits until the pool at addr says want workers are active
// (its status request among them).
func waitActive(t *testing.T, addr string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := fpmStatus(t, addr)
		if st["active processes"] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: active processes %v, want %v", addr, st["active processes"], want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestExporterSaturatedPool: of three pools of one PHP-FPM master, one
// has every worker asleep in a request. A scrape still answers within
// --timeout: the free pools up with their own pool labels, the
// saturated pool down (phpfpm_up 0, the reason timeout, a log line), and
// the same pool reported through its pm.status_listen, outside its
// queue.
func TestExporterSaturatedPool(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2, ExtraPools: []peer.PHPFPMPool{
		{Name: "api", MaxChildren: 2},
		{Name: "busy", MaxChildren: 1, StatusListen: true},
	}})
	fpm.WriteFile("sleep.php", "<?php sleep(30);")
	sleeper(t, fpm.PoolAddr("busy"), fpm.Root(), "/sleep.php")
	waitActive(t, fpm.StatusAddr("busy"), 1)

	url, out := startExporter(t, "--timeout", "1s",
		"--backend", fpm.Addr(), "--backend", fpm.PoolAddr("api"),
		"--backend", fpm.PoolAddr("busy"), "--backend", fpm.StatusAddr("busy"))
	body, took := scrape(t, url)
	if took > 2*time.Second {
		t.Errorf("the scrape took %v, --timeout 1s", took)
	}
	samples := parseExposition(t, body)
	uri := func(addr string) string { return "unix://" + strings.TrimPrefix(addr, "unix:") + ";/status" }
	for pool, addr := range map[string]string{"www": fpm.Addr(), "api": fpm.PoolAddr("api")} {
		l := map[string]string{"pool": pool, "scrape_uri": uri(addr)}
		if v := one(t, samples, "phpfpm_up", l); v != 1 {
			t.Errorf("pool %s: phpfpm_up %v", pool, v)
		}
		if v := one(t, samples, "phpfpm_total_processes", l); v != 2 {
			t.Errorf("pool %s: phpfpm_total_processes %v, want 2", pool, v)
		}
		if n := len(find(samples, "phpfpm_process_requests", l)); n != 2 {
			t.Errorf("pool %s: phpfpm_process_requests for %d children, want 2", pool, n)
		}
	}
	busy := map[string]string{"scrape_uri": uri(fpm.PoolAddr("busy"))}
	if v := one(t, samples, "phpfpm_up", busy); v != 0 {
		t.Errorf("saturated pool: phpfpm_up %v, want 0", v)
	}
	if v := one(t, samples, "phpfpm_scrape_error", map[string]string{"scrape_uri": busy["scrape_uri"], "reason": "timeout"}); v != 1 {
		t.Errorf("saturated pool: phpfpm_scrape_error %v", v)
	}
	if v := one(t, samples, "phpfpm_scrape_failures", busy); v != 1 {
		t.Errorf("saturated pool: phpfpm_scrape_failures %v, want 1", v)
	}
	if !strings.Contains(out.String(), "pool down") || !strings.Contains(out.String(), "reason=timeout") {
		t.Errorf("no log line for the saturated pool:\n%s", out.String())
	}
	status := map[string]string{"pool": "busy", "scrape_uri": uri(fpm.StatusAddr("busy"))}
	if v := one(t, samples, "phpfpm_up", status); v != 1 {
		t.Errorf("pm.status_listen: phpfpm_up %v, want 1", v)
	}
	// The status listener's worker is not the pool's: the one active
	// worker is the sleeper.
	if v := one(t, samples, "phpfpm_active_processes", status); v != 1 {
		t.Errorf("pm.status_listen: phpfpm_active_processes %v, want 1", v)
	}
	if v := one(t, samples, "phpfpm_idle_processes", status); v != 0 {
		t.Errorf("pm.status_listen: phpfpm_idle_processes %v, want 0", v)
	}
	// The exporter keeps its connection to the status listener, whose
	// workers are not used up by it: another reader gets an answer.
	if res := runFcgi(t, nil, "status", "--timeout", "2s", fpm.StatusAddr("busy")); res.code != 0 {
		t.Errorf("fcgi status on the status listener the exporter keeps a connection to: exit %d", res.code)
	}
	checkExposition(t, body)
}

// TestExporterPrometheus: a real Prometheus scrapes fcgi exporter in
// front of two pools; what it stores per pool is what PHP-FPM's status
// page says: the active workers (sleepers and the scrape's own request),
// and the accepted requests, which the first scrape's own request adds
// one to.
func TestExporterPrometheus(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2, ExtraPools: []peer.PHPFPMPool{{Name: "api", MaxChildren: 4}}})
	fpm.WriteFile("sleep.php", "<?php sleep(30);")
	fpm.WriteFile("hello.php", "<?php echo 'hello';")
	for range 5 {
		if res := runFcgi(t, nil, "call", "--root", fpm.Root(), fpm.PoolAddr("api"), "/hello.php"); res.code != 0 {
			t.Fatalf("hello.php: exit %d", res.code)
		}
	}
	sleeper(t, fpm.PoolAddr("api"), fpm.Root(), "/sleep.php")
	sleeper(t, fpm.PoolAddr("api"), fpm.Root(), "/sleep.php")
	waitActive(t, fpm.PoolAddr("api"), 3)
	want := map[string]map[string]any{"www": fpmStatus(t, fpm.Addr()), "api": fpmStatus(t, fpm.PoolAddr("api"))}

	url, _ := startExporter(t, "--backend", fpm.Addr(), "--backend", fpm.PoolAddr("api"))
	prom := peer.StartPrometheus(t, peer.PrometheusConfig{Targets: []string{strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/metrics")}})
	prom.WaitScraped(t, 30*time.Second)
	for pool, st := range want {
		q := `{pool="` + pool + `"}`
		// The first scrape follows the status read above: its own
		// request is one more.
		acc := prom.Query(t, `min_over_time(phpfpm_accepted_connections`+q+`[10m])`)
		if len(acc) != 1 || acc[0].Value != st["accepted conn"].(float64)+1 {
			t.Errorf("pool %s: phpfpm_accepted_connections %v, want the status page's %v + 1", pool, acc, st["accepted conn"])
		}
		act := prom.Query(t, `phpfpm_active_processes`+q)
		if len(act) != 1 || act[0].Value != st["active processes"].(float64) {
			t.Errorf("pool %s: phpfpm_active_processes %v, want the status page's %v", pool, act, st["active processes"])
		}
		if len(act) == 1 && act[0].Labels["scrape_uri"] != "unix://"+strings.TrimPrefix(map[string]string{"www": fpm.Addr(), "api": fpm.PoolAddr("api")}[pool], "unix:")+";/status" {
			t.Errorf("pool %s: scrape_uri %q", pool, act[0].Labels["scrape_uri"])
		}
	}
	if got := prom.Query(t, `phpfpm_active_processes{pool="api"}`); len(got) == 1 && got[0].Value != 3 {
		t.Errorf("api: %v active, want 3: two sleepers and the scrape", got[0].Value)
	}
	if got := prom.Query(t, `count(phpfpm_process_requests{pool="api"})`); len(got) != 1 || got[0].Value != 4 {
		t.Errorf("api: per-child series %v, want 4", got)
	}
	body, _ := scrape(t, url)
	checkExposition(t, body)
}

// countingProxy forwards TCP connections to addr and counts them.
func countingProxy(t *testing.T, addr string) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			b, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, b)
			mu.Unlock()
			wg.Go(func() { io.Copy(b, c); b.Close() })
			wg.Go(func() { io.Copy(c, b); c.Close() })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String(), &n
}

// TestExporterKeptConnection: by default the exporter reads a pool over a
// new connection for each scrape; with --idle-timeout, over one connection
// kept from scrape to scrape.
func TestExporterKeptConnection(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{TCP: true, MaxChildren: 2})
	for _, tc := range []struct {
		args  []string
		conns int64
	}{{nil, 3}, {[]string{"--idle-timeout", "5m"}, 1}} {
		addr, n := countingProxy(t, fpm.Addr())
		url, _ := startExporter(t, append([]string{"--backend", addr}, tc.args...)...)
		for range 3 {
			body, _ := scrape(t, url)
			if v := one(t, parseExposition(t, body), "phpfpm_up", nil); v != 1 {
				t.Fatalf("phpfpm_up %v", v)
			}
		}
		if got := n.Load(); got != tc.conns {
			t.Errorf("%v: PHP-FPM saw %d connections for 3 scrapes, want %d", tc.args, got, tc.conns)
		}
	}
}

// TestExporterLeavesWorkersToTraffic: PHP-FPM gives a kept connection a
// worker of its own, so an exporter that kept its connection to a pool's
// own socket between scrapes would take a worker from the traffic for
// good: a one-worker pool would serve nothing else. With the defaults,
// after a scrape the pool's worker serves the next request.
func TestExporterLeavesWorkersToTraffic(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	url, _ := startExporter(t, "--backend", fpm.Addr())
	body, _ := scrape(t, url)
	if v := one(t, parseExposition(t, body), "phpfpm_up", nil); v != 1 {
		t.Fatalf("phpfpm_up %v", v)
	}
	if res := runFcgi(t, nil, "ping", "--timeout", "3s", fpm.Addr()); res.code != 0 {
		t.Fatalf("after a scrape, the pool's one worker does not answer: ping exit %d, %s", res.code, res.stderr)
	}
}

// listedActive counts the workers of an exposition's phpfpm_process_state
// that are running or reading a request, as --fix-process-count does.
func listedActive(samples []sample, pool string) float64 {
	n := 0.0
	for _, s := range find(samples, "phpfpm_process_state", map[string]string{"pool": pool}) {
		if s.labels["state"] == "Running" || s.labels["state"] == "Reading headers" {
			n += s.value
		}
	}
	return n
}

// TestExporterFixProcessCount: PHP-FPM's active and idle totals are what
// its master counted at its last once-a-second round, while its list of
// workers is current. Right after a request starts, the plain exporter
// reports the stale totals (and logs that they disagree with the list);
// with --fix-process-count the figures come from the list: the sleeper
// and the scrape's own request.
func TestExporterFixProcessCount(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 6})
	fpm.WriteFile("nap.php", "<?php sleep(1);")
	fixed, _ := startExporter(t, "--backend", fpm.Addr(), "--idle-timeout", "0", "--fix-process-count")
	plain, plainOut := startExporter(t, "--backend", fpm.Addr(), "--idle-timeout", "0")
	for attempt := 1; ; attempt++ {
		// At most three naps run at once, which leaves a worker for each
		// exporter.
		time.Sleep(400 * time.Millisecond)
		sleeper(t, fpm.Addr(), fpm.Root(), "/nap.php")
		time.Sleep(50 * time.Millisecond) // it has reached a worker
		fb, _ := scrape(t, fixed)
		pb, _ := scrape(t, plain)
		f, p := parseExposition(t, fb), parseExposition(t, pb)
		www := map[string]string{"pool": "www"}
		a, i, tot := one(t, f, "phpfpm_active_processes", www), one(t, f, "phpfpm_idle_processes", www), one(t, f, "phpfpm_total_processes", www)
		if a != listedActive(f, "www") || a < 2 || a+i != 6 || tot != 6 {
			t.Fatalf("--fix-process-count: active %v idle %v total %v, listed active %v; want the list's count, the nap and the scrape among them, and 6 in all\n%s", a, i, tot, listedActive(f, "www"), fb)
		}
		if one(t, p, "phpfpm_active_processes", www) != listedActive(p, "www") {
			if !strings.Contains(plainOut.String(), "--fix-process-count counts them from the list") {
				t.Errorf("the totals disagree with the list and nothing is logged:\n%s", plainOut.String())
			}
			return
		}
		if attempt == 25 {
			t.Fatalf("in 25 tries, PHP-FPM's totals never lagged behind its list:\n%s", pb)
		}
	}
}

// TestExporterUsage: a bad command line is exit 2 before anything
// listens.
func TestExporterUsage(t *testing.T) {
	for _, args := range [][]string{
		{"exporter"},
		{"exporter", "--backend", "localhost"},
		{"exporter", "--backend", "http://127.0.0.1:9000"},
		{"exporter", "--backend", "127.0.0.1:9000", "127.0.0.1:9001"},
	} {
		if res := runFcgi(t, nil, args...); res.code != exitUsage {
			t.Errorf("fcgi %s: exit %d, want 2", strings.Join(args, " "), res.code)
		}
	}
}

// TestExporterLogsChanges: a pool that stays down is logged once, not at
// every scrape, which would fill the log through an outage; its return
// is logged once too.
func TestExporterLogsChanges(t *testing.T) {
	dir := t.TempDir()
	url, out := startExporter(t, "--backend", "unix:"+dir+"/php-fpm.sock")
	for range 3 {
		body, _ := scrape(t, url)
		if v := one(t, parseExposition(t, body), "phpfpm_up", nil); v != 0 {
			t.Fatalf("phpfpm_up %v before PHP-FPM started", v)
		}
	}
	peer.StartPHPFPM(t, peer.PHPFPMConfig{Dir: dir, MaxChildren: 1})
	for range 2 {
		body, _ := scrape(t, url)
		if v := one(t, parseExposition(t, body), "phpfpm_up", nil); v != 1 {
			t.Fatalf("phpfpm_up %v once PHP-FPM runs", v)
		}
	}
	log := out.String()
	if n := strings.Count(log, `msg="pool down"`); n != 1 {
		t.Errorf(`"pool down" logged %d times over 3 failed scrapes, want once:\n%s`, n, log)
	}
	if n := strings.Count(log, `msg="pool up again"`); n != 1 {
		t.Errorf(`"pool up again" logged %d times, want once:\n%s`, n, log)
	}
}

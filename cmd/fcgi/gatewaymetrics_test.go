package main

import (
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

// startGatewayMetrics starts fcgi gateway --metrics with args and returns
// the gateway's URL and its metrics URL.
func startGatewayMetrics(t *testing.T, args ...string) (url, metrics string) {
	t.Helper()
	_, out := startFcgi(t, append([]string{"gateway", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`(?s)(http://127\.0\.0\.1:[0-9]+/) .*metrics on (http://127\.0\.0\.1:[0-9]+/metrics)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1], m[2]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no URLs printed:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayMetricsPrometheus: a real Prometheus scrapes fcgi gateway
// --metrics in front of PHP-FPM and finds the gateway's request counter
// equal to the requests sent, the backend's counters and histograms
// agreeing, and the queue empty again; promtool accepts the exposition.
func TestGatewayMetricsPrometheus(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("index.php", `<?php usleep(20000); echo "front ", $_SERVER["REQUEST_URI"];`)
	url, murl := startGatewayMetrics(t, "--backend", fpm.Addr(), "--root", fpm.Root(), "--front-controller", "/index.php", "--max-conns", "1")
	const n = 12
	done := make(chan error, n)
	for i := range n {
		go func() {
			body, err := httpGet(url + "p/" + strconv.Itoa(i))
			if err == nil && body != "front /p/"+strconv.Itoa(i) {
				err = io.ErrUnexpectedEOF
			}
			done <- err
		}()
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	exp, _ := scrape(t, murl)
	peer.CheckMetrics(t, []byte(exp))
	backend := fpm.Addr()
	for _, want := range []string{
		"fcgikit_gateway_requests_total " + strconv.Itoa(n),
		`fcgikit_backend_requests_total{backend="` + backend + `"} ` + strconv.Itoa(n),
		`fcgikit_backend_queue_depth{backend="` + backend + `"} 0`,
		`fcgikit_backend_responses_total{backend="` + backend + `",outcome="ok"} ` + strconv.Itoa(n),
		`fcgikit_backend_request_duration_seconds_count{backend="` + backend + `"} ` + strconv.Itoa(n),
		`fcgikit_backend_first_byte_seconds_count{backend="` + backend + `"} ` + strconv.Itoa(n),
		`fcgikit_backend_errors_total{backend="` + backend + `",cause="reset"} 0`,
	} {
		if !strings.Contains(exp, want+"\n") {
			t.Errorf("exposition lacks %q", want)
		}
	}
	// Twelve requests of 20ms through one connection: most waited.
	if m := regexp.MustCompile(`fcgikit_backend_queue_waits_total\{backend="[^"]+"\} ([0-9]+)`).FindStringSubmatch(exp); m == nil || m[1] == "0" {
		t.Errorf("no queue waits counted: %v", m)
	}

	p := peer.StartPrometheus(t, peer.PrometheusConfig{Targets: []string{strings.TrimSuffix(strings.TrimPrefix(murl, "http://"), "/metrics")}})
	p.WaitScraped(t, 20*time.Second)
	got := p.Query(t, `fcgikit_gateway_requests_total`)
	if len(got) != 1 || got[0].Value != n {
		t.Errorf("Prometheus: fcgikit_gateway_requests_total = %v, want %d", got, n)
	}
	got = p.Query(t, `fcgikit_backend_queue_wait_seconds_count`)
	if len(got) != 1 || got[0].Value != n || got[0].Labels["backend"] != backend {
		t.Errorf("Prometheus: fcgikit_backend_queue_wait_seconds_count = %v, want %d for %s", got, n, backend)
	}
}

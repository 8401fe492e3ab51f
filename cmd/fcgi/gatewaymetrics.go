package main

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The metrics of fcgi gateway --metrics, documented in docs/command.md
// ("### Metrics"). Gauges and counters are read from Gateway.Stats and
// Client.Stats at each scrape; the histograms are fed by the Client's
// Observer.
const metricsPrefix = "fcgikit_"

// latencyBuckets suit PHP pages: from a millisecond to a minute, the
// gateway's default timeout.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// gatewayMetrics exports a Gateway and its Client to Prometheus.
type gatewayMetrics struct {
	g *fcgi.Gateway
	c *fcgi.Client

	wait, firstByte, total *prometheus.HistogramVec
	outcomes               *prometheus.CounterVec

	mu       sync.RWMutex
	backends map[string]*backendSeries
}

// backendSeries are the observed series of one backend, looked up once so
// that observing a request costs no label hashing.
type backendSeries struct {
	wait, firstByte, total prometheus.Observer
	outcomes               [fcgi.OutcomeError + 1]prometheus.Counter
}

func newGatewayMetrics(g *fcgi.Gateway, c *fcgi.Client) *gatewayMetrics {
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricsPrefix + name, Help: help, Buckets: latencyBuckets}, []string{"backend"})
	}
	return &gatewayMetrics{
		g:         g,
		c:         c,
		wait:      hist("backend_queue_wait_seconds", "Time requests waited for a backend connection (behind --max-conns)."),
		firstByte: hist("backend_first_byte_seconds", "Time from sending a request to the backend until its response header arrived."),
		total:     hist("backend_request_duration_seconds", "Time from sending a request to the backend until its response ended."),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricsPrefix + "backend_responses_total",
			Help: "Requests to the backend by how they ended: ok, aborted, overloaded, dial_error, reset, timeout, protocol_error, error."},
			[]string{"backend", "outcome"}),
		backends: map[string]*backendSeries{},
	}
}

// RequestDone is the Client's Observer.
func (m *gatewayMetrics) RequestDone(ri fcgi.RequestDoneInfo) {
	s := m.series(ri.Backend)
	s.wait.Observe(ri.Wait.Seconds())
	if ri.FirstByte > 0 {
		s.firstByte.Observe(ri.FirstByte.Seconds())
	}
	s.total.Observe(ri.Total.Seconds())
	if int(ri.Outcome) < len(s.outcomes) {
		s.outcomes[ri.Outcome].Inc()
	}
}

func (m *gatewayMetrics) series(backend string) *backendSeries {
	m.mu.RLock()
	s := m.backends[backend]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.backends[backend]; s == nil {
		s = &backendSeries{
			wait:      m.wait.WithLabelValues(backend),
			firstByte: m.firstByte.WithLabelValues(backend),
			total:     m.total.WithLabelValues(backend),
		}
		for o := range s.outcomes {
			s.outcomes[o] = m.outcomes.WithLabelValues(backend, fcgi.Outcome(o).String())
		}
		m.backends[backend] = s
	}
	return s
}

func gatewayDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(metricsPrefix+name, help, labels, nil)
}

var (
	descGWRequests  = gatewayDesc("gateway_requests_total", "HTTP requests the gateway served.")
	descGWInFlight  = gatewayDesc("gateway_in_flight_requests", "HTTP requests being served now.")
	descGWStatic    = gatewayDesc("gateway_static_files_total", "Requests answered with a file under --root.")
	descGWRefused   = gatewayDesc("gateway_refused_total", "Requests the gateway answered itself with an error, by reason: not_found, forbidden, bad_request, body_timeout, body_too_large, header_too_large, backend_error.", "reason")
	descGWGone      = gatewayDesc("gateway_clients_gone_total", "Requests whose client went away before its response was sent.")
	descInFlight    = gatewayDesc("backend_in_flight_requests", "Requests given to the backend and not yet ended, those waiting for a connection included.", "backend")
	descOpen        = gatewayDesc("backend_open_connections", "Connections to the backend open or being dialed.", "backend")
	descIdle        = gatewayDesc("backend_idle_connections", "Connections to the backend kept open for the next request.", "backend")
	descWaiting     = gatewayDesc("backend_queue_depth", "Requests waiting now for a backend connection (behind --max-conns).", "backend")
	descSetAside    = gatewayDesc("backend_set_aside", "1 while the backend is out of rotation after failing, else 0.", "backend")
	descRequests    = gatewayDesc("backend_requests_total", "Requests sent to the backend, retries included.", "backend")
	descWaits       = gatewayDesc("backend_queue_waits_total", "Requests that had to wait for a backend connection.", "backend")
	descWaitSeconds = gatewayDesc("backend_queue_wait_seconds_total", "Total time requests waited for a backend connection.", "backend")
	descRetries     = gatewayDesc("backend_retries_total", "Requests sent again after a failure that proves they did not run (a recycled worker, say).", "backend")
	descErrors      = gatewayDesc("backend_errors_total", "Failed backend requests by cause: overloaded (FCGI_OVERLOADED), dial, reset, timeout, protocol.", "backend", "cause")
)

// Describe sends the descriptions of the scraped metrics.
func (m *gatewayMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGWRequests, descGWInFlight, descGWStatic, descGWRefused, descGWGone,
		descInFlight, descOpen, descIdle, descWaiting, descSetAside, descRequests, descWaits, descWaitSeconds, descRetries, descErrors} {
		ch <- d
	}
	m.wait.Describe(ch)
	m.firstByte.Describe(ch)
	m.total.Describe(ch)
	m.outcomes.Describe(ch)
}

// Collect reads the gateway's and the client's figures.
func (m *gatewayMetrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gs := m.g.Stats()
	counter(descGWRequests, float64(gs.Requests))
	gauge(descGWInFlight, float64(gs.InFlight))
	counter(descGWStatic, float64(gs.StaticFiles))
	for reason, v := range map[string]int64{"not_found": gs.NotFound, "forbidden": gs.Forbidden, "bad_request": gs.BadRequests,
		"body_timeout": gs.BodyTimeouts, "body_too_large": gs.BodyTooLarge, "header_too_large": gs.HeaderTooLarge, "backend_error": gs.BackendErrors} {
		counter(descGWRefused, float64(v), reason)
	}
	counter(descGWGone, float64(gs.ClientsGone))
	for _, b := range m.c.Stats() {
		a := b.Addr
		gauge(descInFlight, float64(b.InFlight), a)
		gauge(descOpen, float64(b.OpenConnections), a)
		gauge(descIdle, float64(b.Idle), a)
		gauge(descWaiting, float64(b.Waiting), a)
		setAside := 0.0
		if b.SetAside {
			setAside = 1
		}
		gauge(descSetAside, setAside, a)
		counter(descRequests, float64(b.Requests), a)
		counter(descWaits, float64(b.WaitCount), a)
		counter(descWaitSeconds, b.WaitDuration.Seconds(), a)
		counter(descRetries, float64(b.Retries), a)
		for cause, v := range map[string]int64{"overloaded": b.Overloaded, "dial": b.DialErrors, "reset": b.ResetErrors, "timeout": b.Timeouts, "protocol": b.ProtocolErrors} {
			counter(descErrors, float64(v), a, cause)
		}
	}
	m.wait.Collect(ch)
	m.firstByte.Collect(ch)
	m.total.Collect(ch)
	m.outcomes.Collect(ch)
}

// metricsHandler serves the registry of m, with the Go runtime's and the
// process's metrics, in the text format or OpenMetrics as the scraper asks.
func (m *gatewayMetrics) handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// startMetrics makes the Client report to Prometheus and serves /metrics on
// addr, on a listener of its own so that scrapes never queue behind
// traffic. It returns the URL and a function that stops the listener.
func startMetrics(addr string, g *fcgi.Gateway, c *fcgi.Client) (url string, stop func(), err error) {
	m := newGatewayMetrics(g, c)
	c.Observer = m
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return openURL("http", l.Addr(), "/metrics"), func() { srv.Close() }, nil
}

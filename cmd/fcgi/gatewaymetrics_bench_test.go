package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/fcgikit/fcgi"
)

// benchGatewayMetrics measures the Gateway against fcgikit's own server on a
// unix socket, with the --metrics observer or without it, each request
// served as by net/http and the metrics scraped never (a scrape's cost is
// not per request).
func benchGatewayMetrics(b *testing.B, metrics bool) {
	l, err := net.Listen("unix", filepath.Join(b.TempDir(), "app.sock"))
	if err != nil {
		b.Fatal(err)
	}
	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello, world")
	})}
	go srv.Serve(l)
	defer srv.Close()
	c := &fcgi.Client{Addr: "unix:" + l.Addr().String()}
	defer c.Close()
	g := &fcgi.Gateway{Client: c, PassThrough: true}
	if metrics {
		m := newGatewayMetrics(g, c)
		c.Observer = m
		m.handler() // registers, as --metrics does
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest("GET", "/blog/post?id=1", nil)
		for pb.Next() {
			w := httptest.NewRecorder()
			g.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	})
}

// BenchmarkGatewayMetricsOff and BenchmarkGatewayMetricsOn: the cost of
// --metrics per request (BENCHMARKS.md).
func BenchmarkGatewayMetricsOff(b *testing.B) { benchGatewayMetrics(b, false) }
func BenchmarkGatewayMetricsOn(b *testing.B)  { benchGatewayMetrics(b, true) }

// BenchmarkGatewayMetricsObserve: the --metrics observer's own work per
// request, to set against a request's time in BenchmarkGatewayMetricsOff.
func BenchmarkGatewayMetricsObserve(b *testing.B) {
	c := &fcgi.Client{Addr: "unix:/nonexistent"}
	m := newGatewayMetrics(&fcgi.Gateway{Client: c}, c)
	ri := fcgi.RequestDoneInfo{Backend: c.Addr, Wait: 1000, FirstByte: 20000, Total: 30000}
	b.ReportAllocs()
	for b.Loop() {
		m.RequestDone(ri)
	}
}

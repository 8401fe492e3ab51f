package fcgi_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// fastApp is a backend for benchmarks that allocates nothing per request:
// it answers each request, once its STDIN has ended, with a fixed response.
type fastApp struct {
	ln   net.Listener
	addr string
	wg   sync.WaitGroup
	mu   sync.Mutex
	nc   []net.Conn
}

func startFastApp(b *testing.B, body string) *fastApp {
	p, addr := unixAddr(b)
	ln, err := net.Listen("unix", p)
	if err != nil {
		b.Fatal(err)
	}
	a := &fastApp{ln: ln, addr: addr}
	out := []byte("Content-Type: text/plain\r\n\r\n" + body)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.nc = append(a.nc, nc)
			a.mu.Unlock()
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer nc.Close()
				rd := wire.NewReader(nc)
				wr := wire.NewWriter(nc)
				for {
					rec, err := rd.Next()
					if err != nil {
						return
					}
					if rec.Type == wire.TypeStdin && len(rec.Content) == 0 {
						wr.WriteRecord(wire.TypeStdout, rec.RequestID, out)
						wr.WriteRecord(wire.TypeStdout, rec.RequestID, nil)
						wr.WriteEndRequest(rec.RequestID, 0, wire.StatusRequestComplete)
						if wr.Flush() != nil {
							return
						}
					}
				}
			}()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		a.mu.Lock()
		for _, nc := range a.nc {
			nc.Close()
		}
		a.mu.Unlock()
		a.wg.Wait()
	})
	return a
}

var benchParams = map[string]string{
	"REQUEST_METHOD":  "GET",
	"REQUEST_URI":     "/index.php?x=1",
	"QUERY_STRING":    "x=1",
	"SCRIPT_FILENAME": "/var/www/index.php",
	"SCRIPT_NAME":     "/index.php",
	"SERVER_PROTOCOL": "HTTP/1.1",
	"HTTP_HOST":       "example.com",
	"HTTP_USER_AGENT": "bench",
}

func benchDo(b *testing.B, c *fcgi.Client, req *fcgi.Request, buf []byte) {
	resp, err := c.Do(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	for {
		_, err := resp.Body.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	resp.Body.Close()
}

// BenchmarkClient_Get: sequential GETs on one kept connection.
func BenchmarkClient_Get(b *testing.B) {
	app := startFastApp(b, "hello, world")
	c := &fcgi.Client{Addr: app.addr}
	defer c.Close()
	req := &fcgi.Request{Params: benchParams}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		benchDo(b, c, req, buf)
	}
}

// BenchmarkClient_GetObserved: BenchmarkClient_Get with an Observer, which
// must add no allocation.
func BenchmarkClient_GetObserved(b *testing.B) {
	app := startFastApp(b, "hello, world")
	var obs countObserver
	c := &fcgi.Client{Addr: app.addr, Observer: &obs}
	defer c.Close()
	req := &fcgi.Request{Params: benchParams}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		benchDo(b, c, req, buf)
	}
	if obs.n.Load() == 0 {
		b.Fatal("observer not called")
	}
}

// countObserver counts the requests it is told of and sums their times, as a
// histogram would.
type countObserver struct {
	n, total atomic.Int64
}

func (o *countObserver) RequestDone(ri fcgi.RequestDoneInfo) {
	o.n.Add(1)
	o.total.Add(int64(ri.Total))
}

// BenchmarkClient_Post: sequential POSTs of 4 KiB.
func BenchmarkClient_Post(b *testing.B) {
	app := startFastApp(b, "ok")
	c := &fcgi.Client{Addr: app.addr}
	defer c.Close()
	body := bytes.Repeat([]byte("x"), 4096)
	rd := bytes.NewReader(body)
	req := &fcgi.Request{Params: benchParams, Body: rd}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		benchDo(b, c, req, buf)
	}
}

// BenchmarkClient_GetParallel: concurrent GETs over a pool.
func BenchmarkClient_GetParallel(b *testing.B) {
	app := startFastApp(b, "hello, world")
	c := &fcgi.Client{Addr: app.addr}
	defer c.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := &fcgi.Request{Params: benchParams}
		buf := make([]byte, 4096)
		for pb.Next() {
			benchDo(b, c, req, buf)
		}
	})
}

// BenchmarkClient_GetMultiplexed: concurrent GETs sharing one connection.
func BenchmarkClient_GetMultiplexed(b *testing.B) {
	app := startFastApp(b, "hello, world")
	c := &fcgi.Client{Addr: app.addr, Multiplex: fcgi.MultiplexOn, MaxConnsPerBackend: 1}
	defer c.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := &fcgi.Request{Params: benchParams}
		buf := make([]byte, 4096)
		for pb.Next() {
			benchDo(b, c, req, buf)
		}
	})
}

// BenchmarkGateway_Get: the gateway's own cost per request (routing,
// CGI environment, response copy) against the fast backend, without HTTP.
func BenchmarkGateway_Get(b *testing.B) {
	app := startFastApp(b, "hello, world")
	root := b.TempDir()
	os.WriteFile(filepath.Join(root, "index.php"), []byte("<?php"), 0o644)
	c := &fcgi.Client{Addr: app.addr}
	defer c.Close()
	g := &fcgi.Gateway{Client: c, Root: root, FrontController: "/index.php"}
	req := httptest.NewRequest("GET", "/blog/post?id=1", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// serveFloor serves h on l with the least HTTP/1.1 server that wrk's
// keep-alive GETs need: http.ReadRequest, the handler writing into a
// buffer, and the response in one write with a Content-Length. It is a
// measuring device, not a server (no timeouts, no request bodies, no
// streaming, no pipelining guarantees): run against the Gateway it shows
// how much of the Gateway's cost per request is net/http's server rather
// than the Gateway and the FastCGI client. It returns when l is closed,
// after its connections have ended.
func serveFloor(l net.Listener, h http.Handler) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		conns[nc] = true
		mu.Unlock()
		wg.Add(1)
		// Serves one connection until the client closes it.
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, nc)
				mu.Unlock()
				nc.Close()
			}()
			ctx := context.WithValue(context.Background(), http.LocalAddrContextKey, nc.LocalAddr())
			remote := nc.RemoteAddr().String()
			br, bw := bufio.NewReader(nc), bufio.NewWriter(nc)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				req.RemoteAddr = remote
				w := &floorWriter{h: http.Header{}}
				h.ServeHTTP(w, req.WithContext(ctx))
				if w.code == 0 {
					w.code = http.StatusOK
				}
				bw.WriteString("HTTP/1.1 " + strconv.Itoa(w.code) + " " + http.StatusText(w.code) + "\r\n")
				w.h.Set("Content-Length", strconv.Itoa(w.body.Len()))
				w.h.Write(bw)
				bw.WriteString("\r\n")
				bw.Write(w.body.Bytes())
				if bw.Flush() != nil {
					return
				}
			}
		}()
	}
}

// floorWriter is the ResponseWriter of serveFloor: it keeps everything
// for one write.
type floorWriter struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (w *floorWriter) Header() http.Header { return w.h }

func (w *floorWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *floorWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Flush does nothing: the response leaves whole.
func (w *floorWriter) Flush() {}

package fcgi_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	stdfcgi "net/http/fcgi"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

// The benchmarks below put nginx's load on a server in-process: N kept
// connections over unix sockets, one request in flight on each, request
// ID 1 reused, the parameters nginx sends for a plain GET. The client
// sends pre-encoded bytes and reads with a reused wire.Reader, so it
// allocates nothing per request: allocs/op and B/op are the server's.
//
// reads/op and writes/op are the server's read and write system calls per
// request (read, readv, write, writev, including reads that return
// EAGAIN before the goroutine parks), measured as the process's counters
// in /proc/self/io minus the client's own system calls, which the client
// makes itself through syscall.RawConn and counts. A net.Conn wrapper
// would count calls, not system calls: it cannot see reads that find no
// data, and it hides writev (net.Buffers uses it only on the standard
// connection types), which would change what it measures. Everything else
// the process does is charged to the server: eventfd writes that wake
// the network poller when a deadline is set, for instance.

var (
	helloBody = []byte("hello world\n")
	bigBody   = bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
)

// bodyHandler writes body, as both servers' handler.
func bodyHandler(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	})
}

// nginxGet is a whole request as nginx sends it on a kept connection.
var nginxGet = fcgitest.NginxGet("/hello")

// rawClient is the web server's end of one kept connection. It does its
// own system calls through syscall.RawConn so that it can count them,
// EAGAIN included, and allocates nothing per request.
type rawClient struct {
	rc    syscall.RawConn
	nc    net.Conn
	rd    *wire.Reader
	reads atomic.Int64 // read system calls
	write atomic.Int64 // write system calls

	// The callbacks handed to rc, made once so that passing them does not
	// allocate; p, n and err carry their arguments and results.
	readFn, writeFn func(fd uintptr) bool
	p               []byte
	n               int
	err             error
}

func dialRaw(addr string) (*rawClient, error) {
	nc, err := net.Dial("unix", addr)
	if err != nil {
		return nil, err
	}
	rc, err := nc.(*net.UnixConn).SyscallConn()
	if err != nil {
		nc.Close()
		return nil, err
	}
	c := &rawClient{rc: rc, nc: nc}
	c.readFn, c.writeFn = c.doRead, c.doWrite
	c.rd = wire.NewReader(c)
	return c, nil
}

func (c *rawClient) doRead(fd uintptr) bool {
	c.reads.Add(1)
	c.n, c.err = syscall.Read(int(fd), c.p)
	return c.err != syscall.EAGAIN
}

func (c *rawClient) doWrite(fd uintptr) bool {
	c.write.Add(1)
	n, err := syscall.Write(int(fd), c.p)
	if err == syscall.EAGAIN {
		return false
	}
	if n > 0 {
		c.p = c.p[n:]
	}
	c.err = err
	return err != nil || len(c.p) == 0
}

// Read implements io.Reader for the wire.Reader.
func (c *rawClient) Read(p []byte) (int, error) {
	c.p = p
	if err := c.rc.Read(c.readFn); err != nil {
		return 0, err
	}
	n, err := c.n, c.err
	c.p = nil
	if n < 0 {
		n = 0
	}
	if n == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (c *rawClient) writeAll(p []byte) error {
	c.p, c.err = p, nil
	if err := c.rc.Write(c.writeFn); err != nil {
		return err
	}
	c.p = nil
	return c.err
}

// errBadResponse is returned by do for a response it did not expect.
var errBadResponse = errors.New("bench: unexpected response")

// do sends req and reads records until END_REQUEST; it returns the number
// of STDOUT content bytes received.
func (c *rawClient) do(req []byte) (int, error) {
	if err := c.writeAll(req); err != nil {
		return 0, err
	}
	n := 0
	for {
		rec, err := c.rd.Next()
		if err != nil {
			return n, err
		}
		switch rec.Type {
		case wire.TypeStdout:
			n += len(rec.Content)
		case wire.TypeEndRequest:
			return n, nil
		case wire.TypeStderr:
		default:
			return n, errBadResponse
		}
	}
}

func (c *rawClient) close() {
	c.nc.Close()
	c.rd.Release()
}

// ioCounts returns this process's read and write system calls so far.
func ioCounts(tb testing.TB) (reads, writes int64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skipf("no system call counts: %v", err)
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		name, val, _ := bytes.Cut(s.Bytes(), []byte(": "))
		n, _ := strconv.ParseInt(string(val), 10, 64)
		switch string(name) {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

// serveFunc starts a server for h on l and returns a function that stops
// it and waits for Serve to return.
type serveFunc func(l net.Listener, h http.Handler) (stop func())

func serveFcgikit(l net.Listener, h http.Handler) func() {
	srv := &fcgi.Server{Handler: h}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	return func() { srv.Close(); <-done }
}

func serveStdlib(l net.Listener, h http.Handler) func() {
	done := make(chan struct{})
	go func() { stdfcgi.Serve(l, h); close(done) }()
	return func() { l.Close(); <-done }
}

// benchKeepConn runs the load described at the top of this file against
// the server that serve starts, with body as the response, for 1 and 8
// connections.
func benchKeepConn(b *testing.B, serve serveFunc, body []byte) {
	for _, conns := range []int{1, 8} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			runKeepConn(b, serve, body, conns)
		})
	}
}

func runKeepConn(b *testing.B, serve serveFunc, body []byte, conns int) {
	addr := filepath.Join(b.TempDir(), "s")
	l, err := net.Listen("unix", addr)
	if err != nil {
		b.Fatal(err)
	}
	stop := serve(l, bodyHandler(body))
	defer stop()

	clients := make([]*rawClient, conns)
	for i := range clients {
		c, err := dialRaw(addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.close()
		clients[i] = c
		// Warm up: the connection's goroutine and buffers exist before
		// the timer starts, as they would on a long-kept connection.
		for range 10 {
			if n, err := c.do(nginxGet); err != nil || n < len(body) {
				b.Fatalf("warm-up request: %d bytes, %v", n, err)
			}
		}
	}
	var before [2]int64
	for _, c := range clients {
		before[0] += c.reads.Load()
		before[1] += c.write.Load()
	}

	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	var left atomic.Int64
	left.Store(int64(b.N))
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	procReads, procWrites := ioCounts(b)
	b.ResetTimer()
	for _, c := range clients {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				n, err := c.do(nginxGet)
				if err == nil && n < len(body) {
					err = fmt.Errorf("short response: %d bytes", n)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	procReads2, procWrites2 := ioCounts(b)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	var clientReads, clientWrites int64
	for _, c := range clients {
		clientReads += c.reads.Load()
		clientWrites += c.write.Load()
	}
	clientReads -= before[0]
	clientWrites -= before[1]
	// ioCounts itself makes a few reads, left in: they vanish as b.N grows.
	srvReads := procReads2 - procReads - clientReads
	srvWrites := procWrites2 - procWrites - clientWrites
	b.ReportMetric(float64(srvReads)/float64(b.N), "reads/op")
	b.ReportMetric(float64(srvWrites)/float64(b.N), "writes/op")
}

func BenchmarkServer_keepConnHello(b *testing.B) { benchKeepConn(b, serveFcgikit, helloBody) }
func BenchmarkStdlib_keepConnHello(b *testing.B) { benchKeepConn(b, serveStdlib, helloBody) }

func BenchmarkServer_keepConnHello_64KiB(b *testing.B) { benchKeepConn(b, serveFcgikit, bigBody) }
func BenchmarkStdlib_keepConnHello_64KiB(b *testing.B) { benchKeepConn(b, serveStdlib, bigBody) }

package fcgi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

// countedServer is a fcgikit Server that counts the requests it serves and
// the connections it has open.
type countedServer struct {
	addr  string
	hits  atomic.Int64
	conns atomic.Int64
}

// startCounted starts a Server on addr ("127.0.0.2:PORT"), answering its
// address after a short pause, so that requests overlap.
func startCounted(t *testing.T, addr string) *countedServer {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	cs := &countedServer{addr: l.Addr().String()}
	srv := &fcgi.Server{ErrorLog: quietLog, ConnState: func(_ net.Conn, s fcgi.ConnState) {
		switch s {
		case fcgi.StateNew:
			cs.conns.Add(1)
		case fcgi.StateClosed:
			cs.conns.Add(-1)
		}
	}, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.hits.Add(1)
		io.Copy(io.Discard, r.Body)
		time.Sleep(2 * time.Millisecond)
		io.WriteString(w, cs.addr)
	})}
	serveOn(t, l, srv)
	return cs
}

// startLoopbackTrio starts three Servers on 127.0.0.1-3, on one port.
func startLoopbackTrio(t *testing.T) []*countedServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	var servers []*countedServer
	for i := 1; i <= 3; i++ {
		servers = append(servers, startCounted(t, fmt.Sprintf("127.0.0.%d:%s", i, port)))
	}
	return servers
}

// load runs requests on c from a few goroutines, GETs and POSTs whose body
// cannot be sent twice, until stop is closed, and returns what failed. params,
// if not nil, adds parameters to each request.
func load(c *fcgi.Client, stop chan struct{}, params map[string]string) (wait func() []error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				req := get("/")
				maps.Copy(req.Params, params)
				if (i+n)%2 == 0 {
					req.Params["REQUEST_METHOD"] = "POST"
					req.Params["CONTENT_LENGTH"] = "5"
					req.Body = strings.NewReader("hello")
				}
				resp, err := c.Do(context.Background(), req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	return func() []error { wg.Wait(); return errs }
}

// A "dns:" backend follows its name's A records while requests run: none
// fails, traffic moves to the new addresses, the connections to the old one
// close, and a failing resolver keeps the last good set.
func TestClientDNSBackends(t *testing.T) {
	checkLeaks(t)
	d := startDNS(t)
	s := startLoopbackTrio(t)
	_, port, _ := net.SplitHostPort(s[0].addr)
	d.SetA("php.default.svc.cluster.local", "127.0.0.1", "127.0.0.2")
	c := &fcgi.Client{
		Backends:        []string{"dns:php.default.svc.cluster.local:" + port},
		Resolver:        d.Resolver(),
		ResolveInterval: 20 * time.Millisecond,
		ErrorLog:        quietLog,
	}
	defer c.Close()
	stop := make(chan struct{})
	wait := load(c, stop, nil)
	if !eventually(func() bool { return s[0].hits.Load() > 20 && s[1].hits.Load() > 20 }) {
		t.Fatalf("hits %d/%d before the change, want both served", s[0].hits.Load(), s[1].hits.Load())
	}
	if s[0].conns.Load() == 0 {
		t.Fatal("no connection kept to 127.0.0.1")
	}
	d.SetA("php.default.svc.cluster.local", "127.0.0.2", "127.0.0.3")
	if !eventually(func() bool { return s[0].conns.Load() == 0 && s[2].hits.Load() > 20 }) {
		t.Fatalf("after the change: %d connection(s) left to 127.0.0.1, %d hits on 127.0.0.3", s[0].conns.Load(), s[2].hits.Load())
	}
	old := s[0].hits.Load()
	d.fail.Store(true)
	time.Sleep(200 * time.Millisecond) // several failed resolutions
	before := s[1].hits.Load() + s[2].hits.Load()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	if errs := wait(); len(errs) > 0 {
		t.Fatalf("%d request(s) failed, first: %v", len(errs), errs[0])
	}
	if n := s[0].hits.Load(); n != old {
		t.Errorf("127.0.0.1 served %d request(s) after it left the set", n-old)
	}
	if after := s[1].hits.Load() + s[2].hits.Load(); after <= before {
		t.Errorf("no request served while the resolver failed")
	}
	if got, want := fcgi.BackendAddrs(c), []string{"127.0.0.2:" + port, "127.0.0.3:" + port}; !slices.Equal(got, want) {
		t.Errorf("backends while the resolver fails: %v, want the last good set %v", got, want)
	}
}

// A "srv:" backend takes its ports from SRV records and their targets'
// addresses from A records; it follows changes of both.
func TestClientSRVBackends(t *testing.T) {
	checkLeaks(t)
	d := startDNS(t)
	a := startCounted(t, "127.0.0.1:0")
	b := startCounted(t, "127.0.0.1:0")
	_, pa, _ := net.SplitHostPort(a.addr)
	_, pb, _ := net.SplitHostPort(b.addr)
	d.SetA("php-0.php.default.svc.cluster.local", "127.0.0.1")
	d.SetSRV("_fcgi._tcp.php.default.svc.cluster.local", "php-0.php.default.svc.cluster.local:"+pa)
	c := &fcgi.Client{
		Addr:            "srv:_fcgi._tcp.php.default.svc.cluster.local",
		Resolver:        d.Resolver(),
		ResolveInterval: 20 * time.Millisecond,
		ErrorLog:        quietLog,
	}
	defer c.Close()
	if _, body := doString(t, c, get("/")); body != a.addr {
		t.Fatalf("served by %q, want %s", body, a.addr)
	}
	d.SetSRV("_fcgi._tcp.php.default.svc.cluster.local", "php-0.php.default.svc.cluster.local:"+pb)
	if !eventually(func() bool { return slices.Equal(fcgi.BackendAddrs(c), []string{b.addr}) }) {
		t.Fatalf("backends %v, want [%s]", fcgi.BackendAddrs(c), b.addr)
	}
	if _, body := doString(t, c, get("/")); body != b.addr {
		t.Fatalf("served by %q, want %s", body, b.addr)
	}
	if !eventually(func() bool { return a.conns.Load() == 0 }) {
		t.Errorf("%d connection(s) left to the old port", a.conns.Load())
	}
}

// A name answering thousands of addresses gives a bounded set of backends.
func TestClientDNSBackendsBounded(t *testing.T) {
	checkLeaks(t)
	d := startDNS(t)
	var ips []string
	for i := range 3000 {
		ips = append(ips, fmt.Sprintf("10.%d.%d.1", i/250, i%250))
	}
	d.SetA("big.test", ips...)
	c := &fcgi.Client{Addr: "dns:big.test:9000", Resolver: d.Resolver(), ResolveInterval: -1, ErrorLog: testLogger(t)}
	defer c.Close()
	if !eventually(func() bool { return len(fcgi.BackendAddrs(c)) > 0 }) {
		t.Fatal("the name never resolved")
	}
	if n := len(fcgi.BackendAddrs(c)); n != 256 {
		t.Errorf("%d backends from 3000 records, want 256", n)
	}
}

// A name that never resolves leaves Do with ErrNoBackend and the resolver's
// error.
func TestClientDNSNoAddress(t *testing.T) {
	checkLeaks(t)
	d := startDNS(t)
	c := &fcgi.Client{Addr: "dns:missing.test:9000", Resolver: d.Resolver(), ErrorLog: quietLog}
	defer c.Close()
	_, err := c.Do(context.Background(), get("/"))
	if !errors.Is(err, fcgi.ErrNoBackend) || !strings.Contains(err.Error(), "missing.test") {
		t.Fatalf("Do: %v, want ErrNoBackend naming the name", err)
	}
}

// A backend failing its health check is set aside until it passes one, the
// check going on its own connection; a passing check also ends a cooldown
// failed requests started.
func TestClientHealthCheck(t *testing.T) {
	checkLeaks(t)
	var sick atomic.Bool
	var pings [2]atomic.Int64
	var hits [2]atomic.Int64
	var addrs [2]string
	slow := make(chan struct{})
	var wg sync.WaitGroup
	for i := range addrs {
		addrs[i] = startServer(t, "tcp", &fcgi.Server{ErrorLog: quietLog}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/ping" {
				pings[i].Add(1)
				if i == 0 && sick.Load() {
					http.Error(w, "sick", http.StatusServiceUnavailable)
					return
				}
				io.WriteString(w, "pong")
				return
			}
			hits[i].Add(1)
			if r.URL.Path == "/slow" {
				<-slow
			}
			io.WriteString(w, "ok")
		}))
	}
	c := &fcgi.Client{
		Backends:            addrs[:],
		HealthCheckPath:     "/ping",
		HealthCheckExpect:   "pong",
		HealthCheckInterval: 20 * time.Millisecond,
		MaxConnsPerBackend:  1,
		ErrorLog:            testLogger(t),
	}
	defer c.Close()
	doString(t, c, get("/")) // the checks start with the first request
	if !eventually(func() bool { return pings[0].Load() > 0 && pings[1].Load() > 0 }) {
		t.Fatal("no health check")
	}
	// Requests holding the only connection of each backend do not hold
	// the health checks up.
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); doString(t, c, get("/slow")) }()
	}
	if !eventually(func() bool { return hits[0].Load()+hits[1].Load() >= 3 }) {
		t.Fatal("slow requests not started")
	}
	sick.Store(true)
	if !eventually(func() bool { return fcgi.BackendAside(c, addrs[0]) }) {
		t.Fatal("failing backend not set aside")
	}
	close(slow)
	wg.Wait()
	h0 := hits[0].Load()
	for range 20 {
		doString(t, c, get("/"))
	}
	if n := hits[0].Load() - h0; n != 0 {
		t.Errorf("the backend set aside served %d request(s)", n)
	}
	sick.Store(false)
	if !eventually(func() bool { return !fcgi.BackendAside(c, addrs[0]) }) {
		t.Fatal("backend not back after passing its check")
	}
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); doString(t, c, get("/")) }()
	}
	wg.Wait()
	if hits[0].Load() == h0 {
		t.Error("the recovered backend got no request")
	}
}

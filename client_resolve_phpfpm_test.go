package fcgi_test

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// poolScript writes a script, outside the pools' roots so that every pool
// runs the same file, that answers the name of the pool running it.
func poolScript(t *testing.T) map[string]string {
	path := filepath.Join(t.TempDir(), "pool.php")
	if err := os.WriteFile(path, []byte(`<?php echo getenv("POOL");`), 0o644); err != nil {
		t.Fatal(err)
	}
	return map[string]string{"SCRIPT_FILENAME": path, "SCRIPT_NAME": "/pool.php", "REQUEST_URI": "/pool.php"}
}

// startPool starts a PHP-FPM pool whose POOL variable is name.
func startPool(t *testing.T, name string, cfg peer.PHPFPMConfig) *peer.PHPFPM {
	cfg.Pool += "env[POOL] = " + name + "\n"
	cfg.MaxChildren = 2
	return peer.StartPHPFPM(t, cfg)
}

// poolOf sends one request and returns the pool that answered.
func poolOf(t *testing.T, c *fcgi.Client, params map[string]string) string {
	t.Helper()
	req := get("/pool.php")
	for k, v := range params {
		req.Params[k] = v
	}
	_, body := doString(t, c, req)
	return body
}

// A "srv:" backend moves requests between real PHP-FPM pools as its SRV
// records change under load, without a failed request.
func TestClientSRVBackendsPHPFPM(t *testing.T) {
	checkLeaks(t)
	a := startPool(t, "a", peer.PHPFPMConfig{TCP: true})
	b := startPool(t, "b", peer.PHPFPMConfig{TCP: true})
	_, pa, _ := net.SplitHostPort(a.Addr())
	_, pb, _ := net.SplitHostPort(b.Addr())
	d := startDNS(t)
	d.SetA("fpm.php.default.svc.cluster.local", "127.0.0.1")
	d.SetSRV("_fcgi._tcp.php.default.svc.cluster.local", "fpm.php.default.svc.cluster.local:"+pa)
	c := &fcgi.Client{
		Addr:               "srv:_fcgi._tcp.php.default.svc.cluster.local",
		Resolver:           d.Resolver(),
		ResolveInterval:    20 * time.Millisecond,
		MaxConnsPerBackend: 2,
		ErrorLog:           testLogger(t),
	}
	defer c.Close()
	params := poolScript(t)
	if p := poolOf(t, c, params); p != "a" {
		t.Fatalf("served by pool %q, want a", p)
	}
	stop := make(chan struct{})
	wait := load(c, stop, params)
	time.Sleep(100 * time.Millisecond)
	d.SetSRV("_fcgi._tcp.php.default.svc.cluster.local", "fpm.php.default.svc.cluster.local:"+pb)
	if !eventually(func() bool { return len(fcgi.BackendAddrs(c)) == 1 && fcgi.BackendAddrs(c)[0] == b.Addr() }) {
		t.Fatalf("backends %v, want [%s]", fcgi.BackendAddrs(c), b.Addr())
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	if errs := wait(); len(errs) > 0 {
		t.Fatalf("%d request(s) failed, first: %v", len(errs), errs[0])
	}
	for range 5 {
		if p := poolOf(t, c, params); p != "b" {
			t.Fatalf("served by pool %q after the change, want b", p)
		}
	}
}

// Health checks set a stopped PHP-FPM pool aside, without a failed request,
// and bring it back once it is started again.
func TestClientHealthCheckPHPFPM(t *testing.T) {
	checkLeaks(t)
	dir := peer.TempDir(t)
	a := startPool(t, "a", peer.PHPFPMConfig{Dir: dir})
	b := startPool(t, "b", peer.PHPFPMConfig{})
	c := &fcgi.Client{
		Backends:            []string{a.Addr(), b.Addr()},
		HealthCheckPath:     "/ping",
		HealthCheckExpect:   "pong",
		HealthCheckInterval: 50 * time.Millisecond,
		ErrorLog:            testLogger(t),
	}
	defer c.Close()
	params := poolScript(t)
	served := func(n int) map[string]int {
		got := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := poolOf(t, c, params)
				mu.Lock()
				got[p]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		return got
	}
	if got := served(20); got["a"] == 0 || got["b"] == 0 {
		t.Fatalf("served %v, want both pools", got)
	}
	a.Stop()
	if !eventually(func() bool { return fcgi.BackendAside(c, a.Addr()) }) {
		t.Fatal("stopped pool not set aside")
	}
	if got := served(20); got["b"] != 20 {
		t.Fatalf("served %v with pool a stopped, want all by b", got)
	}
	a = startPool(t, "a", peer.PHPFPMConfig{Dir: dir})
	if !eventuallyFor(5*time.Second, func() bool { return !fcgi.BackendAside(c, a.Addr()) }) {
		t.Fatal("restarted pool not back")
	}
	if got := served(20); got["a"] == 0 {
		t.Fatalf("served %v after pool a came back, want some by a", got)
	}
}

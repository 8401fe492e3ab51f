package fcgi_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

func TestClientBackends(t *testing.T) {
	checkLeaks(t)
	var hits [2]atomic.Int64
	apps := make([]*fakeApp, 2)
	for i := range apps {
		apps[i] = startFake(t, "unix", func(a *fakeApp) {
			a.Handler = func(r *fakeReq) {
				hits[i].Add(1)
				time.Sleep(20 * time.Millisecond)
				r.Write("\r\nok")
			}
		})
	}
	_, dead := unixAddr(t) // nothing listens there
	c := &fcgi.Client{Addr: dead, Backends: []string{apps[0].Addr, apps[1].Addr}, ErrorLog: quietLog, BackendCooldown: time.Minute}
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Do(context.Background(), get("/"))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	a, b := hits[0].Load(), hits[1].Load()
	if a+b != 20 || a < 5 || b < 5 {
		t.Fatalf("requests split %d/%d, want balanced", a, b)
	}
}

// A backend set aside comes back after BackendCooldown.
func TestClientBackendCooldown(t *testing.T) {
	checkLeaks(t)
	good := startFake(t, "unix", nil)
	p, late := unixAddr(t)
	c := &fcgi.Client{Backends: []string{late, good.Addr}, ErrorLog: quietLog, BackendCooldown: 100 * time.Millisecond, MaxIdleConnsPerBackend: -1}
	defer c.Close()
	for i := 0; i < 6; i++ {
		doString(t, c, get("/"))
	}
	// Now the late backend starts listening.
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			nc.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()
	for i := 0; i < 6; i++ {
		doString(t, c, get("/"))
	}
	if accepted.Load() != 0 {
		t.Fatal("set-aside backend used during its cool-down")
	}
	time.Sleep(150 * time.Millisecond)
	// The backend closes connections at once: GETs go to the other one.
	for i := 0; i < 6; i++ {
		doString(t, c, get("/"))
	}
	if accepted.Load() == 0 {
		t.Fatal("backend not tried again after its cool-down")
	}
}

package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/miekg/dns"
)

// srvDNS answers SRV records for names, whose targets are 127.0.0.1, on a
// loopback UDP port until the end of the test.
type srvDNS struct {
	addr  string
	mu    sync.Mutex
	ports map[string][]int // FQDN → ports
}

func startSRVDNS(t *testing.T) *srvDNS {
	t.Helper()
	d := &srvDNS{ports: map[string][]int{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.addr = pc.LocalAddr().String()
	started := make(chan struct{})
	s := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 5}
		d.mu.Lock()
		ports := d.ports[q.Name]
		d.mu.Unlock()
		switch {
		case q.Qtype == dns.TypeSRV:
			for _, p := range ports {
				m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr, Priority: 1, Weight: 1, Port: uint16(p), Target: "fpm.test."})
			}
		case q.Qtype == dns.TypeA && q.Name == "fpm.test.":
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 1)})
		}
		w.WriteMsg(m)
	})}
	done := make(chan struct{})
	go func() { defer close(done); s.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { s.Shutdown(); <-done })
	return d
}

func (d *srvDNS) set(name string, ports ...int) {
	d.mu.Lock()
	d.ports[dns.Fqdn(name)] = ports
	d.mu.Unlock()
}

// startNamedApp serves FastCGI on a loopback TCP port, answering name, and
// 503 to /ping while sick is set. It returns the port.
func startNamedApp(t *testing.T, name string, sick *atomic.Bool) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			if sick != nil && sick.Load() {
				http.Error(w, "sick", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "pong")
			return
		}
		io.WriteString(w, name)
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return l.Addr().(*net.TCPAddr).Port
}

// TestGatewaySRVBackends: fcgi gateway --backend srv:NAME --dns-server
// follows the SRV records, and --health-path keeps traffic off a backend
// that fails its check.
func TestGatewaySRVBackends(t *testing.T) {
	var sick atomic.Bool
	pa := startNamedApp(t, "a", &sick)
	pb := startNamedApp(t, "b", nil)
	d := startSRVDNS(t)
	d.set("_fcgi._tcp.php.test", pa)
	url := gatewayURL(t, "--backend", "srv:_fcgi._tcp.php.test", "--dns-server", d.addr,
		"--resolve-interval", "50ms", "--health-path", "/ping", "--health-interval", "50ms")
	served := func() map[string]int {
		got := map[string]int{}
		for range 10 {
			body, err := httpGet(url + "x")
			if err != nil {
				t.Fatal(err)
			}
			got[body]++
		}
		return got
	}
	if got := served(); got["a"] != 10 {
		t.Fatalf("served %v, want all by a", got)
	}
	d.set("_fcgi._tcp.php.test", pa, pb)
	deadline := time.Now().Add(5 * time.Second)
	for served()["b"] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("b never served after joining the SRV records")
		}
	}
	sick.Store(true)
	time.Sleep(300 * time.Millisecond)
	if got := served(); got["b"] != 10 {
		t.Fatalf("served %v with a failing its health check, want all by b", got)
	}
	sick.Store(false)
	d.set("_fcgi._tcp.php.test", pb)
	time.Sleep(300 * time.Millisecond)
	if got := served(); got["b"] != 10 {
		t.Fatalf("served %v after a left the SRV records, want all by b", got)
	}
}

// TestGatewayDNSBackendFlags: malformed dns:, srv: and --dns-server values
// are usage errors.
func TestGatewayDNSBackendFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--backend", "dns:php.test"},
		{"--backend", "srv:"},
		{"--backend", "srv:_fcgi._tcp.php.test", "--dns-server", "10.96.0.10"},
		{"--backend", "srv:_fcgi._tcp.php.test", "--health-interval", "0s"},
	} {
		res := runFcgi(t, nil, append([]string{"gateway"}, args...)...)
		if res.code != exitUsage {
			t.Errorf("gateway %s: exit %d, want %d\n%s", strings.Join(args, " "), res.code, exitUsage, res.stderr)
		}
	}
}

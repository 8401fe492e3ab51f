package fcgi_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// testDNS is a DNS server on loopback whose records a test changes while it
// runs: A records of names, and SRV records pointing at names and ports.
type testDNS struct {
	Addr string

	mu   sync.Mutex
	a    map[string][]string // FQDN → IPv4 addresses
	srv  map[string][]dns.SRV
	fail atomic.Bool // answer SERVFAIL to everything
}

// startDNS serves DNS over UDP and TCP on one loopback port until the end of
// the test.
func startDNS(t testing.TB) *testDNS {
	t.Helper()
	d := &testDNS{a: map[string][]string{}, srv: map[string][]dns.SRV{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.Addr = pc.LocalAddr().String()
	ln, err := net.Listen("tcp", d.Addr)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	h := dns.HandlerFunc(d.serve)
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	var wg sync.WaitGroup
	for _, s := range servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ActivateAndServe()
		}()
		<-started
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
		wg.Wait()
	})
	return d
}

// Resolver returns a resolver that asks only d.
func (d *testDNS) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, network, d.Addr)
	}}
}

// SetA replaces the A records of name.
func (d *testDNS) SetA(name string, ips ...string) {
	d.mu.Lock()
	d.a[dns.Fqdn(name)] = ips
	d.mu.Unlock()
}

// SetSRV replaces the SRV records of name: targets as "host:port".
func (d *testDNS) SetSRV(name string, targets ...string) {
	var recs []dns.SRV
	for _, t := range targets {
		host, port, _ := net.SplitHostPort(t)
		var p uint16
		for _, c := range port {
			p = p*10 + uint16(c-'0')
		}
		recs = append(recs, dns.SRV{Priority: 10, Weight: 1, Port: p, Target: dns.Fqdn(host)})
	}
	d.mu.Lock()
	d.srv[dns.Fqdn(name)] = recs
	d.mu.Unlock()
}

func (d *testDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.Compress = true
	if d.fail.Load() || len(req.Question) != 1 {
		m.Rcode = dns.RcodeServerFailure
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	hdr := func(typ uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: typ, Class: dns.ClassINET, Ttl: 5}
	}
	d.mu.Lock()
	ips, haveA := d.a[name]
	srvs, haveSRV := d.srv[name]
	d.mu.Unlock()
	switch {
	case q.Qtype == dns.TypeA && haveA:
		for _, ip := range ips {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.ParseIP(ip)})
		}
	case q.Qtype == dns.TypeSRV && haveSRV:
		for _, s := range srvs {
			s.Hdr = hdr(dns.TypeSRV)
			m.Answer = append(m.Answer, &s)
		}
	case haveA || haveSRV:
		// The name exists without records of this type (AAAA): NOERROR,
		// no answer.
	default:
		m.Rcode = dns.RcodeNameError
	}
	if udp := w.RemoteAddr().Network() == "udp"; udp {
		size := 512
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

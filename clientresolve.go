package fcgi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fcgikit/fcgi/internal/defaults"
)

// maxResolvedAddrs bounds the addresses one DNS name contributes to the
// backends, and the SRV targets looked up for it, so that a name answering
// thousands of records costs a bounded number of backends and lookups.
const maxResolvedAddrs = 256

// errBackendGone is what acquire returns for a backend that left the
// resolved set while the request waited for it: Do picks again.
var errBackendGone = errors.New("fcgi: backend left the resolved set")

// A dnsName is one backend address resolved through DNS: "dns:host:port"
// (A and AAAA records of host, all on port) or "srv:name" (the SRV records
// of name, each target's A and AAAA records on the record's port).
type dnsName struct {
	addr string // as configured, for logs
	srv  bool
	host string // the name looked up
	port string // with A/AAAA
}

// isDNSAddr reports whether addr names backends through DNS.
func isDNSAddr(addr string) bool {
	return strings.HasPrefix(addr, "dns:") || strings.HasPrefix(addr, "srv:")
}

// parseDNSAddr parses "dns:host:port" or "srv:name".
func parseDNSAddr(addr string) (dnsName, error) {
	if name, ok := strings.CutPrefix(addr, "srv:"); ok {
		if name == "" {
			return dnsName{}, fmt.Errorf("fcgi: backend %q: want srv:NAME", addr)
		}
		return dnsName{addr: addr, srv: true, host: name}, nil
	}
	rest, _ := strings.CutPrefix(addr, "dns:")
	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" || port == "" {
		return dnsName{}, fmt.Errorf("fcgi: backend %q: want dns:host:port", addr)
	}
	return dnsName{addr: addr, host: host, port: port}, nil
}

// resolveState holds the backends of a Client with DNS names: the fixed
// ones, the current members of each name, and the loop that re-resolves
// them.
type resolveState struct {
	static []*backend
	names  []dnsName
	ready  chan struct{} // closed once the first resolution is over

	mu      sync.Mutex
	members [][]*backend // members[i]: the backends of names[i], by address
	lastErr error        // the last resolution failure, for ErrNoBackend
	set     []*backend   // static and members, what pick chooses from
}

// startResolver resolves the DNS names among the configured addresses in a
// loop owned by the Client, which Close ends. Malformed names are reported
// by Do, as resolution failures.
func (c *Client) startResolver(addrs []string) {
	rs := &resolveState{static: c.backends, ready: make(chan struct{})}
	var bad error
	for _, a := range addrs {
		n, err := parseDNSAddr(a)
		if err != nil {
			bad = errors.Join(bad, err)
			continue
		}
		rs.names = append(rs.names, n)
	}
	rs.members = make([][]*backend, len(rs.names))
	rs.lastErr = bad
	rs.set = rs.static
	c.dyn = rs
	ctx, cancel := context.WithCancel(context.Background())
	c.stopLoops = append(c.stopLoops, cancel)
	c.loops.Add(1)
	go func() { // ends when Close cancels ctx
		defer c.loops.Done()
		c.resolveLoop(ctx)
	}()
}

// resolveInterval is ResolveInterval resolved: zero for never again.
func (c *Client) resolveInterval() time.Duration {
	return durationOrDefault(c.ResolveInterval, defaults.ClientResolveInterval)
}

func (c *Client) resolveLoop(ctx context.Context) {
	rs := c.dyn
	c.resolveAll(ctx)
	close(rs.ready)
	d := c.resolveInterval()
	if d == 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.resolveAll(ctx)
		}
	}
}

// resolveAll looks every name up once and installs the new set. A name whose
// lookup fails or answers no address keeps its last good members.
func (c *Client) resolveAll(ctx context.Context) {
	rs := c.dyn
	timeout := max(c.resolveInterval(), time.Second)
	if c.resolveInterval() == 0 {
		timeout = 10 * time.Second
	}
	var gone []*backend
	changed := false
	var errs error
	for i, n := range rs.names {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, err := c.lookup(lctx, n)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && len(addrs) == 0 {
			err = fmt.Errorf("fcgi: backend %s: no address", n.addr)
		}
		if err != nil {
			errs = errors.Join(errs, err)
			rs.mu.Lock()
			kept := len(rs.members[i])
			rs.mu.Unlock()
			c.logger().Warn("fcgi: resolving backends failed; keeping the last good set", "backend", n.addr, "kept", kept, "err", err)
			continue
		}
		rs.mu.Lock()
		old := rs.members[i]
		byAddr := make(map[string]*backend, len(old))
		for _, b := range old {
			byAddr[b.addr] = b
		}
		next := make([]*backend, 0, len(addrs))
		for _, a := range addrs {
			if b, ok := byAddr[a]; ok {
				next = append(next, b)
				delete(byAddr, a)
			} else {
				next = append(next, newBackend(c, a))
				changed = true
			}
		}
		for _, b := range old {
			if _, ok := byAddr[b.addr]; ok {
				gone = append(gone, b)
				changed = true
			}
		}
		rs.members[i] = next
		rs.mu.Unlock()
	}
	rs.mu.Lock()
	if errs != nil {
		rs.lastErr = errs
	}
	if changed {
		set := slices.Clone(rs.static)
		for _, m := range rs.members {
			set = append(set, m...)
		}
		rs.set = set
	}
	rs.mu.Unlock()
	// Out of the set first, so that no request picks them again, then
	// drained: requests running on them finish, idle connections close.
	for _, b := range gone {
		c.logger().Info("fcgi: backend left the resolved set; draining it", "backend", b.addr)
		b.drain()
	}
}

// lookup returns the sorted addresses ("ip:port") n stands for, at most
// maxResolvedAddrs.
func (c *Client) lookup(ctx context.Context, n dnsName) ([]string, error) {
	r := c.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	var addrs []string
	if !n.srv {
		ips, err := r.LookupIPAddr(ctx, n.host)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip.String(), n.port))
		}
	} else {
		_, srvs, err := r.LookupSRV(ctx, "", "", n.host)
		if err != nil && len(srvs) == 0 {
			return nil, err
		}
		// The lowest priority is the one in use; higher ones are fallbacks.
		// Weights are not followed: least-in-flight balances the targets.
		if len(srvs) > 0 {
			lowest := srvs[0].Priority
			for _, s := range srvs {
				lowest = min(lowest, s.Priority)
			}
			srvs = slices.DeleteFunc(srvs, func(s *net.SRV) bool { return s.Priority != lowest })
			slices.SortFunc(srvs, func(a, b *net.SRV) int {
				return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Port, b.Port))
			})
		}
		var firstErr error
		for _, s := range srvs[:min(len(srvs), maxResolvedAddrs)] {
			port := fmt.Sprint(s.Port)
			target := strings.TrimSuffix(s.Target, ".")
			if ip := net.ParseIP(target); ip != nil {
				addrs = append(addrs, net.JoinHostPort(target, port))
				continue
			}
			ips, err := r.LookupIPAddr(ctx, target)
			if err != nil {
				firstErr = cmp.Or(firstErr, err)
				continue
			}
			for _, ip := range ips {
				addrs = append(addrs, net.JoinHostPort(ip.String(), port))
			}
		}
		if len(addrs) == 0 && firstErr != nil {
			return nil, firstErr
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	return addrs[:min(len(addrs), maxResolvedAddrs)], nil
}

// current returns the backends requests are balanced over.
func (c *Client) current() []*backend {
	rs := c.dyn
	if rs == nil {
		return c.backends
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.set
}

// waitResolved waits, within ctx, for the first resolution of the Client's
// DNS names, and returns the error that leaves it without any backend.
func (c *Client) waitResolved(ctx context.Context) error {
	rs := c.dyn
	if rs == nil {
		return nil
	}
	select {
	case <-rs.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.set) == 0 {
		return fmt.Errorf("%w: %w", ErrNoBackend, rs.lastErr)
	}
	return nil
}

// retiring reports whether b's connections are to be closed as their
// requests end rather than kept: the Client is closed, or b left the
// resolved set.
func (b *backend) retiring() bool {
	return b.c.closed.Load() || b.gone.Load()
}

// drain takes b out of service: requests waiting for one of its connections
// pick another backend, idle connections close at once, and busy ones close
// when their requests end.
func (b *backend) drain() {
	b.gone.Store(true)
	b.closeIdle()
}

// stopBackground ends the Client's resolver and health-check loops and
// waits for them.
func (c *Client) stopBackground() {
	for _, stop := range c.stopLoops {
		stop()
	}
	c.loops.Wait()
}

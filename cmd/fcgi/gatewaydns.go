package main

import (
	"context"
	"errors"
	"flag"
	"net"
	"strings"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/defaults"
)

// backendFlags adds the gateway's flags for backends named by DNS and for
// health checks to fs; the function it returns applies them to c once fs is
// parsed.
func backendFlags(fs *flag.FlagSet, c *fcgi.Client) func() error {
	fs.DurationVar(&c.ResolveInterval, "resolve-interval", defaults.ClientResolveInterval, "resolve dns: and srv: backends again this often (their records' TTL)")
	dnsServer := fs.String("dns-server", "", "ask this DNS server (`host:port`) for dns: and srv: backends instead of the system's resolver")
	fs.StringVar(&c.HealthCheckPath, "health-path", "", "check each backend with a FastCGI request for this `path` (PHP-FPM's ping.path, /ping); failing ones get no traffic")
	fs.StringVar(&c.HealthCheckExpect, "health-expect", "pong", "`text` the health check's answer must contain (PHP-FPM's ping.response)")
	fs.DurationVar(&c.HealthCheckInterval, "health-interval", defaults.ClientHealthCheckInterval, "how often each backend is checked, and how long a check may take")
	return func() error {
		if c.ResolveInterval == 0 {
			c.ResolveInterval = -1 // 0 on the command line: resolve once
		}
		if c.HealthCheckInterval <= 0 {
			return errors.New("--health-interval must be positive")
		}
		if *dnsServer == "" {
			return nil
		}
		host, port, err := net.SplitHostPort(*dnsServer)
		if err != nil || host == "" || port == "" {
			return errors.New("--dns-server: want host:port, such as 10.96.0.10:53")
		}
		server := *dnsServer
		c.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
		return nil
	}
}

// checkDNSBackend checks a "dns:host:port" or "srv:name" backend; ok is
// false for other addresses.
func checkDNSBackend(addr string) (ok bool, err error) {
	if name, found := strings.CutPrefix(addr, "srv:"); found {
		if name == "" {
			return true, &addrError{addr, "no name after srv: (srv:_fcgi._tcp.php.default.svc.cluster.local)"}
		}
		return true, nil
	}
	rest, found := strings.CutPrefix(addr, "dns:")
	if !found {
		return false, nil
	}
	if host, port, err := net.SplitHostPort(rest); err != nil || host == "" || port == "" {
		return true, &addrError{addr, "want dns:host:port (dns:php.default.svc.cluster.local:9000)"}
	}
	return true, nil
}

package fcgi

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Listen opens a listener for ListenAndServe's address forms: "unix:/path"
// for a unix socket, anything else a TCP "host:port".
//
// A unix socket file left behind by a server that died is removed first;
// one that a live server still accepts on is left alone, and Listen then
// fails with the "address already in use" error.
func Listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	l, err := net.Listen("unix", path)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return l, err
	}
	if fi, serr := os.Lstat(path); serr != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil, err
	}
	if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
		c.Close()
		return nil, err
	}
	if rerr := os.Remove(path); rerr != nil {
		return nil, err
	}
	return net.Listen("unix", path)
}

// inheritedListener returns the listening socket the process was started
// with: the first one passed by systemd socket activation when LISTEN_PID
// names this process, else file descriptor 0 (FCGI_LISTENSOCK_FILENO).
func inheritedListener() (net.Listener, error) {
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err == nil && pid == os.Getpid() {
		n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("fcgi: LISTEN_FDS=%q: no socket passed by systemd", os.Getenv("LISTEN_FDS"))
		}
		// The variables are for this process only, not its children.
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
		const sdListenFdsStart = 3
		f := os.NewFile(sdListenFdsStart, "LISTEN_FD_3")
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("fcgi: systemd socket (fd 3): %w", err)
		}
		return l, nil
	}
	// Work on a duplicate: an *os.File for fd 0 itself would close it when
	// collected, taking whatever descriptor has that number by then.
	fd, err := syscall.Dup(0)
	if err != nil {
		return nil, ErrNotListener
	}
	f := os.NewFile(uintptr(fd), "stdin")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, ErrNotListener
	}
	return l, nil
}

// allowedPeers returns the addresses TCP peers must come from, nil for any.
func (s *Server) allowedPeers() ([]netip.Prefix, error) {
	s.peersOnce.Do(func() {
		if len(s.WebServerAddrs) > 0 {
			s.peers = s.WebServerAddrs
			return
		}
		if env := os.Getenv("FCGI_WEB_SERVER_ADDRS"); strings.TrimSpace(env) != "" {
			s.peers, s.peersErr = ParseWebServerAddrs(env)
		}
	})
	return s.peers, s.peersErr
}

// ParseWebServerAddrs parses a FCGI_WEB_SERVER_ADDRS value: addresses
// separated by commas (spaces allowed), IPv4 or IPv6, each optionally with
// a /bits prefix length.
func ParseWebServerAddrs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("fcgi: FCGI_WEB_SERVER_ADDRS: %w", err)
			}
			if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("fcgi: FCGI_WEB_SERVER_ADDRS: %w", err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// peerAllowed checks a TCP connection's remote address against the
// allowed web servers.
func (s *Server) peerAllowed(c net.Conn) bool {
	peers, _ := s.allowedPeers()
	if len(peers) == 0 {
		return true
	}
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return true
	}
	return prefixesContain(peers, ta.AddrPort().Addr())
}

// prefixesContain reports whether a is in one of prefixes. An IPv4 address
// and its IPv4-mapped IPv6 form (::ffff:a.b.c.d) are the same peer, however
// either side writes it: a dual-stack listener reports IPv4 peers mapped,
// and an operator may write a prefix either way (::ffff:127.0.0.0/104).
func prefixesContain(prefixes []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	mapped := a
	if a.Is4() {
		mapped = netip.AddrFrom16(a.As16())
	}
	for _, p := range prefixes {
		if p.Contains(a) || p.Contains(mapped) {
			return true
		}
	}
	return false
}

package fcgi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// defaultSocketMode is the mode of a unix socket when SocketMode is zero:
// PHP-FPM's listen.mode default.
const defaultSocketMode os.FileMode = 0o660

// A ListenConfig gives the owner, group and permissions of the unix sockets
// its Listen method creates, as PHP-FPM's listen.owner, listen.group and
// listen.mode do. The zero value is what [Listen] and [Server.ListenAndServe]
// use when nothing is set: a socket owned by the process's user and group,
// mode 0660. The fields have no effect on TCP addresses.
//
// Connecting to a unix socket takes write permission on it, so a web server
// whose workers run as another user (nginx's as www-data on Debian) needs
// either SocketOwner set to that user or SocketGroup to a group of that user,
// with the mode's write bit for it. The directory the socket is in must also
// be searchable (x) by that user, and must not be writable by others, who
// could replace the socket.
type ListenConfig struct {
	// SocketMode is the permission bits (0777 at most) of the socket file.
	// Zero means 0660, PHP-FPM's default: the owner and the group may
	// connect, nobody else. The mode is set as asked, whatever the process's
	// umask. Giving write to others (0666) lets every local user send
	// requests, with whatever variables (SCRIPT_FILENAME) they like.
	SocketMode os.FileMode

	// SocketOwner is the user that owns the socket file: a user name
	// ("www-data") or a numeric user ID ("33"). Empty means the process's
	// effective user. Changing the owner takes root (CAP_CHOWN).
	SocketOwner string

	// SocketGroup is the group of the socket file: a group name or a numeric
	// group ID. Empty means the group the file is created with: the process's
	// effective group (or the directory's, if it is set-group-ID). A process
	// that is not root may give it a group it is a member of.
	SocketGroup string
}

// Listen opens a listener for ListenAndServe's address forms: "unix:/path"
// for a unix socket, anything else a TCP "host:port". A unix socket gets the
// owner, group and mode of the ListenConfig's fields.
//
// A unix socket file left behind by a server that died (connecting to it is
// refused) is removed first; one that a live server still accepts on, or that
// this process may not connect to, is left alone, and Listen then fails with
// the "address already in use" error. The user or group names are looked up,
// and a bad mode is refused, before anything is created.
//
// On Linux the socket is bound with the mode's owner bits only, until its
// owner, group and mode are set a moment later, so it is never more open
// than asked; elsewhere it is, for that moment, as open as the umask allows.
// If setting them fails, the socket is removed.
func (lc *ListenConfig) Listen(ctx context.Context, addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		var nlc net.ListenConfig
		return nlc.Listen(ctx, "tcp", addr)
	}
	perm, err := lc.socketPerm()
	if err != nil {
		return nil, err
	}
	l, err := perm.listen(ctx, path)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return l, err
	}
	if fi, serr := os.Lstat(path); serr != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil, err
	}
	// Only a refused connection means nobody listens: a socket we may not
	// connect to (EACCES, another user's) or whose backlog is full (EAGAIN)
	// may well have a live server behind it.
	d := net.Dialer{Timeout: time.Second}
	c, derr := d.DialContext(ctx, "unix", path)
	if derr == nil {
		c.Close()
	}
	if !errors.Is(derr, syscall.ECONNREFUSED) {
		return nil, err
	}
	if rerr := os.Remove(path); rerr != nil {
		return nil, err
	}
	return perm.listen(ctx, path)
}

// Listen opens a listener for ListenAndServe's address forms: "unix:/path"
// for a unix socket, anything else a TCP "host:port". It is
// [ListenConfig.Listen] with the zero ListenConfig: a unix socket has mode
// 0660 and the process's user and group.
func Listen(addr string) (net.Listener, error) {
	var lc ListenConfig
	return lc.Listen(context.Background(), addr)
}

// socketPerm is a ListenConfig resolved: the mode, and the IDs to give the
// socket file, -1 for those left as created.
type socketPerm struct {
	mode     os.FileMode
	uid, gid int
}

func (lc *ListenConfig) socketPerm() (socketPerm, error) {
	p := socketPerm{mode: lc.SocketMode, uid: -1, gid: -1}
	if p.mode == 0 {
		p.mode = defaultSocketMode
	}
	if p.mode&^os.ModePerm != 0 {
		return p, fmt.Errorf("fcgi: SocketMode %#o: only permission bits (0777) are allowed", uint32(p.mode))
	}
	var err error
	if lc.SocketOwner != "" {
		if p.uid, err = lookupID(lc.SocketOwner, func(name string) (string, error) {
			u, err := user.Lookup(name)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		}); err != nil {
			return p, fmt.Errorf("fcgi: SocketOwner: %w", err)
		}
	}
	if lc.SocketGroup != "" {
		if p.gid, err = lookupID(lc.SocketGroup, func(name string) (string, error) {
			g, err := user.LookupGroup(name)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		}); err != nil {
			return p, fmt.Errorf("fcgi: SocketGroup: %w", err)
		}
	}
	return p, nil
}

// lookupID returns the numeric ID s is, or that lookup finds for the name s.
// A number is taken as is, with or without an account, as chown(1) does.
func lookupID(s string, lookup func(string) (string, error)) (int, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil && n != 1<<32-1 {
		return int(n), nil
	}
	id, err := lookup(s)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(id)
}

// bind creates the socket file at path, listening, with mode p.mode's owner
// bits only, less the umask (where the system honours a socket's mode set
// before bind(2), as Linux does).
func (p socketPerm) bind(ctx context.Context, path string) (net.Listener, error) {
	nlc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		// Best effort: a system that refuses leaves the umask's mode, which
		// apply corrects a moment later.
		return c.Control(func(fd uintptr) { fchmodSocket(fd, p.mode&0o700) })
	}}
	return nlc.Listen(ctx, "unix", path)
}

// listen binds the socket at path and gives it its owner, group and mode.
func (p socketPerm) listen(ctx context.Context, path string) (net.Listener, error) {
	l, err := p.bind(ctx, path)
	if err != nil {
		return nil, err
	}
	if err := p.apply(path); err != nil {
		l.Close() // removes the socket file
		return nil, err
	}
	return l, nil
}

// apply sets the owner, group and mode of the socket file just bound at path.
// The owner and group change first: the full mode is for them.
func (p socketPerm) apply(path string) error {
	// The directory is the operator's to keep safe; still, refuse to chmod
	// what is no longer a socket (chmod follows symbolic links).
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("fcgi: socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("fcgi: socket %s: replaced by a %v after bind", path, fi.Mode().Type())
	}
	if p.uid >= 0 || p.gid >= 0 {
		if err := os.Lchown(path, p.uid, p.gid); err != nil {
			return fmt.Errorf("fcgi: socket owner: %w", err)
		}
	}
	if err := os.Chmod(path, p.mode); err != nil {
		return fmt.Errorf("fcgi: socket mode: %w", err)
	}
	return nil
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
	fd, err := dupStdin()
	if err != nil {
		return nil, ErrNotListener
	}
	f := os.NewFile(fd, "stdin")
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
// separated by commas (spaces allowed), IPv4 or IPv6, each optionally with a
// /bits prefix length.
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

// peerAllowed checks a TCP connection's remote address against the allowed
// web servers.
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
// either side writes it: a dual-stack listener reports IPv4 peers mapped, and
// an operator may write a prefix either way (::ffff:127.0.0.0/104).
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

package fcgi

import (
	"errors"
	"net"
	"os"
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

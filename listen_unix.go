//go:build unix

package fcgi

import (
	"os"
	"syscall"
)

// fchmodSocket sets the mode of a socket not yet bound, which Linux gives
// the socket file bind(2) makes.
func fchmodSocket(fd uintptr, mode os.FileMode) { syscall.Fchmod(int(fd), uint32(mode)) }

// dupStdin returns a duplicate of file descriptor 0, where a FastCGI
// application finds its listening socket (FCGI_LISTENSOCK_FILENO).
func dupStdin() (uintptr, error) {
	fd, err := syscall.Dup(0)
	return uintptr(fd), err
}

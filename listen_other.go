//go:build !unix

package fcgi

import (
	"errors"
	"os"
)

// fchmodSocket does nothing: a socket file's mode is set after bind, by
// socketPerm.apply, where the system has one.
func fchmodSocket(uintptr, os.FileMode) {}

// dupStdin fails: on this system a web server does not pass a listening
// socket as standard input, and net.FileListener could not take it.
func dupStdin() (uintptr, error) { return 0, errors.ErrUnsupported }

package fcgi_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi"
)

// TestDialErrorSaysAddressOnce: a refused TCP connection and a missing
// socket file name the address once in the error text, and the error
// still matches ErrDial.
func TestDialErrorSaysAddressOnce(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:1", "unix:" + filepath.Join(t.TempDir(), "x.sock")} {
		c := &fcgi.Client{Backends: []string{addr}}
		_, err := c.Do(context.Background(), &fcgi.Request{Params: map[string]string{"REQUEST_METHOD": "GET"}})
		c.Close()
		if !errors.Is(err, fcgi.ErrDial) {
			t.Fatalf("%s: %v, want ErrDial", addr, err)
		}
		a := strings.TrimPrefix(addr, "unix:")
		if n := strings.Count(err.Error(), a); n != 1 {
			t.Errorf("%s: %q names the address %d times", addr, err, n)
		}
	}
}

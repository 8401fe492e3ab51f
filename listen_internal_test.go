package fcgi

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// Between bind and the chown and chmod that follow it, the socket has
// the mode's owner bits only, so nobody but the process's user may
// connect in that moment (Linux honours a socket's mode set before
// bind(2); the umask can only narrow it further).
func TestBindOwnerBitsOnly(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux gives the socket file the mode set before bind(2)")
	}
	umask := syscall.Umask(0o022)
	syscall.Umask(umask)
	for _, mode := range []os.FileMode{0o660, 0o666, 0o777, 0o640} {
		path := filepath.Join(t.TempDir(), "s")
		p := socketPerm{mode: mode, uid: -1, gid: -1}
		l, err := p.bind(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		want := mode & 0o700 &^ os.FileMode(umask)
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode %#o: socket %#o right after bind, want %#o", mode, got, want)
		}
		if err := p.apply(path); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Lstat(path); fi.Mode().Perm() != mode {
			t.Errorf("mode %#o: socket %#o after apply", mode, fi.Mode().Perm())
		}
		l.Close()
	}
}

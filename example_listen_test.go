package fcgi_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fcgikit/fcgi"
)

// A ListenConfig makes a unix socket with the mode, owner and group it
// is given, whatever the umask, for a listener passed to Serve.
// SocketGroup: "www-data" would let nginx's workers connect.
func ExampleListenConfig() {
	dir, err := os.MkdirTemp("", "fcgi-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "app.sock")

	lc := fcgi.ListenConfig{SocketMode: 0o600}
	l, err := lc.Listen(context.Background(), "unix:"+sock)
	if err != nil {
		panic(err)
	}
	defer l.Close()
	fi, err := os.Stat(sock)
	if err != nil {
		panic(err)
	}
	fmt.Println(fi.Mode())
	// Output:
	// Srw-------
}

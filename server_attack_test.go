package fcgi_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
)

// MaxConns bounds the connections of the Server, not of each listener it
// serves: with MaxConns 1 and two listeners, a connection on the second
// waits while one on the first is served.
func TestMaxConnsAcrossListeners(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	srv := &fcgi.Server{MaxConns: 1, ErrorLog: quietLog, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		io.WriteString(w, "ok")
	})}
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, l, srv)
		addrs = append(addrs, l.Addr().String())
	}
	defer close(release)
	first := dial(t, "tcp", addrs[0])
	first.Get(1, true, "/hold")
	if !eventually(func() bool { return srv.Stats().InFlight == 1 }) {
		t.Fatal("first request not in flight")
	}
	second := dial(t, "tcp", addrs[1])
	second.Timeout = 500 * time.Millisecond
	second.Get(1, true, "/second")
	if rec, err := second.TryNext(); err == nil {
		t.Fatalf("a second connection was served with MaxConns 1: %v (stats %+v)", rec, srv.Stats())
	}
	if n := srv.Stats().Conns; n != 1 {
		t.Fatalf("%d connections open, want 1", n)
	}
	// Once the first ends, the second is served.
	release <- struct{}{}
	first.ReadResponse(1)
	first.NC.Close()
	second.Timeout = 10 * time.Second
	if _, body := parseCGI(t, second.ReadResponse(1).Stdout); !strings.HasPrefix(body, "ok") {
		t.Fatalf("second: %q", body)
	}
}

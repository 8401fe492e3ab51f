package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/benchmarks/internal/benchutil"
)

var (
	helloBody = []byte("hello world\n")
	bigBody   = bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
)

// handler is the backend's handler: 64 KiB for paths containing "64k",
// else 12 bytes.
var handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, "64k") {
		w.Write(bigBody)
		return
	}
	w.Write(helloBody)
})

// sizes are the two responses: the script each is asked for, and its body.
var sizes = []struct {
	name, script string
	body         []byte
}{
	{"12 B", "/hello.php", helloBody},
	{"64 KiB", "/64k.php", bigBody},
}

// serveBackend is the child process: fcgikit's server on the unix socket
// sock, net/http's server with the same handler on sock+".http" (for the
// HTTP proxies the Gateway is compared with), and on sock+".n" a counter
// of the FastCGI connections accepted so far (each connection there gets
// the number and is closed). It returns on SIGTERM or SIGINT.
func serveBackend(sock string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	cl := &countingListener{Listener: l}
	srv := &fcgi.Server{Handler: handler}
	go srv.Serve(cl)
	defer srv.Close()

	hl, err := net.Listen("unix", sock+".http")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: handler}
	go hs.Serve(hl)
	defer hs.Close()

	nl, err := net.Listen("unix", sock+".n")
	if err != nil {
		return err
	}
	defer nl.Close()
	go func() {
		for {
			c, err := nl.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%d\n", cl.n.Load())
			c.Close()
		}
	}()
	<-ctx.Done()
	return nil
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// backend is the child process serving FastCGI on sock.
type backend struct {
	*benchutil.Proc // Pgid, for GroupCPU; Stop
	sock            string
}

// startBackend runs this program again as the backend (flag -backend), in
// its own process group, so that the client's memory statistics count the
// client alone, and returns once it accepts connections.
func startBackend(ctx context.Context, sock string) (*backend, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-backend", sock)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	b := &backend{sock: sock}
	b.Proc, err = benchutil.StartProc(ctx, "backend", cmd, 10*time.Second, func() error {
		_, err := b.accepted()
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// accepted returns the number of FastCGI connections the backend has
// accepted so far.
func (b *backend) accepted() (int64, error) {
	c, err := net.DialTimeout("unix", b.sock+".n", time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(line), 10, 64)
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

var gatewayCmd = &command{
	name:    "gateway",
	summary: "serve HTTP from FastCGI applications; with no backend, a built-in demo",
	usage: `
Usage: fcgi gateway [flags]

Gateway is an HTTP server in front of FastCGI applications, the part of
nginx that speaks FastCGI: each HTTP request becomes a FastCGI request
with the CGI variables nginx sends, to the --backend addresses in turn.
With --root, existing files are served directly and other paths go to
--index (a front controller such as index.php), or to the path itself
when it ends in --ext.

With no --backend it starts a demo: fcgikit's own FastCGI server, in this
process, on a unix socket in a temporary directory, and the gateway in
front of it, so the whole path (HTTP -> gateway -> FastCGI -> application)
runs on a fresh machine. Open the URL it prints.

This version opens one FastCGI connection per request and buffers each
response; it will move to fcgikit's pooled Gateway once that is merged.

Examples:

	go run github.com/fcgikit/fcgi/cmd/fcgi@latest gateway
	fcgi gateway --listen :8080 --backend unix:/run/php/php8.2-fpm.sock --root /srv/app/public --index /index.php

Exit status: 0 after SIGTERM, 1 if the listener could not be opened.
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		g := &gateway{}
		listen := fs.String("listen", "127.0.0.1:8080", "HTTP listen `address`")
		var backends stringList
		fs.Var(&backends, "backend", "FastCGI backend `address` (repeatable; round robin)")
		fs.StringVar(&g.root, "root", "", "document root: static files, and SCRIPT_FILENAME")
		fs.StringVar(&g.index, "index", "", "front controller `path` for requests that are not files (e.g. /index.php)")
		fs.StringVar(&g.ext, "ext", ".php", "paths ending in this go to FastCGI as scripts")
		fs.DurationVar(&g.timeout, "timeout", 60*time.Second, "FastCGI request timeout")
		fs.Int64Var(&g.maxBody, "max-body", 32<<20, "largest request body, in bytes")
		return func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usageError(e, fs, "unexpected argument %q", args[0])
			}
			g.log = e.log
			g.backends = backends
			if len(g.backends) == 0 {
				addr, stop, err := startDemo(e)
				if err != nil {
					return err
				}
				defer stop()
				g.backends = []string{addr}
				g.demo = true
			}
			l, err := net.Listen("tcp", *listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second}
			url := "http://" + l.Addr().String() + "/"
			if g.demo {
				fmt.Fprintf(e.stdout, "fcgi gateway: demo application on %s\nOpen %s\n", g.backends[0], url)
			} else {
				fmt.Fprintf(e.stdout, "fcgi gateway: %s -> %s\n", url, strings.Join(g.backends, ", "))
			}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(l) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = srv.Shutdown(sctx)
			<-errc
			return err
		}
	},
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// startDemo serves the demo application with fcgikit's server on a unix
// socket in a new temporary directory.
func startDemo(e *env) (addr string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "fcgi-demo-")
	if err != nil {
		return "", nil, err
	}
	sock := filepath.Join(dir, "demo.sock")
	l, err := fcgi.Listen("unix:" + sock)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	srv := &fcgi.Server{Handler: demoHandler(), ErrorLog: e.log}
	done := make(chan struct{})
	// Serves until stop; stop waits for it.
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	return "unix:" + sock, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
		<-done
		os.RemoveAll(dir)
	}, nil
}

type gateway struct {
	backends []string
	demo     bool
	root     string
	index    string
	ext      string
	timeout  time.Duration
	maxBody  int64
	log      *slog.Logger
	next     atomic.Uint64
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	upath := path.Clean("/" + r.URL.Path)
	script := upath
	if g.root != "" {
		file := filepath.Join(g.root, filepath.FromSlash(upath))
		fi, err := os.Stat(file)
		isScript := g.ext != "" && strings.HasSuffix(upath, g.ext)
		switch {
		case err == nil && !fi.IsDir() && !isScript:
			http.ServeFile(w, r, file)
			return
		case isScript && err == nil:
		case g.index != "":
			script = g.index
		default:
			http.NotFound(w, r)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.maxBody))
	if err != nil {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	host, port, _ := net.SplitHostPort(r.RemoteAddr)
	root := g.root
	if root == "" {
		root = "/"
	}
	rp := requestParams{
		method: r.Method,
		target: "http://" + r.Host + r.URL.RequestURI(),
		root:   root,
		body:   -1,
		extra: paramList{
			{"SCRIPT_NAME", script},
			{"SCRIPT_FILENAME", filepath.Join(root, filepath.FromSlash(script))},
			{"REQUEST_URI", r.URL.RequestURI()},
			{"SERVER_PROTOCOL", r.Proto},
			{"REMOTE_ADDR", host},
			{"REMOTE_PORT", port},
			{"SERVER_SOFTWARE", "fcgikit-gateway"},
		},
	}
	if len(body) > 0 || r.ContentLength >= 0 && r.Method != "GET" && r.Method != "HEAD" {
		rp.body = int64(len(body))
	}
	if script != upath {
		rp.extra = append(rp.extra, [2]string{"PATH_INFO", ""})
	}
	for k, vs := range r.Header {
		rp.header = append(rp.header, [2]string{k, strings.Join(vs, ", ")})
	}
	kv, err := rp.pairs()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	backend := g.backends[g.next.Add(1)%uint64(len(g.backends))]
	resp, err := roundTrip(r.Context(), backend, wire.RoleResponder, kv, body, g.timeout)
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, errBusy) {
			code = http.StatusGatewayTimeout
		}
		g.log.Warn("backend failed", "backend", backend, "uri", r.RequestURI, "err", err)
		http.Error(w, http.StatusText(code), code)
		return
	}
	if len(resp.stderr) > 0 {
		g.log.Warn("backend stderr", "backend", backend, "uri", r.RequestURI, "stderr", string(resp.stderr))
	}
	cr, err := parseCGI(resp.stdout)
	if err != nil || resp.end.ProtocolStatus != wire.StatusRequestComplete {
		g.log.Warn("bad backend response", "backend", backend, "err", err, "status", resp.end.ProtocolStatus.String())
		http.Error(w, http.StatusText(http.StatusBadGateway), http.StatusBadGateway)
		return
	}
	for _, h := range cr.header {
		w.Header().Add(h[0], h[1])
	}
	w.WriteHeader(cr.status)
	w.Write(cr.body)
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/fcgikit/fcgi"
)

var demoAppCmd = &command{
	name:    "demo-app",
	summary: "serve a small demo FastCGI application",
	hidden:  true,
	usage: `
Usage: fcgi demo-app [--listen ADDR]

Demo-app serves a small FastCGI application built on fcgikit's Server: a
page that shows the request as the application received it. Without
--listen it serves the socket it was started with (fd 0, or systemd's
LISTEN_FDS), as spawned by 'fcgi spawn' or spawn-fcgi. It is the
application behind 'fcgi gateway' without --backend, and is used in tests.

Paths: / (the page), /env (plain-text variables), /echo (the request
body echoed), /sleep?d=DURATION, /status/CODE, /pid, /id (the process's
user, group, supplementary groups and working directory).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		listen := fs.String("listen", "", "listen `address` (unix:/path or host:port); default: inherited socket")
		return func(ctx context.Context, args []string) error {
			var l net.Listener
			if *listen != "" {
				var err error
				if l, err = fcgi.Listen(fcgiAddr(*listen)); err != nil {
					return err
				}
			}
			srv := &fcgi.Server{Handler: demoHandler(), ErrorLog: e.log}
			return serveUntil(ctx, e, srv, l)
		}
	},
}

// serveUntil runs srv on l until ctx is cancelled, then shuts it down
// gracefully, giving requests 10 seconds to finish.
func serveUntil(ctx context.Context, e *env, srv *fcgi.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	e.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, fcgi.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// demoHandler is the demo application.
func demoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html>\n<title>fcgikit demo</title>\n<h1>Hello from fcgikit</h1>\n"+
			"<p>This page was made by a FastCGI application (pid %d) built on github.com/fcgikit/fcgi.</p>\n"+
			"<p>%s %s %s from %s</p>\n<h2>FastCGI variables</h2>\n<pre>\n", os.Getpid(),
			html.EscapeString(r.Method), html.EscapeString(r.RequestURI), html.EscapeString(r.Proto), html.EscapeString(r.RemoteAddr))
		writeEnv(w, r, true)
		fmt.Fprint(w, "</pre>\n<p>Try <a href=\"/env\">/env</a>, <a href=\"/status/418\">/status/418</a>, <a href=\"/sleep?d=1s\">/sleep?d=1s</a>.</p>\n")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		writeEnv(w, r, false)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(b)
	})
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", os.Getpid())
	})
	mux.HandleFunc("/id", func(w http.ResponseWriter, r *http.Request) {
		groups, _ := os.Getgroups()
		wd, _ := os.Getwd()
		fmt.Fprintf(w, "uid=%d gid=%d groups=%v cwd=%s\n", os.Getuid(), os.Getgid(), groups, wd)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case <-time.After(min(d, time.Minute)):
			fmt.Fprintf(w, "slept %v\n", d)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		var code int
		if _, err := fmt.Sscan(r.PathValue("code"), &code); err != nil || code < 200 || code > 999 {
			http.Error(w, "bad status", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d\n", code)
	})
	return mux
}

func writeEnv(w io.Writer, r *http.Request, escape bool) {
	esc := func(s string) string {
		if escape {
			return html.EscapeString(s)
		}
		return s
	}
	env := fcgi.ProcessEnv(r)
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s=%s\n", esc(k), esc(env[k]))
	}
	hk := make([]string, 0, len(r.Header))
	for k := range r.Header {
		hk = append(hk, k)
	}
	sort.Strings(hk)
	for _, k := range hk {
		fmt.Fprintf(w, "header %s: %s\n", esc(k), esc(r.Header.Get(k)))
	}
}

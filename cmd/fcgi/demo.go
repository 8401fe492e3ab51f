package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/fcgikit/fcgi"
)

var demoAppCmd = &command{
	name:    "demo-app",
	serves:  true,
	summary: "serve a small demo FastCGI application",
	hidden:  true,
	usage: `
Usage: fcgi demo-app [--listen ADDR]

Demo-app serves a small FastCGI application built on fcgikit's Server: a
page that shows the request as the application received it. Without
--listen it serves the socket it was started with (fd 0, or systemd's
LISTEN_FDS), as spawned by 'fcgi spawn' or spawn-fcgi. It is the
application behind 'fcgi gateway' without --backend, and is used in tests.

Paths: / (the page, which links all the others), /env (the whole CGI
environment, as plain text), /echo (the request body echoed),
/sleep?d=DURATION (an answer after that long, a minute at most; 400 for
anything else), /status/CODE, /pid, /id (the process's user, group,
supplementary groups and working directory).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		listen := fs.String("listen", "", "listen `address` (unix:/path or host:port); default: inherited socket")
		return func(ctx context.Context, args []string) error {
			var l net.Listener
			if *listen != "" {
				if err := listenFlag(e, fs, *listen); err != nil {
					return err
				}
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

// demoPages are the demo's pages that answer a GET, as its front page
// lists them; /echo has a form of its own there.
var demoPages = []struct{ href, what string }{
	{"/env", "the whole CGI environment, as the web server sent it"},
	{"/sleep?d=1s", "an answer after d (a duration, a minute at most)"},
	{"/status/418", "a response with that status"},
	{"/pid", "the application's process ID"},
	{"/id", "the application's user, groups and working directory"},
}

// maxDemoSleep bounds /sleep.
const maxDemoSleep = time.Minute

// demoHandler is the demo application.
func demoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html>\n<title>fcgikit demo</title>\n<h1>Hello from fcgikit</h1>\n"+
			"<p>This page was made by a FastCGI application (pid %d) built on github.com/fcgikit/fcgi.</p>\n"+
			"<p>%s %s %s from %s</p>\n<h2>Pages</h2>\n<ul>\n", os.Getpid(),
			html.EscapeString(r.Method), html.EscapeString(r.RequestURI), html.EscapeString(r.Proto), html.EscapeString(r.RemoteAddr))
		for _, p := range demoPages {
			fmt.Fprintf(w, "<li><a href=\"%[1]s\">%[1]s</a>: %s</li>\n", html.EscapeString(p.href), html.EscapeString(p.what))
		}
		fmt.Fprint(w, "<li><form method=\"post\" action=\"/echo\"><input name=\"text\" value=\"hello\"> "+
			"<button>POST /echo</button>: the request body echoed</form></li>\n</ul>\n<h2>CGI environment</h2>\n<pre>\n")
		writeEnv(w, r, true)
		fmt.Fprint(w, "</pre>\n")
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
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 || d > maxDemoSleep {
			http.Error(w, fmt.Sprintf("want ?d=DURATION, from 0 to %v: 250ms, 2s", maxDemoSleep), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(d):
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

// writeEnv writes every FastCGI variable of r, the whole CGI
// environment, sorted, one NAME=VALUE a line.
func writeEnv(w io.Writer, r *http.Request, escape bool) {
	env := fcgi.Params(r)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		line := k + "=" + env[k] + "\n"
		if escape {
			line = html.EscapeString(line)
		}
		io.WriteString(w, line)
	}
}

package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/cmd/fcgi/internal/cgiexec"
	"github.com/fcgikit/fcgi/cmd/fcgi/internal/reap"
)

var wrapCmd = &command{
	name:    "wrap",
	serves:  true,
	summary: "run CGI scripts for a web server over FastCGI (fcgiwrap)",
	usage: `
Usage: fcgi wrap [flags]

Wrap is a FastCGI server that runs CGI scripts, as fcgiwrap does: for each
request it runs the program named by the SCRIPT_FILENAME parameter (or
--script), with the CGI/1.1 environment built from the request's FastCGI
parameters, the request body on its standard input, and its standard
output parsed as a CGI response and streamed back.

Each script runs in a process group of its own. The whole group - the
script and everything it started - is killed when --timeout passes, when
the web server aborts the request or closes the connection (a client that
went away), and when the script exits; no process outlives its request.
What the script leaves comes to wrap, a subreaper, which reaps it: wrap
can be PID 1 of a container without an init.
The script's standard error is logged here, one record per line, and
sent to the web server on the request's FCGI_STDERR stream, which it
writes to its error log (nginx: "FastCGI sent in stderr"). What the
script writes there before its response header waits for the header (64
KiB of it; the rest is only logged here): nginx fails a response whose
header comes after more STDERR records than its buffer holds, with 502
and "upstream sent too big header".

The response goes to the web server once the script has read its whole
body, closed its standard input or exited, as with fcgiwrap: nginx sends
no more of the body once it has the response header, so a script that
writes the start of its response before it reads its body would
otherwise wait for the rest for ever. Meanwhile what the script writes
waits in its pipe; a script that writes more than a pipe holds (64 KiB)
before it reads its body, or never reads a body larger than that and
keeps running, is stuck until --timeout. A body cut short (the web
server went away, or sent less than CONTENT_LENGTH) kills the script's
group before its standard input closes, so that it never takes part of
its body for the whole; the client gets 400 Bad Request.

At most --max scripts run at once; further requests wait for a slot.
SIGTERM (or SIGINT) stops accepting connections and lets running scripts
finish for --grace, then kills them; a second SIGTERM or SIGINT kills
them at once (exit status 1). SIGHUP is logged and otherwise
ignored: each request runs its script afresh, so there is nothing to
reload.

The script's environment is every FastCGI parameter the web server sent,
as it sent it (but HTTP_PROXY, for httpoxy), with --env added. When the
web server sends no PATH_INFO or SCRIPT_NAME (nginx's fastcgi_params has
no PATH_INFO), wrap derives it from the request path: when
SCRIPT_FILENAME lies under DOCUMENT_ROOT, SCRIPT_NAME is its part below
the root and PATH_INFO the rest of the path; otherwise (git-http-backend,
say) SCRIPT_NAME is empty and PATH_INFO is the whole path.

A unix socket made by --listen has mode --socket-mode (default 0660, as
PHP-FPM's listen.mode) and is owned by --socket-user and --socket-group
(default: wrap's own), so that a web server running as another user can
connect: connecting takes write permission. For nginx on Debian, whose
workers run as www-data: --socket-group www-data. spawn-fcgi's letters
work as short names, as in fcgi spawn: -M, -U and -G.

Examples:

	fcgi wrap --listen unix:/run/fcgiwrap.sock --max 8 --timeout 5m
	fcgi wrap --listen unix:/run/fcgiwrap.sock -G www-data -M 0660
	fcgi wrap --listen 127.0.0.1:9001 --root /usr/lib/cgi-bin

nginx in front of git-http-backend (git clone and push over HTTP):

	location ~ ^/[^/]+\.git/ {
	    fastcgi_pass unix:/run/fcgiwrap.sock;
	    include fastcgi_params;
	    fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
	    fastcgi_param GIT_PROJECT_ROOT /srv/git;
	    fastcgi_param GIT_HTTP_EXPORT_ALL "";
	    fastcgi_param PATH_INFO $uri;
	    fastcgi_param REMOTE_USER $remote_user;
	}

Exit status: 0 after a graceful stop, 1 if serving failed or a second
signal cut the grace short.
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		wr := &wrapper{}
		listen := fs.String("listen", "", "listen `address` (unix:/path or host:port); default: the socket on fd 0 or from systemd")
		fs.IntVar(&wr.max, "max", 16, "most scripts running at once")
		fs.DurationVar(&wr.timeout, "timeout", 0, "kill a script's process group after this long (0: no limit)")
		fs.StringVar(&wr.script, "script", "", "run this `program` for every request, ignoring SCRIPT_FILENAME")
		fs.StringVar(&wr.root, "root", "", "run only scripts under this `directory`")
		grace := fs.Duration("grace", 30*time.Second, "on SIGTERM, how long running scripts may finish")
		fs.Var(&wr.env, "env", "extra environment `NAME=VALUE` for scripts (repeatable)")
		var lc fcgi.ListenConfig
		fs.Var((*octalMode)(&lc.SocketMode), "socket-mode", "unix socket permission `bits`, octal (default 0660, as PHP-FPM's listen.mode)")
		fs.Var((*octalMode)(&lc.SocketMode), "M", "short for --socket-mode (spawn-fcgi -M), octal `bits`")
		fs.StringVar(&lc.SocketOwner, "socket-user", "", "`user` (name or uid) owning the unix socket (default: wrap's)")
		fs.StringVar(&lc.SocketOwner, "U", "", "short for --socket-user (spawn-fcgi -U)")
		fs.StringVar(&lc.SocketGroup, "socket-group", "", "`group` (name or gid) of the unix socket (default: wrap's)")
		fs.StringVar(&lc.SocketGroup, "G", "", "short for --socket-group (spawn-fcgi -G)")
		return func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usageError(e, fs, "unexpected argument %q", args[0])
			}
			if wr.max < 1 {
				return usageError(e, fs, "--max must be at least 1")
			}
			if *listen != "" {
				if err := listenFlag(e, fs, *listen); err != nil {
					return err
				}
			}
			if (lc.SocketMode != 0 || lc.SocketOwner != "" || lc.SocketGroup != "") && !strings.HasPrefix(fcgiAddr(*listen), "unix:") {
				what := *listen
				if what == "" {
					what = "an inherited socket (no --listen)"
				}
				return usageError(e, fs, "--socket-mode, --socket-user and --socket-group are for a unix socket made by --listen, not %s", what)
			}
			hurry, stopSignals := secondSignal(nil)
			defer stopSignals()
			// The scripts' orphans (a background job, killed with its
			// script's group) come here, to be reaped, even where wrap
			// is not PID 1.
			defer reap.Adopt()()
			// Both are taken from the working directory at the start, as a
			// user types them: a request's SCRIPT_FILENAME is absolute.
			for _, p := range []*string{&wr.root, &wr.script} {
				if *p != "" {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			wr.log = e.log
			wr.slots = make(chan struct{}, wr.max)
			var l net.Listener
			if *listen != "" {
				var err error
				if l, err = lc.Listen(ctx, fcgiAddr(*listen)); err != nil {
					return err
				}
				e.log.Info("wrap listening", "addr", l.Addr().String(), "max", wr.max, "timeout", wr.timeout)
			}
			// hard is cancelled when the grace period ends: every
			// request's context derives from it, so every script dies.
			hard, kill := context.WithCancel(context.Background())
			defer kill()
			srv := &fcgi.Server{
				Handler:     wr,
				ErrorLog:    e.log,
				BaseContext: func(net.Listener) context.Context { return hard },
			}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(l) }()
			// Scripts are run afresh for each request: a new build is
			// picked up without a reload, so SIGHUP only must not kill.
			onHangup(ctx, func() { e.log.Info("SIGHUP: nothing to reload; scripts run afresh for each request") })
			var err error
			select {
			case err = <-errc:
			case <-ctx.Done():
				e.log.Info("stopping: waiting for running scripts", "grace", *grace)
				sctx, cancel := context.WithTimeout(context.Background(), *grace)
				// Owned by the command: a second signal ends the
				// grace. Ends with the grace.
				go func() {
					select {
					case <-hurry:
						cancel()
					case <-sctx.Done():
					}
				}()
				serr := srv.Shutdown(sctx)
				cancel()
				err = nil
				if serr != nil {
					select {
					case <-hurry:
						e.log.Warn("second signal: killing running scripts")
						err = errors.New("stopped by a second signal: scripts killed")
					default:
						e.log.Warn("grace period over: killing running scripts")
					}
					srv.Close()
				}
				<-errc
			}
			kill()
			// Handlers may outlive Close by the moment their scripts take
			// to die; never leave one behind.
			wr.running.Wait()
			if errors.Is(err, fcgi.ErrServerClosed) {
				err = nil
			}
			return err
		}
	},
}

// wrapper is the FastCGI handler of fcgi wrap.
type wrapper struct {
	max     int
	timeout time.Duration
	script  string
	root    string
	env     paramList
	log     *slog.Logger

	slots   chan struct{} // a token per running script
	running sync.WaitGroup
}

func (wr *wrapper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	wr.running.Add(1)
	defer wr.running.Done()
	params := fcgi.Params(r)
	script := wr.script
	if script == "" {
		script = params["SCRIPT_FILENAME"]
	}
	if code, msg := wr.checkScript(script); code != 0 {
		wr.log.Warn("refused", "script", script, "uri", r.RequestURI, "reason", msg)
		http.Error(w, http.StatusText(code), code)
		return
	}

	ctx := r.Context()
	select {
	case wr.slots <- struct{}{}:
		defer func() { <-wr.slots }()
	case <-ctx.Done():
		return
	}
	if wr.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wr.timeout)
		defer cancel()
	}
	start := time.Now()
	stderr := &stderrRelay{w: fcgi.Stderr(w)}
	cmd := &cgiexec.Cmd{
		Path:  script,
		Env:   wr.cgiEnv(r, params, script),
		Stdin: r.Body,
		Stderr: func(line string) {
			wr.log.Warn("script stderr", "script", script, "line", line)
			// The web server logs it too, with the request.
			stderr.line(line)
		},
		HeaderSent: stderr.release,
	}
	err := cmd.Serve(ctx, w)
	// A response without the script's header (an error page) goes out
	// before the stderr that waited for it.
	http.NewResponseController(w).Flush()
	stderr.release()
	switch {
	case err == nil:
		wr.log.Debug("done", "script", script, "uri", r.RequestURI, "duration", time.Since(start))
	case errors.Is(err, context.DeadlineExceeded):
		wr.log.Warn("timed out: script's process group killed", "script", script, "uri", r.RequestURI, "timeout", wr.timeout)
	case ctx.Err() != nil:
		wr.log.Info("request aborted: script's process group killed", "script", script, "uri", r.RequestURI, "cause", err)
	default:
		wr.log.Warn("script failed", "script", script, "uri", r.RequestURI, "err", err)
	}
}

// maxHeldStderr bounds the stderr a stderrRelay keeps for the web server
// until the response header has gone out.
const maxHeldStderr = 64 << 10

// stderrRelay passes a script's stderr lines on to the web server's
// FCGI_STDERR stream, but none of them ahead of the response header:
// nginx reads what comes before the header into one buffer
// (fastcgi_buffer_size), and once a buffer full of STDERR records ends
// inside a record's header, it fails the response with 502 ("upstream
// sent too big header"). Until release the lines wait, up to
// maxHeldStderr bytes; later ones are in wrap's log only. Each line is a
// write of its own, so one record: nginx logs a record as one message,
// cut at 2 KiB. A stderrRelay is safe for concurrent use.
type stderrRelay struct {
	w io.Writer

	mu      sync.Mutex
	open    bool     // released: lines go out as they come
	held    []string // lines written before release
	size    int      // bytes in held
	dropped int      // lines past maxHeldStderr
}

func (s *stderrRelay) line(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.open:
		// It fails only once the request is over, when nobody is left
		// to tell.
		io.WriteString(s.w, line+"\n")
	case s.size+len(line) > maxHeldStderr:
		s.dropped++
	default:
		s.held = append(s.held, line)
		s.size += len(line)
	}
}

// release sends the held lines, and every later line as it comes.
func (s *stderrRelay) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open {
		return
	}
	s.open = true
	for _, line := range s.held {
		io.WriteString(s.w, line+"\n")
	}
	if s.dropped > 0 {
		fmt.Fprintf(s.w, "fcgi wrap: %d more lines of stderr, written before the response header, are in wrap's log only\n", s.dropped)
	}
	s.held = nil
}

// checkScript says why script cannot run: a status and a reason, or 0.
func (wr *wrapper) checkScript(script string) (int, string) {
	switch {
	case script == "":
		return http.StatusNotFound, "no SCRIPT_FILENAME"
	case !filepath.IsAbs(script) || filepath.Clean(script) != script || strings.ContainsRune(script, 0):
		return http.StatusNotFound, "SCRIPT_FILENAME not a clean absolute path"
	case wr.root != "" && wr.root != "/" && !strings.HasPrefix(script, wr.root+"/"):
		return http.StatusForbidden, "outside --root"
	}
	fi, err := os.Stat(script)
	switch {
	case err != nil:
		return http.StatusNotFound, err.Error()
	case !fi.Mode().IsRegular():
		return http.StatusForbidden, "not a regular file"
	case fi.Mode()&0o111 == 0:
		return http.StatusForbidden, "not executable"
	}
	return 0, ""
}

// cgiEnv builds the CGI/1.1 environment (RFC 3875 §4.1) of r from every
// FastCGI variable the web server sent (fcgi.Params), as fcgiwrap passes
// them on; --env values come first and win, and SCRIPT_FILENAME is the
// script that runs. What the web server left out is filled in: SCRIPT_NAME
// and PATH_INFO (see splitPath), and the variables r carries.
func (wr *wrapper) cgiEnv(r *http.Request, params map[string]string, script string) []string {
	env := make([]string, 0, len(params)+len(wr.env)+16)
	set := map[string]bool{}
	add := func(k, v string) {
		if !set[k] {
			set[k] = true
			env = append(env, k+"="+v)
		}
	}
	for _, kv := range wr.env {
		add(kv[0], kv[1])
	}
	add("SCRIPT_FILENAME", script)
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if k == "HTTP_PROXY" {
			continue // httpoxy: a Proxy request header is no proxy setting
		}
		add(k, params[k])
	}
	scriptName, pathInfo := splitPath(params["DOCUMENT_ROOT"], script, r.URL.Path)
	add("SCRIPT_NAME", scriptName)
	add("PATH_INFO", pathInfo)
	add("GATEWAY_INTERFACE", "CGI/1.1")
	add("REQUEST_METHOD", r.Method)
	add("SERVER_PROTOCOL", r.Proto)
	add("REQUEST_URI", r.RequestURI)
	add("QUERY_STRING", r.URL.RawQuery)
	add("PATH", cmp.Or(os.Getenv("PATH"), "/usr/local/bin:/usr/bin:/bin"))
	return env
}

// splitPath derives SCRIPT_NAME and PATH_INFO for a web server that did
// not send them (nginx's fastcgi_params has no PATH_INFO): when script
// lies under root, SCRIPT_NAME is its part below root and PATH_INFO the
// rest of the request path; otherwise (git-http-backend, say) SCRIPT_NAME
// is empty and PATH_INFO the whole path.
func splitPath(root, script, urlPath string) (scriptName, pathInfo string) {
	if root = strings.TrimSuffix(root, "/"); root != "" {
		if rel, ok := strings.CutPrefix(script, root); ok && strings.HasPrefix(rel, "/") {
			if rest, ok := strings.CutPrefix(urlPath, rel); ok && (rest == "" || rest[0] == '/') {
				return rel, rest
			}
		}
	}
	return "", urlPath
}

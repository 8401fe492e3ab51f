package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/defaults"
)

var gatewayCmd = &command{
	name:    "gateway",
	serves:  true,
	summary: "serve HTTP from FastCGI applications; with no backend, a built-in demo",
	usage: `
Usage: fcgi gateway [flags]

Gateway is an HTTP server in front of FastCGI applications, the part of
nginx that speaks FastCGI (fcgikit's Gateway): each HTTP request becomes
a FastCGI request with the CGI variables nginx sends. Connections to the
--backend addresses are kept open and reused, at most --max-conns per
backend; each request goes to the backend with the fewest in flight. A
--backend dns:HOST:PORT stands for every address HOST resolves to, and
srv:NAME for the targets of NAME's SRV records, resolved again every
--resolve-interval (a Kubernetes headless Service); with --health-path
each backend is checked with a FastCGI request (PHP-FPM's ping.path).
Request bodies are read whole before a backend connection is taken, as
nginx does, so that a slow client never holds one of the application's
workers and CONTENT_LENGTH is exact: in memory up to --max-body-memory
per request and --max-body-memory-total in all, otherwise in a temporary
file in --temp-dir. A client that sends nothing for --body-timeout gets
408. --stream-body sends large bodies of known length as they arrive
instead. A header field or URL that would not fit one FastCGI record
(--max-param, what PHP-FPM takes) is answered 431 or 414. Responses are
streamed as they arrive.

With --root it routes as nginx's try_files and fastcgi_split_path_info do:
a path whose first segment ending in --ext names an existing script runs
it, the rest of the path being PATH_INFO; other existing files are served
directly (unless --static=false); a directory runs its index.php; and
anything else goes to --front-controller, or is 404 without one. A file
the gateway may not read is 403, and logged, as with nginx. Without
--root every request goes to the application, whatever its path. A
--root that is not a directory, or a --front-controller that is not a
file under it, is refused at start (exit status 2).

With --filter the application plays the FastCGI Filter role instead: each
request names a file under --root, which is sent to the application as
FCGI_DATA (with FCGI_DATA_LENGTH and FCGI_DATA_LAST_MOD) for it to
transform (a template or Markdown renderer, say); anything but a regular
file under --root is 404.

Backend failures are answered 502, 503 (FCGI_OVERLOADED) or 504 (no
answer within --timeout), and logged. Clients are held to nginx's
timeouts: --header-timeout for the request header, --body-timeout for
each read of the body (a slow upload that keeps coming is never cut),
--send-timeout for each write of the response (a client that stops
reading is cut off, and the backend connection freed), and
--idle-timeout for a keep-alive connection between requests.

With --tls-cert and --tls-key the gateway serves HTTPS, and the
application sees HTTPS=on; SIGHUP reloads the certificate and key (a
renewal needs no restart; if the new files do not load, the old
certificate stays and the error is logged).

SIGTERM (or SIGINT) stops accepting connections and lets running requests
finish for --grace; those still running then are cut off. Either way the
gateway exits 0. A second SIGTERM or SIGINT kills it at once.

With --access-log every request is logged to that file (- for standard
output) in the combined log format of nginx and Apache:

	127.0.0.1 - - [03/Dec/2026:17:41:18 +0000] "GET /a?b=1 HTTP/1.1" 200 612 "-" "curl/8.5.0"

that is: client address, -, the Basic authentication user (or -), the
time the response ended, the request line, the status, the bytes of
body sent, the Referer and the User-Agent. Quotes, backslashes and
control bytes in the quoted fields are written \xHH, as nginx writes
them. The file is opened for appending; SIGHUP reopens it, after
logrotate has moved it.

With --sendfile PREFIX=DIR (repeatable) a response with X-Accel-Redirect
(a URL path under PREFIX) or X-Sendfile (a file under DIR) has its body
dropped and the file served instead, with Range, conditional requests and
HEAD, and the application's Content-Type, Content-Disposition,
Cache-Control, Expires, Set-Cookie and Accept-Ranges, as nginx does; the
PHP worker is free at once. A path outside the locations, or escaping one
by .. or a symbolic link, is 404 and logged. Requests carry X-Sendfile-Type
and X-Accel-Mapping for Symfony's and Laravel's BinaryFileResponse.
--sendfile-header picks which fields are honoured. X-Accel-Buffering: no
flushes each piece of the response; X-Accel-Expires and X-Accel-Limit-Rate
are not supported, and removed.

--error-page CODE=FILE (repeatable) answers the gateway's own errors (502,
503, 504, 413, 431, ...) with the file, the status kept; the application's
own error responses pass through untouched. When PHP-FPM cannot run a
script ("Primary script unknown", security.limit_extensions, open_basedir,
permission denied) the log line of the request carries a hint saying what
to check.

With --metrics the gateway serves Prometheus metrics (the text format, or
OpenMetrics when asked) at /metrics on that address, a listener of its
own: requests, queue depth and wait behind --max-conns, connections,
retries, errors by cause and latency histograms, per backend, under the
fcgikit_ prefix (listed in docs/command.md).

With no --backend it starts a demo: fcgikit's own FastCGI server, in this
process, on a unix socket in a temporary directory, and the gateway in
front of it, so the whole path (HTTP -> gateway -> FastCGI -> application)
runs on a fresh machine. Open the URL it prints.

Examples:

	go run github.com/fcgikit/fcgi/cmd/fcgi@latest gateway
	fcgi gateway --listen :8080 --backend unix:/run/php/php8.2-fpm.sock --max-conns 16 \
	    --root /srv/app/public --front-controller /index.php
	fcgi gateway --listen :8443 --tls-cert cert.pem --tls-key key.pem --backend 127.0.0.1:9000 --root /srv/app
	fcgi gateway --listen :8080 --backend unix:/run/render.sock --root /srv/pages --filter
	fcgi gateway --backend 127.0.0.1:9000 --root /srv/app --access-log /var/log/fcgi/access.log --grace 30s
	fcgi gateway --backend 127.0.0.1:9000 --root /srv/app/public --sendfile /protected/=/srv/private \
	    --error-page 502=/srv/errors/502.html
	fcgi gateway --backend unix:/run/php/php8.2-fpm.sock --max-conns 16 --metrics 127.0.0.1:9150

Exit status: 0 after SIGTERM or SIGINT; 2 for a bad command line, a
missing --root or front controller; 1 if the listener or the access log
could not be opened.
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		c := &fcgi.Client{}
		g := &fcgi.Gateway{Client: c}
		listen := fs.String("listen", "127.0.0.1:8080", "HTTP listen `address`")
		var backends stringList
		fs.Var(&backends, "backend", "FastCGI backend `address` (repeatable; the least busy is used)")
		fs.IntVar(&c.MaxConnsPerBackend, "max-conns", 0, "most connections to each backend (0: no limit); PHP-FPM: pm.max_children")
		fs.StringVar(&g.Root, "root", "", "document `directory`: scripts, static files, DOCUMENT_ROOT")
		fs.StringVar(&g.FrontController, "front-controller", "", "script `path` under --root for paths that match no file (e.g. /index.php)")
		fs.StringVar(&g.ScriptExt, "ext", ".php", "script `extension`: paths with a segment ending in it run that script")
		fs.BoolVar(&g.ServeStatic, "static", true, "serve existing files under --root that are not scripts directly")
		timeout := fs.Duration("timeout", 60*time.Second, "FastCGI timeout: connecting, and each wait for the application to read or answer")
		// Zero is the Gateway's default, which only the help restates.
		fs.Int64Var(&g.MaxBodyBytes, "max-body", 0, "largest request body, in `bytes`; larger get 413 (0: the Gateway's default, 64 MiB; -1: no limit)")
		fs.Int64Var(&g.MaxMemoryBytes, "max-body-memory", defaults.GatewayMaxMemoryBytes, "most `bytes` of one request body held in memory; the rest goes to --temp-dir")
		fs.Int64Var(&g.MaxTotalMemoryBytes, "max-body-memory-total", defaults.GatewayMaxTotalMemoryBytes, "most `bytes` of all request bodies held in memory together")
		bodyTimeout := fs.Duration("body-timeout", defaults.GatewayBodyReadTimeout, "most time a read of a request body may wait for the client; then 408 (0: no limit)")
		fs.StringVar(&g.TempDir, "temp-dir", "", "`directory` for request bodies not held in memory (default: $TMPDIR or /tmp)")
		fs.BoolVar(&g.StreamRequestBody, "stream-body", false, "send request bodies of known length over 64 KiB as they arrive, not buffered first (a slow client then holds a backend worker)")
		fs.IntVar(&g.MaxParamPairBytes, "max-param", defaults.GatewayMaxParamPairBytes, "longest parameter sent, in `bytes` as a FastCGI pair; longer header fields get 431, URLs 414 (-1: no limit)")
		headerTimeout := fs.Duration("header-timeout", 10*time.Second, "most time for a client to send a request's header (0: no limit)")
		idleTimeout := fs.Duration("idle-timeout", 75*time.Second, "close a keep-alive connection idle this long (0: never)")
		sendTimeout := fs.Duration("send-timeout", defaults.GatewaySendTimeout, "most time a write of a response may wait for the client (0: no limit)")
		fs.BoolVar(&g.LearnEarlyHints, "learn-early-hints", false, "send the preload/preconnect Link fields of a page's last answer as a 103 Early Hints on the next HTTP/2 navigation to it (needs --tls-cert)")
		filter := fs.Bool("filter", false, "send each file under --root to the application in the Filter role")
		tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate `file` (PEM, with --tls-key)")
		tlsKey := fs.String("tls-key", "", "the private key `file` of --tls-cert (PEM)")
		grace := fs.Duration("grace", 10*time.Second, "on SIGTERM, how long running requests may finish")
		applyBackendFlags := backendFlags(fs, c)
		accessLog := fs.String("access-log", "", "log each request to this `file` (- for standard output) in the combined log format")
		var sendfiles, errorPages stringList
		fs.Var(&sendfiles, "sendfile", "serve files the application names with X-Accel-Redirect or X-Sendfile from this internal location, `PREFIX=DIR` (repeatable; e.g. /protected/=/srv/private)")
		sendfileHeaders := fs.String("sendfile-header", "X-Accel-Redirect,X-Sendfile", "the response `fields` --sendfile honours, comma-separated; the first is sent as X-Sendfile-Type")
		fs.Var(&errorPages, "error-page", "answer the gateway's own errors with status CODE with this file, `CODE=FILE` (repeatable; e.g. 502=/srv/errors/502.html)")
		metrics := fs.String("metrics", "", "serve Prometheus metrics at /metrics on this `address`, a listener of its own")
		return func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usageError(e, fs, "unexpected argument %q", args[0])
			}
			if (*tlsCert == "") != (*tlsKey == "") {
				return usageError(e, fs, "--tls-cert and --tls-key go together")
			}
			if network, _, err := parseListenAddr(*listen); err != nil {
				return usageError(e, fs, "--listen: %v", err)
			} else if network != "tcp" {
				return usageError(e, fs, "--listen: address %q: HTTP is served on TCP host:port, not a unix socket", *listen)
			}
			if *timeout <= 0 {
				return usageError(e, fs, "--timeout must be positive")
			}
			for name, d := range map[string]time.Duration{"header-timeout": *headerTimeout, "body-timeout": *bodyTimeout, "idle-timeout": *idleTimeout, "send-timeout": *sendTimeout, "grace": *grace} {
				if d < 0 {
					return usageError(e, fs, "--%s must not be negative", name)
				}
			}
			// The Gateway's zero is its default; the flags' zero is none.
			g.SendTimeout, g.BodyReadTimeout = *sendTimeout, *bodyTimeout
			if g.SendTimeout == 0 {
				g.SendTimeout = -1
			}
			if g.BodyReadTimeout == 0 {
				g.BodyReadTimeout = -1
			}
			c.DialTimeout = *timeout
			c.WriteTimeout = *timeout
			c.ResponseHeaderTimeout = *timeout
			c.ReadTimeout = *timeout
			c.ErrorLog, g.ErrorLog = e.log, e.log
			if err := applyBackendFlags(); err != nil {
				return usageError(e, fs, "%v", err)
			}
			for _, b := range backends {
				if ok, err := checkDNSBackend(b); ok {
					if err != nil {
						return usageError(e, fs, "--backend: %v", err)
					}
					c.Backends = append(c.Backends, b)
					continue
				}
				if _, _, err := parseAddr(b); err != nil {
					return usageError(e, fs, "--backend: %v", err)
				}
				c.Backends = append(c.Backends, fcgiAddr(b))
			}
			demo := len(backends) == 0
			if err := gatewayExtras(g, sendfiles, *sendfileHeaders, errorPages); err != nil {
				return usageError(e, fs, "%v", err)
			}
			if *filter && (demo || g.Root == "") {
				return usageError(e, fs, "--filter needs --backend and --root")
			}
			if g.FrontController != "" && (demo || g.Root == "") {
				return usageError(e, fs, "--front-controller needs --backend and --root")
			}
			if !demo && g.Root != "" {
				if err := checkRoot(g.Root, g.FrontController); err != nil {
					return err
				}
			}
			if demo {
				addr, stop, err := startDemo(e)
				if err != nil {
					return err
				}
				defer stop()
				c.Backends = []string{addr}
				g.Root = ""
			}
			// Without --root everything goes to the application, as
			// from nginx's location / { fastcgi_pass ...; }.
			g.PassThrough = g.Root == ""
			defer c.Close()
			l, err := net.Listen("tcp", *listen)
			if err != nil {
				return err
			}
			var h http.Handler = g
			if *filter {
				h = g.Filter()
			}
			var alog *accessLogger
			if *accessLog != "" {
				if alog, err = openAccessLog(*accessLog, e.stdout); err != nil {
					l.Close()
					return err
				}
				defer alog.close()
				h = alog.handler(h)
			}
			srv := &http.Server{
				Handler:           h,
				ReadHeaderTimeout: *headerTimeout,
				IdleTimeout:       *idleTimeout,
				ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelWarn),
			}
			scheme := "http"
			if *tlsCert != "" {
				scheme = "https"
			}
			url := openURL(scheme, l.Addr(), "/")
			if demo {
				fmt.Fprintf(e.stdout, "fcgi gateway: demo application on %s\nOpen %s\n", c.Backends[0], url)
			} else {
				fmt.Fprintf(e.stdout, "fcgi gateway: %s -> %s\n", url, strings.Join(c.Backends, ", "))
			}
			if *metrics != "" {
				murl, stop, err := startMetrics(*metrics, g, c)
				if err != nil {
					l.Close()
					return err
				}
				defer stop()
				fmt.Fprintf(e.stdout, "fcgi gateway: metrics on %s\n", murl)
			}
			var certs *certReloader
			if *tlsCert != "" {
				if certs, err = newCertReloader(*tlsCert, *tlsKey); err != nil {
					l.Close()
					return err
				}
				srv.TLSConfig = &tls.Config{GetCertificate: certs.get}
			}
			onHangup(ctx, func() {
				if alog != nil {
					if err := alog.reopen(); err != nil {
						e.log.Error("SIGHUP: keeping the access log open", "err", err)
					} else {
						e.log.Info("SIGHUP: access log reopened", "file", *accessLog)
					}
				}
				if certs == nil {
					if alog == nil {
						e.log.Info("SIGHUP: nothing to reload (no --tls-cert or --access-log)")
					}
					return
				}
				if err := certs.load(); err != nil {
					e.log.Error("SIGHUP: keeping the certificate in use", "err", err)
					return
				}
				e.log.Info("SIGHUP: certificate reloaded", "cert", *tlsCert)
			})
			errc := make(chan error, 1)
			go func() {
				if certs != nil {
					errc <- srv.ServeTLS(l, "", "")
				} else {
					errc <- srv.Serve(l)
				}
			}()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			e.log.Info("stopping: waiting for running requests", "grace", *grace)
			sctx, cancel := context.WithTimeout(context.Background(), *grace)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				// The stop was asked for: cutting off what outlived
				// the grace is part of it, not a failure.
				e.log.Warn("grace period over: closing the connections of running requests")
				srv.Close()
			}
			<-errc
			return nil
		}
	},
}

// certReloader serves the certificate last loaded from its files, so that
// SIGHUP can replace a renewed certificate without a restart.
type certReloader struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	return r, r.load()
}

// load reads the files again; on error the certificate in use stays.
func (r *certReloader) load() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cur.Store(&c)
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
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

// checkRoot refuses a --root that is not a directory, and a
// --front-controller that is not a file under it: a gateway started with
// either would answer 404 to every request, with nothing to say why.
func checkRoot(root, frontController string) error {
	fi, err := os.Stat(root)
	if err != nil {
		return exitf(exitUsage, "--root %s: %v", root, pathErr(err))
	}
	if !fi.IsDir() {
		return exitf(exitUsage, "--root %s: not a directory", root)
	}
	if frontController == "" {
		return nil
	}
	if !strings.HasPrefix(frontController, "/") {
		return exitf(exitUsage, "--front-controller %s: want a path under --root starting with /, such as /index.php", frontController)
	}
	name := filepath.Join(root, filepath.FromSlash(frontController))
	fi, err = os.Stat(name)
	if err != nil {
		return exitf(exitUsage, "--front-controller %s: %s: %v", frontController, name, pathErr(err))
	}
	if !fi.Mode().IsRegular() {
		return exitf(exitUsage, "--front-controller %s: %s is not a regular file", frontController, name)
	}
	return nil
}

// pathErr is err without the operation and path of an *fs.PathError,
// which the message around it gives already.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// An accessLogger writes one line per request in the combined log format
// of nginx and Apache:
//
//	$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
type accessLogger struct {
	name string // "" for a writer that is not reopened (standard output)
	mu   sync.Mutex
	w    io.Writer
	f    *os.File // w when it is a file
}

// openAccessLog opens name for appending, or returns a logger to stdout
// for "-".
func openAccessLog(name string, stdout io.Writer) (*accessLogger, error) {
	if name == "-" {
		return &accessLogger{w: stdout}, nil
	}
	a := &accessLogger{name: name}
	if err := a.reopen(); err != nil {
		return nil, err
	}
	return a, nil
}

// reopen opens the file again, by name, so that the lines go to a new
// file once logrotate has moved the old one. On error the old file stays
// in use.
func (a *accessLogger) reopen() error {
	if a.name == "" {
		return nil
	}
	f, err := os.OpenFile(a.name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("--access-log: %w", err)
	}
	a.mu.Lock()
	old := a.f
	a.f, a.w = f, f
	a.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (a *accessLogger) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f != nil {
		a.f.Close()
	}
}

// handler logs each request h serves once it is over, also when h panics
// (the Gateway's way to abort a response cut short).
func (a *accessLogger) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lw := &loggingWriter{ResponseWriter: w}
		defer func() { a.log(r, lw, time.Now()) }()
		h.ServeHTTP(lw, r)
	})
}

func (a *accessLogger) log(r *http.Request, lw *loggingWriter, end time.Time) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	user := "-"
	if u, _, ok := r.BasicAuth(); ok && u != "" {
		user = logEscape(u)
	}
	status := lw.status
	if status == 0 {
		status = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	sent := lw.bytes
	if r.Method == http.MethodHead {
		sent = 0 // net/http takes a HEAD response's body and drops it
	}
	line := fmt.Sprintf("%s - %s [%s] \"%s\" %d %d \"%s\" \"%s\"\n",
		host, user, end.Format("02/Jan/2006:15:04:05 -0700"),
		logEscape(r.Method+" "+r.RequestURI+" "+r.Proto), status, sent,
		logField(r.Referer()), logField(r.UserAgent()))
	a.mu.Lock()
	defer a.mu.Unlock()
	io.WriteString(a.w, line)
}

// logField is a quoted field's value: logEscape(s), or "-" when empty.
func logField(s string) string {
	if s == "" {
		return "-"
	}
	return logEscape(s)
}

// logEscape writes '"', '\\', control bytes and bytes outside ASCII as
// \xHH, as nginx's default log escaping does, so that a client cannot
// forge a line or a field.
func logEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || c < 0x20 || c >= 0x7f {
			fmt.Fprintf(&b, `\x%02X`, c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// loggingWriter records the status and body bytes of a response for the
// access log. Unwrap gives http.ResponseController the writer beneath
// (deadlines, flushes), and ReadFrom keeps sendfile for static files.
type loggingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *loggingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *loggingWriter) WriteHeader(code int) {
	if w.status < 200 { // unset, or an interim 1xx
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *loggingWriter) Write(p []byte) (int, error) {
	if w.status < 200 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *loggingWriter) Flush() {
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *loggingWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status < 200 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
	}
	w.bytes += n
	return n, err
}

// gatewayExtras sets up --sendfile, --sendfile-header and --error-page.
func gatewayExtras(g *fcgi.Gateway, sendfiles []string, headers string, errorPages []string) error {
	if len(sendfiles) > 0 {
		s := &fcgi.Sendfile{}
		for _, h := range strings.Split(headers, ",") {
			h = http.CanonicalHeaderKey(strings.TrimSpace(h))
			if h != "X-Accel-Redirect" && h != "X-Sendfile" {
				return fmt.Errorf("--sendfile-header: %q is neither X-Accel-Redirect nor X-Sendfile", h)
			}
			s.Headers = append(s.Headers, h)
		}
		for _, v := range sendfiles {
			prefix, dir, ok := strings.Cut(v, "=")
			if !ok || !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") || dir == "" {
				return fmt.Errorf("--sendfile %q: want PREFIX=DIR, PREFIX a URL path from / to /", v)
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("--sendfile %q: %s is not a directory", v, dir)
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			s.Locations = append(s.Locations, fcgi.SendfileLocation{Prefix: prefix, Dir: abs})
		}
		g.Sendfile = s
	}
	for _, v := range errorPages {
		c, file, ok := strings.Cut(v, "=")
		code, err := strconv.Atoi(c)
		if !ok || err != nil || code < 400 || code > 599 || file == "" {
			return fmt.Errorf("--error-page %q: want CODE=FILE, CODE from 400 to 599", v)
		}
		h, err := fcgi.ErrorPageFile(file)
		if err != nil {
			return fmt.Errorf("--error-page: %v", err)
		}
		if g.ErrorPages == nil {
			g.ErrorPages = map[int]http.Handler{}
		}
		g.ErrorPages[code] = h
	}
	return nil
}

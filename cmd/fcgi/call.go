package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fpmhint"
	"github.com/fcgikit/fcgi/internal/wire"
)

var callCmd = &command{
	name:    "call",
	summary: "send one request to an application and print the response (cgi-fcgi)",
	usage: `
Usage: fcgi call [flags] ADDR [URL-or-path]

Call sends one FastCGI request to the application at ADDR and prints the
response body, or with -i the status line and headers too, as curl -i
does. What the application writes to FCGI_STDERR goes to stderr. It
replaces "cgi-fcgi -bind -connect" and its environment juggling.

The request carries the CGI variables nginx sends, built as fcgi gateway
builds them. The URL's path and query become REQUEST_URI and
QUERY_STRING, its host HTTP_HOST and SERVER_NAME. The path is routed as
fcgi gateway --root routes it, without looking at any file: a path with
a segment ending in --ext runs that script, the rest being PATH_INFO;
any other path runs --front-controller, or without one is the script
itself, sent without PATH_INFO. SCRIPT_FILENAME is --root followed by
the script. -p sets or overrides any variable.

Examples:

	fcgi call unix:/run/php/php8.2-fpm.sock /ping
	fcgi call -i 127.0.0.1:9000 'http://example.com/index.php?page=2' --root /srv/app/public
	fcgi call -X PUT -H 'Content-Type: application/json' -d @body.json unix:/run/app.sock /api/items
	printf 'a=1' | fcgi call -d - unix:/run/app.sock /form.php
	fcgi call -p SCRIPT_FILENAME=/srv/x.php -p APP_ENV=test unix:/run/app.sock /x
	fcgi call --raw unix:/run/app.sock /     # the CGI output exactly, as cgi-fcgi prints it
	fcgi call --root /srv/app/public --front-controller /index.php unix:/run/php/php8.2-fpm.sock /products/5

Without --raw, -i prints the header fields sorted by name, in canonical
form; --raw prints them as the application wrote them.

Exit status: 0 a response was received (any HTTP status unless --fail),
1 --fail and an HTTP status of 400 or more, 2 a bad command line or a
-d @file that cannot be read, 3 the application could not be
reached or closed the connection without answering, 4 it broke the
protocol or refused the request (END_REQUEST with OVERLOADED, UNKNOWN_ROLE,
...), 5 connected but no answer within --timeout (busy or stuck).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		var rp requestParams
		var headers headerList
		fs.StringVar(&rp.method, "X", "", "request `method` (default GET, or POST with -d)")
		fs.Var(&headers, "H", "request header `Name: value` (repeatable)")
		fs.Var(&rp.extra, "p", "FastCGI parameter `NAME=VALUE`, set or overridden (repeatable)")
		fs.StringVar(&rp.root, "root", "/var/www/html", "document root, for SCRIPT_FILENAME")
		fs.StringVar(&rp.ext, "ext", ".php", "script `extension`: a path with a segment ending in it runs that script, the rest is PATH_INFO")
		fs.StringVar(&rp.frontController, "front-controller", "", "script `path` under --root for paths that name no script (e.g. /index.php)")
		data := fs.String("d", "", "request body: a string, @file, or - for stdin")
		role := fs.String("role", "responder", "FastCGI `role`: responder or authorizer")
		include := fs.Bool("i", false, "print the status line and headers before the body")
		raw := fs.Bool("raw", false, "print the application's STDOUT exactly (CGI headers and body)")
		fail := fs.Bool("fail", false, "exit 1 on an HTTP status of 400 or more")
		timeout := fs.Duration("timeout", 30*time.Second, "give up when connecting, sending or the next part of the answer takes longer (--raw: the whole call)")
		verbose := fs.Bool("v", false, "log the request's variables and the END_REQUEST status")
		return func(ctx context.Context, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError(e, fs, "want ADDR and an optional URL or path")
			}
			if len(args) == 2 {
				rp.target = args[1]
			}
			var r fcgi.Role
			switch strings.ToLower(*role) {
			case "responder":
				r = fcgi.RoleResponder
			case "authorizer":
				r = fcgi.RoleAuthorizer
			default:
				return usageError(e, fs, "--role %q: want responder or authorizer", *role)
			}
			var body []byte
			rp.body = -1
			if flagSet(fs, "d") {
				var err error
				switch {
				case *data == "-":
					body, err = io.ReadAll(e.stdin)
				case strings.HasPrefix(*data, "@"):
					if body, err = os.ReadFile((*data)[1:]); err != nil {
						// A mistake on the command line, told before
						// anything is sent.
						if pe := (*os.PathError)(nil); errors.As(err, &pe) {
							err = pe.Err
						}
						return &exitError{code: exitUsage, err: fmt.Errorf("-d %s: %w", *data, err)}
					}
				default:
					body = []byte(*data)
				}
				if err != nil {
					return err
				}
				rp.body = int64(len(body))
				if rp.method == "" {
					rp.method = "POST"
				}
				if !hasHeader(headers, "Content-Type") {
					headers = append(headers, [2]string{"Content-Type", "application/x-www-form-urlencoded"})
				}
			}
			rp.header = headers
			rp.authorizer = r == fcgi.RoleAuthorizer
			kv, err := rp.pairs()
			if err != nil {
				return usageError(e, fs, "%v", err)
			}
			if rp.authorizer {
				body = nil // §6.3: an Authorizer gets no body
			}
			if *verbose {
				for _, p := range kv {
					e.log.Info("param", "name", p[0], "value", p[1])
				}
			}
			if *raw {
				return callRaw(ctx, e, args[0], r, kv, body, *timeout, *verbose)
			}
			// Ended before the output starts, so that on a terminal
			// PHP-FPM's "Primary script unknown" is a line of its own
			// rather than the start of "File not found.", and again at
			// the end for what came later.
			stderr := &lineEnder{w: e.stderr}
			defer stderr.end()
			c := newClient(e, args[0], *timeout)
			defer c.Close()
			req := &fcgi.Request{Role: r, Params: paramMap(kv), Stderr: stderr}
			if body != nil {
				req.Body = bytes.NewReader(body)
				req.GetBody = func() (io.Reader, error) { return bytes.NewReader(body), nil }
			}
			resp, err := c.Do(ctx, req)
			if err != nil {
				return clientError(err)
			}
			defer resp.Body.Close()
			stderr.end()
			if *include {
				if err := writeHeader(e.stdout, resp.StatusCode, resp.Header); err != nil {
					return err
				}
			}
			if _, err := io.Copy(e.stdout, resp.Body); err != nil {
				return clientError(err)
			}
			stderr.hint()
			if *verbose {
				status, _ := resp.AppStatus()
				e.log.Info("END_REQUEST", "app_status", status, "protocol_status", "REQUEST_COMPLETE")
			}
			if *fail && resp.StatusCode >= 400 {
				return exitf(exitFail, "HTTP status %d", resp.StatusCode)
			}
			return nil
		}
	},
}

// writeHeader prints a status line and header as curl -i does, fields
// sorted by name: the CGI header's own order is not kept by fcgi.Response.
func writeHeader(w io.Writer, status int, h http.Header) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	_, err := w.Write(b.Bytes())
	return err
}

// callRaw is call --raw: the application's STDOUT byte for byte, as
// cgi-fcgi prints it, which fcgi.Client cannot give since it parses the
// CGI header into an http.Header. It sends one request, ID 1, without
// KEEP_CONN, on a connection of its own. A failure to connect is exit
// status 3; no answer after connecting is errBusy, with exit status 5.
func callRaw(ctx context.Context, e *env, addr string, role fcgi.Role, kv [][2]string, body []byte, timeout time.Duration, verbose bool) error {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := dialRaw(ctx, addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.NC.SetDeadline(time.Now()) })
	defer stop()
	c.NC.SetWriteDeadline(deadline)
	if err := c.WriteRequest(1, wire.Role(role), false, encodePairs(kv), body); err != nil {
		return err
	}
	if err := c.W.Flush(); err != nil {
		return exitf(exitUnreachable, "sending the request: %v", err)
	}
	resp, err := readResponse(c, 1, deadline)
	if err != nil {
		if errors.Is(err, errNoAnswer) || ctx.Err() != nil {
			return &exitError{code: exitBusy, err: errBusy}
		}
		return err
	}
	if len(resp.Stderr) > 0 {
		stderr := &lineEnder{w: e.stderr}
		stderr.Write(resp.Stderr)
		stderr.hint()
	}
	if verbose {
		e.log.Info("END_REQUEST", "app_status", resp.End.AppStatus, "protocol_status", resp.End.ProtocolStatus.String())
	}
	if resp.End.ProtocolStatus != wire.StatusRequestComplete {
		return exitf(exitProtocol, "the application refused the request: %v", resp.End.ProtocolStatus)
	}
	_, err = e.stdout.Write(resp.Stdout)
	return err
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func hasHeader(h [][2]string, name string) bool {
	for _, kv := range h {
		if strings.EqualFold(kv[0], name) {
			return true
		}
	}
	return false
}

// lineEnder passes the application's FCGI_STDERR on to w and, at the
// end, a newline if it did not end in one, so that the shell's prompt
// does not follow the last line of it.
// The client writes FCGI_STDERR while the response streams, hence the
// mutex.
type lineEnder struct {
	w    io.Writer
	mu   sync.Mutex
	last byte
	seen []byte // the start of the output, for hint
}

// maxSeen bounds what a lineEnder keeps for hint: PHP-FPM's messages come
// first.
const maxSeen = 8 << 10

func (l *lineEnder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(p) > 0 {
		l.last = p[len(p)-1]
	}
	if room := maxSeen - len(l.seen); room > 0 {
		l.seen = append(l.seen, p[:min(len(p), room)]...)
	}
	return l.w.Write(p)
}

// hint ends the output's line and says what to check when it holds a
// message of PHP-FPM's that names neither cause nor setting ("Primary
// script unknown"), as the Gateway's log does.
func (l *lineEnder) hint() {
	l.end()
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := fpmhint.For(string(l.seen)); h != "" {
		fmt.Fprintf(l.w, "fcgi call: hint: %s\n", h)
		l.seen = nil // once
	}
}

// end writes the newline the output lacks, if any.
func (l *lineEnder) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last != 0 && l.last != '\n' {
		l.w.Write([]byte{'\n'})
		l.last = '\n'
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

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

The request carries the CGI variables nginx sends. The URL's path and
query become REQUEST_URI, SCRIPT_NAME and QUERY_STRING, its host
HTTP_HOST and SERVER_NAME; SCRIPT_FILENAME is --root followed by the
path. -p sets or overrides any variable.

Examples:

	fcgi call unix:/run/php/php8.2-fpm.sock /ping
	fcgi call -i 127.0.0.1:9000 'http://example.com/index.php?page=2' --root /srv/app/public
	fcgi call -X PUT -H 'Content-Type: application/json' -d @body.json unix:/run/app.sock /api/items
	echo 'a=1' | fcgi call -d - unix:/run/app.sock /form.php
	fcgi call -p SCRIPT_FILENAME=/srv/x.php -p APP_ENV=test unix:/run/app.sock /x
	fcgi call --raw unix:/run/app.sock /     # the CGI output exactly, as cgi-fcgi prints it

Exit status: 0 a response was received (any HTTP status unless --fail),
1 --fail and an HTTP status of 400 or more, 3 the application could not be
reached or did not answer within --timeout, 4 it broke the protocol or
refused the request (END_REQUEST with OVERLOADED, UNKNOWN_ROLE, ...).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		var rp requestParams
		var headers headerList
		fs.StringVar(&rp.method, "X", "", "request `method` (default GET, or POST with -d)")
		fs.Var(&headers, "H", "request header `Name: value` (repeatable)")
		fs.Var(&rp.extra, "p", "FastCGI parameter `NAME=VALUE`, set or overridden (repeatable)")
		fs.StringVar(&rp.root, "root", "/var/www/html", "document root, for SCRIPT_FILENAME")
		data := fs.String("d", "", "request body: a string, @file, or - for stdin")
		role := fs.String("role", "responder", "FastCGI `role`: responder or authorizer")
		include := fs.Bool("i", false, "print the status line and headers before the body")
		raw := fs.Bool("raw", false, "print the application's STDOUT exactly (CGI headers and body)")
		fail := fs.Bool("fail", false, "exit 1 on an HTTP status of 400 or more")
		timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
		verbose := fs.Bool("v", false, "log the request's variables and the END_REQUEST status")
		return func(ctx context.Context, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError(e, fs, "want ADDR and an optional URL or path")
			}
			if len(args) == 2 {
				rp.target = args[1]
			}
			var r wire.Role
			switch strings.ToLower(*role) {
			case "responder":
				r = wire.RoleResponder
			case "authorizer":
				r = wire.RoleAuthorizer
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
					body, err = os.ReadFile((*data)[1:])
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
			kv, err := rp.pairs()
			if err != nil {
				return usageError(e, fs, "%v", err)
			}
			if r == wire.RoleAuthorizer {
				// §6.3: an Authorizer gets no body and none of these.
				kv = dropParams(kv, "CONTENT_LENGTH", "PATH_INFO", "PATH_TRANSLATED", "SCRIPT_NAME")
				body = nil
			}
			if *verbose {
				for _, p := range kv {
					e.log.Info("param", "name", p[0], "value", p[1])
				}
			}
			resp, err := roundTrip(ctx, args[0], r, kv, body, *timeout)
			if err != nil {
				return err
			}
			e.stderr.Write(resp.stderr)
			if *verbose {
				e.log.Info("END_REQUEST", "app_status", resp.end.AppStatus, "protocol_status", resp.end.ProtocolStatus.String())
			}
			if resp.end.ProtocolStatus != wire.StatusRequestComplete {
				return exitf(exitProtocol, "the application refused the request: %v", resp.end.ProtocolStatus)
			}
			if *raw {
				_, err := e.stdout.Write(resp.stdout)
				return err
			}
			cr, err := parseCGI(resp.stdout)
			if err != nil {
				return &exitError{code: exitProtocol, err: err}
			}
			if *include {
				var b bytes.Buffer
				fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", cr.status, http.StatusText(cr.status))
				for _, h := range cr.header {
					fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
				}
				b.WriteString("\r\n")
				e.stdout.Write(b.Bytes())
			}
			if _, err := e.stdout.Write(cr.body); err != nil {
				return err
			}
			if *fail && cr.status >= 400 {
				return exitf(exitFail, "HTTP status %d", cr.status)
			}
			return nil
		}
	},
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

func dropParams(kv [][2]string, names ...string) [][2]string {
	out := kv[:0]
	for _, p := range kv {
		drop := false
		for _, n := range names {
			if p[0] == n {
				drop = true
			}
		}
		if !drop {
			out = append(out, p)
		}
	}
	return out
}

// errBusy: the connection was accepted, by the kernel at least, but no
// answer came in time. For PHP-FPM that means every worker is busy and the
// request waits in the listen queue: busy, not dead.
var errBusy = errors.New("connected, but no answer in time: the application is busy or stuck")

// roundTrip sends one request, ID 1, without KEEP_CONN, and reads the
// response. A failure to connect is exit status 3; no answer after
// connecting is errBusy, with exit status 5.
func roundTrip(ctx context.Context, addr string, role wire.Role, kv [][2]string, body []byte, timeout time.Duration) (*rawResponse, error) {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := dialRaw(ctx, addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()
	c.nc.SetWriteDeadline(deadline)
	if err := c.writeRequest(1, role, false, encodePairs(kv), body); err != nil {
		return nil, err
	}
	if err := c.w.Flush(); err != nil {
		return nil, exitf(exitUnreachable, "sending the request: %v", err)
	}
	resp, err := c.readResponse(1, deadline)
	if err != nil {
		if errors.Is(err, errNoAnswer) || ctx.Err() != nil {
			return nil, &exitError{code: exitBusy, err: errBusy}
		}
		return nil, err
	}
	return resp, nil
}

// cgiResponse is a parsed CGI response (RFC 3875 §6).
type cgiResponse struct {
	status int
	header [][2]string // in the application's order, without Status
	body   []byte
}

// parseCGI splits a CGI response into status, headers and body.
func parseCGI(out []byte) (*cgiResponse, error) {
	r := &cgiResponse{status: http.StatusOK}
	rest := out
	location, statusSet := false, false
	for {
		line, after, found := bytes.Cut(rest, []byte("\n"))
		if !found {
			return nil, fmt.Errorf("malformed CGI response: no blank line after the headers in %q", truncate(out, 80))
		}
		rest = after
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 {
			return nil, fmt.Errorf("malformed CGI header line %q", truncate(line, 80))
		}
		n, v := string(bytes.TrimSpace(name)), string(bytes.TrimSpace(value))
		switch http.CanonicalHeaderKey(n) {
		case "Status":
			code, _, _ := strings.Cut(v, " ")
			s, err := strconv.Atoi(code)
			if err != nil || s < 100 || s > 999 {
				return nil, fmt.Errorf("malformed CGI Status %q", v)
			}
			r.status, statusSet = s, true
			continue
		case "Location":
			location = true
		}
		r.header = append(r.header, [2]string{n, v})
	}
	if location && !statusSet {
		r.status = http.StatusFound
	}
	r.body = rest
	return r, nil
}

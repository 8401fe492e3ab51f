// Command benchcaddy is the Caddy that phpbench runs: Caddy's standard
// modules, fcgikit's transport and php_fcgikit directive (as caddy/cmd/caddy
// of the fcgikit repository), and one transport more, benchnull, that
// answers "hello" itself without any FastCGI. A php_fcgikit site whose
// transport is replaced by benchnull costs what Caddy's own handlers cost
// (server, routing, try_files, rewrite, reverse_proxy), so that phpbench
// can say how much of php_fcgikit's CPU is the transport's.
//
// benchnull is a measuring device, not a module for users.
package main

import (
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/fcgikit/fcgi/caddy"
)

func init() {
	caddy.RegisterModule(nullTransport{})
}

// nullTransport answers every request with the page PHP-FPM's hello.php
// gives, without a backend.
type nullTransport struct{}

func (nullTransport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.benchnull",
		New: func() caddy.Module { return new(nullTransport) },
	}
}

// UnmarshalCaddyfile takes `transport benchnull` with no options.
func (*nullTransport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for d.Next() {
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

func (nullTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/html; charset=UTF-8"}, "Content-Length": {"5"}},
		ContentLength: 5,
		Body:          io.NopCloser(strings.NewReader("hello")),
		Request:       r,
	}, nil
}

var (
	_ http.RoundTripper     = nullTransport{}
	_ caddyfile.Unmarshaler = (*nullTransport)(nil)
)

func main() {
	caddycmd.Main()
}

package fcgi_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// A Server that plays the Authorizer role for a web server such as
// lighttpd ("mode" => "authorizer") or Apache (mod_authnz_fcgi): requests
// with the right token are allowed and name their user; the others are
// denied with a 401 that the web server passes to the client.
func ExampleServer_authorizer() {
	srv := &fcgi.Server{
		Authorizer: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer s3cret" {
				w.Header().Set("WWW-Authenticate", "Bearer")
				http.Error(w, "who are you?", http.StatusUnauthorized)
				return
			}
			fcgi.SetVariable(w, "REMOTE_USER", "alice")
			// Status 200, the default, allows the request.
		}),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)
	defer srv.Close()

	// The web server's side, in raw records.
	fmt.Println(askAuthorizer(l.Addr().String(), "Bearer s3cret"))
	fmt.Println(askAuthorizer(l.Addr().String(), "Bearer guess"))
	// Output:
	// Status: 200 OK | Content-Length: 0 | Variable-REMOTE_USER: alice
	// Status: 401 Unauthorized | Content-Length: 13 | Content-Type: text/plain; charset=utf-8 | Www-Authenticate: Bearer | X-Content-Type-Options: nosniff | who are you?
}

// askAuthorizer sends one Authorizer request, as lighttpd does, and
// returns the CGI response on one line.
func askAuthorizer(addr, authorization string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	w := wire.NewWriter(c)
	w.WriteBeginRequest(1, wire.RoleAuthorizer, 0)
	w.WriteRecord(wire.TypeParams, 1, wire.AppendPair(wire.AppendPair(nil,
		"REQUEST_URI", "/private/"), "HTTP_AUTHORIZATION", authorization))
	w.WriteRecord(wire.TypeParams, 1, nil)
	w.WriteRecord(wire.TypeStdin, 1, nil)
	if err := w.Flush(); err != nil {
		return err.Error()
	}
	var out []byte
	r := wire.NewReader(c)
	for {
		rec, err := r.Next()
		if err != nil {
			return err.Error()
		}
		if rec.Type == wire.TypeEndRequest {
			break
		}
		out = append(out, rec.Content...)
	}
	s := strings.TrimSpace(strings.ReplaceAll(string(out), "\r\n\r\n", "\r\n"))
	return strings.ReplaceAll(s, "\r\n", " | ")
}

package fcgi_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/fcgikit/fcgi"
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

	// The web server's side: an Authorizer request, as lighttpd sends it.
	fmt.Println(askAuthorizer(l.Addr().String(), "Bearer s3cret"))
	fmt.Println(askAuthorizer(l.Addr().String(), "Bearer guess"))
	// Output:
	// 200 | Content-Length: 0 | Variable-Remote_user: alice
	// 401 | Content-Length: 13 | Content-Type: text/plain; charset=utf-8 | Www-Authenticate: Bearer | X-Content-Type-Options: nosniff | who are you?
}

// askAuthorizer sends one Authorizer request, as lighttpd does, and
// returns the response on one line.
func askAuthorizer(addr, authorization string) string {
	c := &fcgi.Client{Addr: addr}
	defer c.Close()
	resp, err := c.Do(context.Background(), &fcgi.Request{
		Role:   fcgi.RoleAuthorizer,
		Params: map[string]string{"REQUEST_URI": "/private/", "HTTP_AUTHORIZATION": authorization},
	})
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	line := []string{strconv.Itoa(resp.StatusCode)}
	for _, k := range slices.Sorted(maps.Keys(resp.Header)) {
		line = append(line, k+": "+resp.Header.Get(k))
	}
	if len(body) > 0 {
		line = append(line, strings.TrimSpace(string(body)))
	}
	return strings.Join(line, " | ")
}

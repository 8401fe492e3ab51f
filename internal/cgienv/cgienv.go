// Package cgienv gives the fcgi command the CGI environment that package
// fcgi's Gateway builds, so that a request sent by fcgi call, ping, status,
// lint or bench carries the variables one sent through fcgi gateway
// carries, by the same rules. Package fcgi sets Build when it is
// initialized: a program that calls Build imports package fcgi.
package cgienv

import "net/http"

// A Request is what Build describes: an HTTP request and the Gateway
// settings it would meet.
type Request struct {
	// HTTP is the request: its Method, URL, Host, Header, Proto, TLS,
	// RemoteAddr, RequestURI, and the http.LocalAddrContextKey of its
	// context, which give SERVER_ADDR and SERVER_PORT.
	HTTP *http.Request

	// Root, ScriptExt and FrontController are the Gateway fields of the
	// same names.
	Root, ScriptExt, FrontController string

	// ContentLength is CONTENT_LENGTH: "" for a request without a body.
	ContentLength string

	// Authorizer leaves out the variables Gateway.Authorizer leaves out.
	Authorizer bool

	// Set holds variables given over the Gateway's, in order: a name
	// set twice has the later value.
	Set [][2]string
}

// Build returns the variables of r in the order they are sent, each once,
// a header field under its HTTP_* name. It routes r.HTTP.URL.Path as the
// Gateway does, without looking at any file (the application's may not
// be on this machine): a path with a segment ending in ScriptExt runs
// that script with the rest as PATH_INFO; any other path runs
// FrontController when there is one, and is otherwise the script itself,
// sent without PATH_INFO as the Gateway's PassThrough sends it. A path
// holding a control character is an error.
var Build func(r *Request) ([][2]string, error)

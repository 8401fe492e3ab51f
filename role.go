package fcgi

import "github.com/fcgikit/fcgi/internal/wire"

// Role is the part a FastCGI application plays in a request (§6 of the
// FastCGI specification). The web server names it in each request.
type Role uint16

// The three roles FastCGI defines.
const (
	// RoleResponder is the common role: like CGI/1.1, the application gets
	// the request's variables and body and produces the whole HTTP response.
	RoleResponder Role = Role(wire.RoleResponder)
	// RoleAuthorizer decides whether a request may go on: status 200 allows
	// it (its Variable-NAME headers pass variables on), any other status is
	// sent to the client as the response.
	RoleAuthorizer Role = Role(wire.RoleAuthorizer)
	// RoleFilter is a responder that also receives a file to filter, on the
	// FCGI_DATA stream.
	RoleFilter Role = Role(wire.RoleFilter)
)

// String returns the spec's name for r: RESPONDER, AUTHORIZER or FILTER.
func (r Role) String() string { return wire.Role(r).String() }

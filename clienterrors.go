package fcgi

import (
	"context"
	"errors"
	"strconv"
)

// Errors returned by [Client] and [Gateway]. Their texts will not change.
var (
	// ErrClientClosed is returned by [Client.Do] after [Client.Close].
	ErrClientClosed = errors.New("fcgi: client closed")

	// ErrNoBackend is returned by [Client.Do] when the Client has no
	// backend address.
	ErrNoBackend = errors.New("fcgi: no backend address")

	// ErrOverloaded matches a [ProtocolStatusError] whose status is
	// FCGI_OVERLOADED: the application refused the request because it ran
	// out of a resource such as database connections (§5.5).
	ErrOverloaded = errors.New("fcgi: application overloaded")

	// ErrCantMpxConn matches a [ProtocolStatusError] whose status is
	// FCGI_CANT_MPX_CONN: the application refused a second concurrent
	// request on one connection (§5.5).
	ErrCantMpxConn = errors.New("fcgi: application cannot multiplex connections")

	// ErrUnknownRole matches a [ProtocolStatusError] whose status is
	// FCGI_UNKNOWN_ROLE: the application does not play the requested role
	// (§5.5).
	ErrUnknownRole = errors.New("fcgi: application does not know the role")

	// ErrMalformedResponse is wrapped by errors reporting a CGI response
	// header that cannot be parsed: a line without a colon, an invalid
	// Status, or a response that ends inside its header.
	ErrMalformedResponse = errors.New("fcgi: malformed CGI response")

	// ErrResponseHeaderTooLarge is returned when the CGI response header
	// is longer than [Client.MaxResponseHeaderBytes].
	ErrResponseHeaderTooLarge = errors.New("fcgi: CGI response header too large")

	// ErrBackendClosed is wrapped by errors reporting a connection that
	// ended before the backend sent END_REQUEST.
	ErrBackendClosed = errors.New("fcgi: backend closed the connection before the end of the response")

	// ErrProtocol is wrapped by errors reporting a record the backend must
	// not send, such as a record for a request ID the client did not use.
	ErrProtocol = errors.New("fcgi: protocol error from backend")

	// ErrAborted is returned by a response Body read after the Body was
	// closed.
	ErrAborted = errors.New("fcgi: response body closed")
)

// A ProtocolStatusError reports an END_REQUEST whose protocol status is not
// FCGI_REQUEST_COMPLETE (§5.5): the application rejected the request without
// processing it. It matches [ErrOverloaded], [ErrCantMpxConn] or
// [ErrUnknownRole] with [errors.Is], according to Status.
type ProtocolStatusError struct {
	// Addr is the backend that answered.
	Addr string
	// Status is the protocol status: 1 CANT_MPX_CONN, 2 OVERLOADED,
	// 3 UNKNOWN_ROLE, or a value the specification does not define.
	Status uint8
}

// Error names the status and the backend.
func (e *ProtocolStatusError) Error() string {
	var what string
	switch e.Status {
	case 1:
		what = "CANT_MPX_CONN"
	case 2:
		what = "OVERLOADED"
	case 3:
		what = "UNKNOWN_ROLE"
	default:
		what = "status " + strconv.Itoa(int(e.Status))
	}
	return "fcgi: backend " + e.Addr + " refused the request: " + what
}

// Is reports whether target is the sentinel for e's status.
func (e *ProtocolStatusError) Is(target error) bool {
	switch e.Status {
	case 1:
		return target == ErrCantMpxConn
	case 2:
		return target == ErrOverloaded
	case 3:
		return target == ErrUnknownRole
	}
	return false
}

// A TimeoutError reports that one of [Client]'s timeouts expired. It
// satisfies [net.Error] with Timeout returning true, and matches
// [context.DeadlineExceeded] with [errors.Is].
type TimeoutError struct {
	// Op names the timeout: "dial" (DialTimeout), "write request"
	// (WriteTimeout), "response header" (ResponseHeaderTimeout),
	// "read response" (ReadTimeout) or "get values" (ProbeTimeout).
	Op string
	// Addr is the backend address.
	Addr string
}

// Error names the operation and the backend.
func (e *TimeoutError) Error() string {
	return "fcgi: timeout: " + e.Op + " " + e.Addr
}

// Timeout returns true.
func (e *TimeoutError) Timeout() bool { return true }

// Temporary returns true. It exists to satisfy [net.Error].
func (e *TimeoutError) Temporary() bool { return true }

// Is reports whether target is [context.DeadlineExceeded].
func (e *TimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

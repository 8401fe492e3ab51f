package fcgi

import (
	"context"
	"errors"
	"net"

	"github.com/fcgikit/fcgi/internal/wire"
)

// Errors a handler or a caller of the server may see.
var (
	// ErrRequestAborted is returned by Read on a request body, and by Write
	// on a response, once the web server has aborted the request with
	// FCGI_ABORT_REQUEST. The request's context is then cancelled with this
	// error as its cause.
	ErrRequestAborted = errors.New("fcgi: request aborted by the web server")

	// ErrConnClosed is returned by Read on a request body, and by Write on a
	// response, once the connection the request came on is closed: the web
	// server closed it (this is how nginx, Apache, lighttpd and Caddy abort a
	// request), it broke, or the server was closed. The request's context is
	// then cancelled with this error as its cause.
	ErrConnClosed = errors.New("fcgi: connection to web server closed")

	// ErrDataLength is returned by FilterData.Read when the FCGI_DATA stream
	// of a Filter request holds more or fewer bytes than its FCGI_DATA_LENGTH
	// variable declared.
	ErrDataLength = errors.New("fcgi: FCGI_DATA length differs from FCGI_DATA_LENGTH")

	// ErrServerClosed is returned by Server.Serve after a call to
	// Server.Shutdown or Server.Close.
	ErrServerClosed = errors.New("fcgi: Server closed")

	// ErrNotListener is returned by Serve when it is given no listener and
	// file descriptor 0 is not a listening socket, as happens when the
	// program is started from a shell rather than by a web server or a
	// process manager such as spawn-fcgi or systemd.
	ErrNotListener = errors.New("fcgi: no listener given and file descriptor 0 is not a listening socket")

	// ErrReadTimeout is returned by Read on a request body whose input did
	// not arrive within Server.ReadTimeout. It is a net.Error whose Timeout
	// method reports true, and it matches context.DeadlineExceeded with
	// errors.Is.
	ErrReadTimeout error = &TimeoutError{Op: "read request"}
)

// Errors that stay inside the server: they reach its log, never a caller.
var (
	// errParamsTooLarge is the cause of a request refused because its PARAMS
	// stream passed Server.MaxParamsBytes. The web server is sent status 431.
	errParamsTooLarge = errors.New("fcgi: request params too large")

	// errOverBudget is the cause of a request refused because its PARAMS
	// would take the input the server holds past Server.MaxBufferedBytes.
	// The web server is sent FCGI_OVERLOADED.
	errOverBudget = errors.New("fcgi: MaxBufferedBytes reached")

	// errDuplicateRequest ends a connection whose web server sent a
	// BEGIN_REQUEST for a request ID that is still active (§3.3: an ID is
	// active from BEGIN_REQUEST until END_REQUEST).
	errDuplicateRequest = errors.New("fcgi: BEGIN_REQUEST for an active request ID")
)

// Errors returned by [Client] and [Gateway]. Their texts will not change.
var (
	// ErrClientClosed is returned by [Client.Do] after [Client.Close].
	ErrClientClosed = errors.New("fcgi: client closed")

	// ErrDial is matched, with errors.Is, by the errors [Client.Do] and
	// [Client.GetValues] return when they cannot connect to a backend
	// (refused, no such socket file, unreachable): the backend is down, not
	// busy. A connection attempt that times out is a [*TimeoutError] with Op
	// "dial" instead.
	ErrDial = errors.New("fcgi: cannot connect to backend")

	// ErrNoBackend is returned by [Client.Do] when the Client has no backend
	// address.
	ErrNoBackend = errors.New("fcgi: no backend address")

	// ErrOverloaded matches a [ProtocolStatusError] whose status is
	// FCGI_OVERLOADED: the application refused the request because it ran out
	// of a resource such as database connections (§5.5).
	ErrOverloaded = errors.New("fcgi: application overloaded")

	// ErrCantMpxConn matches a [ProtocolStatusError] whose status is
	// FCGI_CANT_MPX_CONN: the application refused a second concurrent request
	// on one connection (§5.5).
	ErrCantMpxConn = errors.New("fcgi: application cannot multiplex connections")

	// ErrUnknownRole matches a [ProtocolStatusError] whose status is
	// FCGI_UNKNOWN_ROLE: the application does not play the requested role
	// (§5.5).
	ErrUnknownRole = errors.New("fcgi: application does not know the role")

	// ErrMalformedResponse is wrapped by errors reporting a CGI response
	// header that cannot be parsed: a line without a colon, an invalid
	// Status, or a response that ends inside its header.
	ErrMalformedResponse = errors.New("fcgi: malformed CGI response")

	// ErrResponseHeaderTooLarge is returned when the CGI response header is
	// longer than [Client.MaxResponseHeaderBytes].
	ErrResponseHeaderTooLarge = errors.New("fcgi: CGI response header too large")

	// ErrBackendClosed is wrapped by errors reporting a connection that ended
	// before the backend sent END_REQUEST.
	ErrBackendClosed = errors.New("fcgi: backend closed the connection before the end of the response")

	// ErrProtocol is wrapped by errors reporting a record the backend must
	// not send, such as a record for a request ID the client did not use.
	ErrProtocol = errors.New("fcgi: protocol error from backend")
)

// A ProtocolStatusError reports an END_REQUEST whose protocol status is not
// FCGI_REQUEST_COMPLETE (§5.5): the application rejected the request without
// processing it. It matches [ErrOverloaded], [ErrCantMpxConn] or
// [ErrUnknownRole] with [errors.Is], according to Status.
type ProtocolStatusError struct {
	// Addr is the backend that answered.
	Addr string
	// Status is the protocol status: 1 CANT_MPX_CONN, 2 OVERLOADED, 3
	// UNKNOWN_ROLE, or a value the specification does not define.
	Status uint8
}

// Error names the status and the backend.
func (e *ProtocolStatusError) Error() string {
	return "fcgi: backend " + e.Addr + " refused the request: " + wire.ProtocolStatus(e.Status).String()
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

// A TimeoutError reports that a timeout expired: one of [Client]'s, or the
// server's ReadTimeout ([ErrReadTimeout]). It satisfies [net.Error] with
// Timeout returning true, and matches [context.DeadlineExceeded] with
// [errors.Is].
type TimeoutError struct {
	// Op names the timeout: for a Client "dial" (DialTimeout), "write
	// request" (WriteTimeout), "response header" (ResponseHeaderTimeout),
	// "read response" (ReadTimeout) or "get values" (ProbeTimeout); for the
	// server "read request" (Server.ReadTimeout).
	Op string
	// Addr is the backend address; empty for the server's timeouts.
	Addr string
}

// Error names the operation and the backend.
func (e *TimeoutError) Error() string {
	if e.Addr == "" {
		return "fcgi: timeout: " + e.Op
	}
	return "fcgi: timeout: " + e.Op + " " + e.Addr
}

// Timeout returns true.
func (e *TimeoutError) Timeout() bool { return true }

// Temporary returns true. It exists to satisfy [net.Error].
func (e *TimeoutError) Temporary() bool { return true }

// Is reports whether target is [context.DeadlineExceeded].
func (e *TimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// isTimeout reports whether err is a timeout: a [*TimeoutError], or a
// deadline of a connection ([os.ErrDeadlineExceeded]) or a context.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

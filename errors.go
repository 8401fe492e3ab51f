package fcgi

import (
	"context"
	"errors"

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
	// server closed it (this is how nginx, Apache, lighttpd and Caddy abort
	// a request), it broke, or the server was closed. The request's context
	// is then cancelled with this error as its cause.
	ErrConnClosed = errors.New("fcgi: connection to web server closed")

	// ErrDataLength is returned by FilterData.Read when the FCGI_DATA
	// stream of a Filter request holds more or fewer bytes than its
	// FCGI_DATA_LENGTH variable declared.
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
	// not arrive within Server.ReadTimeout. It is a net.Error whose
	// Timeout method reports true, and it matches
	// context.DeadlineExceeded with errors.Is.
	ErrReadTimeout error = &timeoutError{"fcgi: request input timed out"}

	// ErrParamsTooLarge is the cause of a request refused because its
	// PARAMS stream passed Server.MaxParamsBytes. The web server is sent
	// status 431.
	ErrParamsTooLarge = errors.New("fcgi: request params too large")
)

// Errors that end a connection because the web server broke the protocol.
// Serve does not return them: they are logged with the peer's address, and
// only that connection is closed.
var (
	// ErrVersion: a record whose version is not 1.
	ErrVersion = wire.ErrVersion
	// ErrBodyLength: a BEGIN_REQUEST (or other fixed-size body) of the
	// wrong length.
	ErrBodyLength = wire.ErrBodyLength
	// ErrPairLength: a name-value pair whose lengths run past its stream.
	ErrPairLength = wire.ErrPairLength
	// ErrDuplicateRequest: a BEGIN_REQUEST for a request ID that is still
	// active (§3.3: an ID is active from BEGIN_REQUEST until END_REQUEST).
	ErrDuplicateRequest = errors.New("fcgi: BEGIN_REQUEST for an active request ID")
)

// timeoutError is a sentinel that net/http-style code recognises as a
// timeout.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded
}

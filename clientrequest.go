package fcgi

import (
	"io"
	"net/http"
)

// A Request is one FastCGI request for [Client.Do].
type Request struct {
	// Role is the role the application plays; the zero value means
	// [RoleResponder].
	Role Role

	// Params are the request's CGI/FastCGI variables (REQUEST_METHOD,
	// SCRIPT_FILENAME, ...), sent as FCGI_PARAMS. The client adds nothing: in
	// particular CONTENT_LENGTH, which PHP-FPM needs to read a body, is the
	// caller's job ([Gateway] sets it).
	Params map[string]string

	// Body is sent as FCGI_STDIN. Nil (or [http.NoBody]) sends an empty
	// stream. The body is streamed while the response may already be
	// arriving; Do may return before Body has been read to its end, and the
	// client stops reading it once the response has ended.
	Body io.Reader

	// GetBody, when not nil, returns a fresh copy of Body. It makes a request
	// with a body replayable, so that it can be retried (see [Client]).
	// [Gateway] sets it for the bodies it buffers.
	GetBody func() (io.Reader, error)

	// Data is sent as FCGI_DATA after STDIN, for the [RoleFilter] role. Nil
	// sends no DATA stream for other roles and an empty one for Filter.
	Data io.Reader

	// GetData, when not nil, returns a fresh copy of Data, as GetBody does
	// for Body; a request with Data is retried only with it.
	GetData func() (io.Reader, error)

	// Stderr receives the application's FCGI_STDERR output as it arrives. It
	// is written by the goroutine that reads the response: the one in Do,
	// then the one reading the response Body. Nil discards it.
	Stderr io.Writer

	// Idempotent marks the request as safe to send twice. Without it a
	// request counts as idempotent when REQUEST_METHOD is GET, HEAD, OPTIONS
	// or TRACE.
	Idempotent bool

	// env, set by Gateway, holds more parameters, sent after Params: a
	// gateway builds them per request, and a map for them cost more than
	// anything else it did but the system calls.
	env cgiEnv

	// header, set by Gateway, is the empty map the response header is parsed
	// into (the ResponseWriter's), which saves building one and copying it.
	header http.Header

	// hints, set by Gateway for an HTTP/1.1 or later client, receives the
	// application's 103 Early Hints: handing the ResponseWriter down costs no
	// allocation, where a context with an httptrace.ClientTrace costs three.
	hints http.ResponseWriter
}

// idempotent reports whether r may be sent again.
func (r *Request) idempotent() bool {
	if r.Idempotent {
		return true
	}
	m, ok := r.Params["REQUEST_METHOD"]
	if !ok {
		m, _ = r.env.get("REQUEST_METHOD")
	}
	switch m {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// replayable reports whether r's streams can be sent again.
func (r *Request) replayable() bool {
	return (r.Body == nil || r.Body == http.NoBody || r.GetBody != nil) && (r.Data == nil || r.GetData != nil)
}

// A Response is the application's answer to a [Request]: the CGI response
// header, parsed, and the rest of STDOUT as Body.
type Response struct {
	// StatusCode is the HTTP status: from the Status header, else 302 when
	// there is a Location header, else 200.
	StatusCode int

	// Header holds the CGI response header without Status. Keys are in
	// canonical form.
	Header http.Header

	// Body streams the rest of STDOUT. It returns io.EOF once the
	// application's END_REQUEST has arrived; [Response.AppStatus] is then
	// valid. The caller must close it: closing it before io.EOF abandons the
	// request (the connection is closed, or on a multiplexed connection the
	// request is aborted with FCGI_ABORT_REQUEST). A connection is reused
	// only when its Body was read to io.EOF. A Read after Close returns
	// [http.ErrBodyReadAfterClose]. As with net/http, Close may be called
	// from another goroutine while a Read waits: that Read returns
	// [http.ErrBodyReadAfterClose] at once.
	Body io.ReadCloser

	call *call
}

// Buffered reports whether a Read of Body would return without waiting for
// the application: body bytes are in hand, or the end of the response has
// arrived. A proxy flushes its client only when Buffered is false, so that a
// response that arrived whole leaves in one write while a stream still
// reaches the client as the application writes it.
func (r *Response) Buffered() bool { return r.call != nil && r.call.buffered() }

// AppStatus returns the application's exit status from END_REQUEST, and
// whether it has arrived: it has once Body returned io.EOF.
func (r *Response) AppStatus() (status uint32, ok bool) {
	if r.call == nil {
		return 0, false
	}
	return r.call.appStatus()
}

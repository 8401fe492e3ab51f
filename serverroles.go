package fcgi

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// roleHandler returns the handler that serves role, or nil when the server
// does not play that role and answers FCGI_UNKNOWN_ROLE.
func (s *Server) roleHandler(role Role) http.Handler {
	switch role {
	case RoleResponder:
		return s.handler()
	case RoleAuthorizer:
		return s.Authorizer
	case RoleFilter:
		return s.Filter
	}
	return nil
}

// requestOf returns the FastCGI request behind r, or nil.
func requestOf(r *http.Request) *request {
	req, _ := r.Context().Value(envKey{}).(*request)
	return req
}

// RoleOf returns the role in which the web server sent r: [RoleResponder],
// [RoleAuthorizer] or [RoleFilter]. It returns 0, which is none of them, for
// a request that did not come through this package.
func RoleOf(r *http.Request) Role {
	if req := requestOf(r); req != nil {
		return req.role
	}
	return 0
}

// responseOf returns the response behind w, unwrapping middleware that wraps
// a ResponseWriter and has an Unwrap method, as http.ResponseController does.
// It returns nil when w is not one of ours.
func responseOf(w http.ResponseWriter) *response {
	for {
		switch t := w.(type) {
		case *response:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

// SetVariable makes an Authorizer's response pass the variable name, with
// value, on to the web server: it sets the response header "Variable-"+name,
// keeping name's case, which Header().Set would change (Variable-REMOTE_USER
// would become Variable-Remote_user).
//
// An Authorizer allows a request by answering status 200; its variables then
// go with the request to the next stage: lighttpd passes each to the
// responder that serves the request as a CGI variable, its name upper-cased
// (ProcessEnv shows it to a Go responder), and Apache's mod_authnz_fcgi takes
// REMOTE_USER as the authenticated user. Any other status denies the request,
// and the web server sends that status, the headers and the body to the
// client.
//
// SetVariable must be called before the response header is written.
func SetVariable(w http.ResponseWriter, name, value string) {
	w.Header()["Variable-"+name] = []string{value}
}

// SetAppStatus sets the application status that the request's
// FCGI_END_REQUEST record reports to the web server (§5.5), the equivalent of
// a CGI program's exit status. It is 0 unless set, and may be set at any time
// until the handler returns. Web servers log it at most; the HTTP status is
// what the client sees. It does nothing when w is not a response of this
// package.
func SetAppStatus(w http.ResponseWriter, status uint32) {
	if rw := responseOf(w); rw != nil {
		rw.appStatus = status
	}
}

// FilterData is the file a Filter request filters: the FCGI_DATA stream that
// the web server sends after the request body (§6.4). Read it with Read until
// io.EOF; it is not safe for concurrent use.
//
// The web server sends FCGI_DATA only once it has sent the whole request
// body: a handler reads (or closes) r.Body first, or lets the server buffer
// it, which it does up to Server.MaxBodyBuffer.
type FilterData struct {
	// LastMod is the file's modification time, from FCGI_DATA_LAST_MOD
	// (seconds since the epoch); the zero Time when the web server did not
	// send it.
	LastMod time.Time

	// Length is the file's size in bytes, from FCGI_DATA_LENGTH; -1 when the
	// web server did not send it. Read checks the stream against it.
	Length int64

	pipe  *bodyPipe // fed by the serve goroutine
	ended bool      // the empty DATA record arrived; owned by the serve goroutine
	n     int64     // bytes returned by Read
	err   error     // sticky ErrDataLength
}

// FilterDataOf returns the FCGI_DATA stream of r. ok is false unless r is a
// Filter request (see RoleOf) that came through this package.
func FilterDataOf(r *http.Request) (d *FilterData, ok bool) {
	req := requestOf(r)
	if req == nil || req.filter == nil {
		return nil, false
	}
	return req.filter, true
}

// Read reads the file's next bytes. At the end of the stream it returns
// io.EOF, or ErrDataLength if the stream was shorter than Length. A stream
// longer than Length yields Length bytes and then ErrDataLength. Once the
// request is aborted or its connection closed, Read returns ErrRequestAborted
// or ErrConnClosed.
func (d *FilterData) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.pipe.Read(p)
	d.n += int64(n)
	if d.Length < 0 {
		return n, err
	}
	if d.n > d.Length {
		n -= int(d.n - d.Length)
		d.n = d.Length
		d.err = ErrDataLength
		return n, d.err
	}
	if err == io.EOF && d.n < d.Length {
		d.err = ErrDataLength
		return n, d.err
	}
	return n, err
}

// dataMeta reads FCGI_DATA_LENGTH (-1 when absent or invalid) and
// FCGI_DATA_LAST_MOD (the zero Time likewise) from a Filter request's
// variables.
func dataMeta(env string) (length int64, lastMod time.Time) {
	length = -1
	wire.ForEachPair(env, func(name, value string) bool {
		switch name {
		case "FCGI_DATA_LENGTH":
			if n, err := strconv.ParseInt(value, 10, 64); err == nil && n >= 0 {
				length = n
			}
		case "FCGI_DATA_LAST_MOD":
			if sec, err := strconv.ParseInt(value, 10, 64); err == nil && sec > 0 {
				lastMod = time.Unix(sec, 0)
			}
		}
		return true
	})
	return length, lastMod
}

// filterData returns req's FCGI_DATA stream, made on first use from the
// request's variables. Called by the serve goroutine only: at the start of a
// Filter request's handler, or by a DATA record that came before it.
func (c *conn) filterData(req *request) *FilterData {
	if req.filter != nil {
		return req.filter
	}
	d := &FilterData{Length: -1, pipe: newBodyPipe(c.srv, -1, c.srv.maxBodyBuffer())}
	d.Length, d.LastMod = dataMeta(req.env)
	d.pipe.inputDeadline = req.deadline
	// The request's context ends when it is aborted, its connection closes or
	// its handler returns: a Read or a full pipe waiting for the serve
	// goroutine or the handler gives up then.
	context.AfterFunc(req.ctx, func() { d.pipe.closeWithError(context.Cause(req.ctx)) })
	req.filter = d
	return d
}

// data feeds a Filter request's FCGI_DATA stream. DATA records for other
// roles, or after the stream's end, are ignored.
func (c *conn) data(req *request, content []byte) {
	if req.role != RoleFilter || !req.paramsDone {
		return
	}
	if !req.started {
		// DATA before STDIN breaks the order of §6.4, but starting the
		// handler now keeps the connection reading rather than waiting on a
		// data buffer nobody reads yet.
		c.start(req)
		if c.lookup(req.id) != req {
			return // refused, and already answered
		}
	}
	d := c.filterData(req)
	if d.ended {
		return
	}
	if len(content) == 0 {
		d.ended = true
		d.pipe.closeWrite()
		return
	}
	c.flushAnswers() // the write may wait for the handler
	if !d.pipe.write(content) {
		c.inputLate(req)
	}
}

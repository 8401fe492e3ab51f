package fcgi

import (
	"io"
	"net/http"
	"os"

	"github.com/fcgikit/fcgi/internal/wire"
)

// Stderr returns a writer whose output goes to the web server on the
// FCGI_STDERR stream of w's request (§5.3), where web servers write it to
// their error log: nginx logs "FastCGI sent in stderr", Apache and lighttpd
// log it too, and HAProxy with log-stderr.
//
// Each Write is sent at once, as one or more STDERR records kept together on
// the connection, before or after the response header, and before the
// request's FCGI_END_REQUEST: the server ends the stream with its empty
// record if anything was written. Writes after the handler has returned fail
// with http.ErrHandlerTimeout, as response writes do, and writes after the
// request was aborted with ErrRequestAborted. The writer is safe for
// concurrent use. An empty Write sends nothing.
//
// When w is not a response of this package (a handler run by net/http or
// httptest), Stderr returns os.Stderr, which is where a CGI program's
// standard error goes.
func Stderr(w http.ResponseWriter) io.Writer {
	rw := responseOf(w)
	if rw == nil {
		return os.Stderr
	}
	return stderrWriter{rw.req}
}

// stderrWriter writes STDERR records for one request.
type stderrWriter struct{ req *request }

func (e stderrWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		// An empty record would end the stream.
		return 0, nil
	}
	req := e.req
	c := req.conn
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// endRequest takes the request out of the table under wmu and sends
	// END_REQUEST in the same hold, so a write that sees the request still
	// active goes out before the END_REQUEST.
	c.mu.Lock()
	active := c.reqs[req.id] == req
	c.mu.Unlock()
	if req.aborted.Load() {
		return 0, ErrRequestAborted
	}
	if !active {
		return 0, http.ErrHandlerTimeout
	}
	err := c.writeLocked(func(w *wire.Writer) error {
		return w.WriteStream(wire.TypeStderr, req.id, p)
	})
	if err != nil {
		return 0, err
	}
	req.stderr = true
	return len(p), nil
}

// endStderr appends the empty STDERR record that ends the request's stream,
// if anything was sent on it. The caller holds wmu.
func (req *request) endStderr(w *wire.Writer) error {
	if !req.stderr {
		return nil
	}
	return w.WriteRecord(wire.TypeStderr, req.id, nil)
}

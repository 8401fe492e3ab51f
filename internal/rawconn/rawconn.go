// Package rawconn is the web server's end of a FastCGI connection, spoken
// record by record on top of package wire: for the fcgi command's
// subcommands and the tests that must see exactly what goes over the wire.
// It sets no deadlines and keeps no state beyond the connection: callers
// bound each wait themselves.
package rawconn

import (
	"fmt"
	"net"

	"github.com/fcgikit/fcgi/internal/wire"
)

// A Conn is one FastCGI connection from the web server's side. Write
// methods buffer in W; W.Flush sends. A Conn is not safe for concurrent
// use.
type Conn struct {
	NC net.Conn
	R  *wire.Reader
	W  *wire.Writer
}

// New returns a Conn on nc.
func New(nc net.Conn) *Conn {
	return &Conn{NC: nc, R: wire.NewReader(nc), W: wire.NewWriter(nc)}
}

// Close returns the reader's buffer and closes the connection.
func (c *Conn) Close() error {
	c.R.Release()
	return c.NC.Close()
}

// WriteBegin buffers a BEGIN_REQUEST.
func (c *Conn) WriteBegin(id uint16, role wire.Role, keepConn bool) error {
	var flags uint8
	if keepConn {
		flags = wire.FlagKeepConn
	}
	return c.W.WriteBeginRequest(id, role, flags)
}

// WriteParams buffers params, encoded pairs, as a PARAMS stream and the
// empty record that ends it.
func (c *Conn) WriteParams(id uint16, params []byte) error {
	if err := c.W.WriteStream(wire.TypeParams, id, params); err != nil {
		return err
	}
	return c.W.WriteRecord(wire.TypeParams, id, nil)
}

// WriteStdin buffers body as a STDIN stream and the empty record that ends
// it. A nil body still sends the empty record, as nginx does.
func (c *Conn) WriteStdin(id uint16, body []byte) error {
	if err := c.W.WriteStream(wire.TypeStdin, id, body); err != nil {
		return err
	}
	return c.W.WriteRecord(wire.TypeStdin, id, nil)
}

// WriteRequest buffers a whole request: BEGIN_REQUEST, the PARAMS stream
// and the STDIN stream.
func (c *Conn) WriteRequest(id uint16, role wire.Role, keepConn bool, params, stdin []byte) error {
	if err := c.WriteBegin(id, role, keepConn); err != nil {
		return err
	}
	if err := c.WriteParams(id, params); err != nil {
		return err
	}
	return c.WriteStdin(id, stdin)
}

// A Record is a record read from a Conn, its content copied.
type Record struct {
	wire.Header
	Content []byte
}

func (r Record) String() string { return fmt.Sprintf("%v %q", r.Header, r.Content) }

// Next reads one record.
func (c *Conn) Next() (Record, error) {
	rec, err := c.R.Next()
	if err != nil {
		return Record{}, err
	}
	return Record{Header: rec.Header, Content: append([]byte(nil), rec.Content...)}, nil
}

// A Response is what an application sent for one request.
type Response struct {
	// Records is every record read for the response, in order, those of
	// other requests and management records included.
	Records []Record
	Stdout  []byte
	Stderr  []byte
	// StdoutEnded is set when the empty STDOUT record arrived.
	StdoutEnded bool
	End         wire.EndRequest
	// Ended is set when END_REQUEST arrived; End is valid then.
	Ended bool
	// Foreign counts the records of Records with another request ID.
	Foreign int
}

// Add takes rec, a record of the response's own request, into r. A
// malformed END_REQUEST is an error wrapping wire.ErrBodyLength.
func (r *Response) Add(rec Record) error {
	switch rec.Type {
	case wire.TypeStdout:
		if len(rec.Content) == 0 {
			r.StdoutEnded = true
		}
		r.Stdout = append(r.Stdout, rec.Content...)
	case wire.TypeStderr:
		r.Stderr = append(r.Stderr, rec.Content...)
	case wire.TypeEndRequest:
		end, err := wire.ParseEndRequest(rec.Content)
		if err != nil {
			return err
		}
		r.End, r.Ended = end, true
	}
	return nil
}

// ReadResponse reads records until the END_REQUEST of request id. Records
// of other requests are kept in Records and counted in Foreign, otherwise
// ignored. On an error it returns what it read so far.
func (c *Conn) ReadResponse(id uint16) (*Response, error) {
	resp := &Response{}
	for !resp.Ended {
		rec, err := c.Next()
		if err != nil {
			return resp, err
		}
		resp.Records = append(resp.Records, rec)
		if rec.RequestID != id {
			resp.Foreign++
			continue
		}
		if err := resp.Add(rec); err != nil {
			return resp, err
		}
	}
	return resp, nil
}

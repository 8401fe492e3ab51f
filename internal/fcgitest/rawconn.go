// Package fcgitest drives FastCGI peers with raw records, for tests that
// must see exactly what goes over the wire: a web server's side of one
// connection, record by record (package rawconn), failing the test on
// what goes wrong.
package fcgitest

import (
	"net"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/rawconn"
	"github.com/fcgikit/fcgi/internal/wire"
)

// Record is a record read by a Conn, with its content copied.
type Record = rawconn.Record

// Conn is the web server's end of one FastCGI connection, a rawconn.Conn
// whose failures fail the test. Write methods buffer; Flush sends. Reads
// fail the test after a timeout.
type Conn struct {
	*rawconn.Conn
	t testing.TB
	// Timeout bounds each read; zero means 10 s.
	Timeout time.Duration
}

// NewConn wraps nc.
func NewConn(t testing.TB, nc net.Conn) *Conn {
	return &Conn{Conn: rawconn.New(nc), t: t}
}

// Dial connects to a server at network, addr.
func Dial(t testing.TB, network, addr string) *Conn {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return NewConn(t, nc)
}

// Begin buffers a BEGIN_REQUEST.
func (c *Conn) Begin(id uint16, role wire.Role, keepConn bool) *Conn {
	c.WriteBegin(id, role, keepConn)
	return c
}

// Params buffers a PARAMS stream holding the pairs name, value, name,
// value... and its empty end record.
func (c *Conn) Params(id uint16, kv ...string) *Conn {
	c.WriteParams(id, Pairs(kv...))
	return c
}

// Stdin buffers body as STDIN and the empty end record.
func (c *Conn) Stdin(id uint16, body []byte) *Conn {
	c.WriteStdin(id, body)
	return c
}

// Record buffers one record of any type.
func (c *Conn) Record(t wire.Type, id uint16, content []byte) *Conn {
	c.W.WriteRecord(t, id, content)
	return c
}

// Flush sends what is buffered.
func (c *Conn) Flush() {
	c.t.Helper()
	if err := c.W.Flush(); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Get sends a whole GET request for uri on id and flushes.
func (c *Conn) Get(id uint16, keepConn bool, uri string, kv ...string) {
	c.t.Helper()
	c.Begin(id, wire.RoleResponder, keepConn).
		Params(id, append([]string{"REQUEST_METHOD", "GET", "REQUEST_URI", uri, "SERVER_PROTOCOL", "HTTP/1.1"}, kv...)...).
		Stdin(id, nil).Flush()
}

// Next reads one record, failing the test on error or timeout.
func (c *Conn) Next() Record {
	c.t.Helper()
	rec, err := c.TryNext()
	if err != nil {
		c.t.Fatalf("read record: %v", err)
	}
	return rec
}

// TryNext reads one record.
func (c *Conn) TryNext() (Record, error) {
	d := c.Timeout
	if d == 0 {
		d = 10 * time.Second
	}
	c.NC.SetReadDeadline(time.Now().Add(d))
	return c.Conn.Next()
}

// Response is what an application sent for one request.
type Response = rawconn.Response

// ReadResponse reads records until the END_REQUEST for id. Records for
// other IDs fail the test: use ReadResponses when several are in flight.
func (c *Conn) ReadResponse(id uint16) Response {
	c.t.Helper()
	rs := c.ReadResponses(id)
	return rs[id]
}

// ReadResponses reads records until every id has its END_REQUEST. A
// record of another request, of a type no response has, or of STDOUT
// after its end fails the test.
func (c *Conn) ReadResponses(ids ...uint16) map[uint16]Response {
	c.t.Helper()
	out := make(map[uint16]Response)
	want := make(map[uint16]bool)
	for _, id := range ids {
		want[id] = true
	}
	for len(want) > 0 {
		rec := c.Next()
		if !want[rec.RequestID] {
			c.t.Fatalf("record for unexpected request: %v", rec)
		}
		r := out[rec.RequestID]
		switch {
		case rec.Type == wire.TypeStdout && r.StdoutEnded:
			c.t.Fatalf("STDOUT after the end of STDOUT: %v", rec)
		case rec.Type != wire.TypeStdout && rec.Type != wire.TypeStderr && rec.Type != wire.TypeEndRequest:
			c.t.Fatalf("unexpected record %v", rec)
		}
		r.Records = append(r.Records, rec)
		if err := r.Add(rec); err != nil {
			c.t.Fatalf("END_REQUEST: %v", err)
		}
		if r.Ended {
			delete(want, rec.RequestID)
		}
		out[rec.RequestID] = r
	}
	return out
}

// Pairs encodes name, value, name, value... as name-value pairs.
func Pairs(kv ...string) []byte {
	if len(kv)%2 != 0 {
		panic("fcgitest: odd number of strings for pairs")
	}
	var b []byte
	for i := 0; i < len(kv); i += 2 {
		b = wire.AppendPair(b, kv[i], kv[i+1])
	}
	return b
}

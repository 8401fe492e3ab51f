package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

// rawConn is the web server's end of one FastCGI connection, spoken record
// by record, for subcommands that must see exactly what goes over the wire
// (values, lint, bench, call --raw). It is not safe for concurrent use.
type rawConn struct {
	nc net.Conn
	r  *wire.Reader
	w  *wire.Writer
}

func dialRaw(ctx context.Context, addr string, timeout time.Duration) (*rawConn, error) {
	nc, err := dial(ctx, addr, timeout)
	if err != nil {
		return nil, err
	}
	return &rawConn{nc: nc, r: wire.NewReader(nc), w: wire.NewWriter(nc)}, nil
}

func (c *rawConn) Close() error {
	c.r.Release()
	return c.nc.Close()
}

// writeRequest buffers a whole request: BEGIN_REQUEST, the PARAMS stream and
// the STDIN stream, each ended by its empty record. A nil stdin still sends
// the empty STDIN record, as nginx does.
func (c *rawConn) writeRequest(id uint16, role wire.Role, keepConn bool, params, stdin []byte) error {
	var flags uint8
	if keepConn {
		flags = wire.FlagKeepConn
	}
	if err := c.w.WriteBeginRequest(id, role, flags); err != nil {
		return err
	}
	if err := c.w.WriteStream(wire.TypeParams, id, params); err != nil {
		return err
	}
	if err := c.w.WriteRecord(wire.TypeParams, id, nil); err != nil {
		return err
	}
	if err := c.w.WriteStream(wire.TypeStdin, id, stdin); err != nil {
		return err
	}
	return c.w.WriteRecord(wire.TypeStdin, id, nil)
}

// rawRecord is a record with its content copied, as kept by readResponse.
type rawRecord struct {
	wire.Header
	Content []byte
}

// rawResponse is everything an application sent for one request.
type rawResponse struct {
	records []rawRecord // every record read, any ID, in order
	stdout  []byte
	stderr  []byte
	end     wire.EndRequest
	ended   bool
	// stdoutClosed is true if an empty STDOUT record came before
	// END_REQUEST.
	stdoutClosed bool
	// foreign counts records with another request ID.
	foreign int
}

// readResponse reads records until END_REQUEST for id, or until deadline.
// Every record is kept; records for other IDs and management records are
// kept but otherwise ignored.
func (c *rawConn) readResponse(id uint16, deadline time.Time) (*rawResponse, error) {
	c.nc.SetReadDeadline(deadline)
	resp := &rawResponse{}
	for {
		rec, err := c.r.Next()
		if err != nil {
			return resp, readError(err, "waiting for END_REQUEST")
		}
		resp.records = append(resp.records, rawRecord{rec.Header, append([]byte(nil), rec.Content...)})
		if rec.RequestID != id {
			resp.foreign++
			continue
		}
		switch rec.Type {
		case wire.TypeStdout:
			if len(rec.Content) == 0 {
				resp.stdoutClosed = true
			}
			resp.stdout = append(resp.stdout, rec.Content...)
		case wire.TypeStderr:
			resp.stderr = append(resp.stderr, rec.Content...)
		case wire.TypeEndRequest:
			end, err := wire.ParseEndRequest(rec.Content)
			if err != nil {
				return resp, &exitError{code: exitProtocol, err: err}
			}
			resp.end, resp.ended = end, true
			return resp, nil
		}
	}
}

// errNoAnswer: the application did not answer before the deadline.
var errNoAnswer = errors.New("no answer in time")

// readError explains a failed read: a timeout, the application closing the
// connection, or a protocol error.
func readError(err error, doing string) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &exitError{code: exitUnreachable, err: fmt.Errorf("%w %s", errNoAnswer, doing)}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &exitError{code: exitUnreachable, err: fmt.Errorf("connection closed by the application %s", doing)}
	case errors.Is(err, wire.ErrVersion):
		return &exitError{code: exitProtocol, err: err}
	}
	return &exitError{code: exitUnreachable, err: fmt.Errorf("%s: %w", doing, err)}
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

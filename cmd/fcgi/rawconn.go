package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi/internal/rawconn"
	"github.com/fcgikit/fcgi/internal/wire"
)

// dialRaw connects to addr for the subcommands that must see exactly what
// goes over the wire (values, lint, bench, call --raw): the web server's
// end of one connection, spoken record by record.
func dialRaw(ctx context.Context, addr string, timeout time.Duration) (*rawconn.Conn, error) {
	nc, err := dial(ctx, addr, timeout)
	if err != nil {
		return nil, err
	}
	return rawconn.New(nc), nil
}

// readResponse reads c's records until END_REQUEST for id, or until
// deadline, and gives a failure the exit status it has.
func readResponse(c *rawconn.Conn, id uint16, deadline time.Time) (*rawconn.Response, error) {
	c.NC.SetReadDeadline(deadline)
	resp, err := c.ReadResponse(id)
	if err != nil {
		return resp, readError(err, "waiting for END_REQUEST")
	}
	return resp, nil
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
	case errors.Is(err, wire.ErrVersion), errors.Is(err, wire.ErrBodyLength):
		return &exitError{code: exitProtocol, err: err}
	}
	return &exitError{code: exitUnreachable, err: fmt.Errorf("%s: %w", doing, err)}
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// FuzzClientResponse plays arbitrary bytes to the client as a backend's
// answer. The client must not panic or hang, and must fail only with its
// documented errors.
func FuzzClientResponse(f *testing.F) {
	rec := func(t wire.Type, id uint16, content string) []byte {
		var b bytes.Buffer
		w := wire.NewWriter(&b)
		w.WriteRecord(t, id, []byte(content))
		w.Flush()
		return b.Bytes()
	}
	end := func(id uint16, status wire.ProtocolStatus) []byte {
		var b bytes.Buffer
		w := wire.NewWriter(&b)
		w.WriteEndRequest(id, 0, status)
		w.Flush()
		return b.Bytes()
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	f.Add(cat(rec(wire.TypeStdout, 1, "Status: 200\r\n\r\nhi"), rec(wire.TypeStdout, 1, ""), end(1, 0)))
	f.Add(cat(rec(wire.TypeStderr, 1, "warn"), rec(wire.TypeStdout, 1, "X: y\n"), rec(wire.TypeStdout, 1, "\nbody"), end(1, 0)))
	f.Add(end(1, 2))
	f.Add(cat(rec(wire.TypeStdout, 2, "\r\n"), end(2, 0)))
	f.Add(cat(rec(wire.TypeGetValuesResult, 0, ""), rec(wire.TypeStdout, 1, "\r\n"), end(1, 0), rec(wire.TypeStdout, 1, "extra")))
	f.Add(rec(wire.TypeStdout, 1, strings.Repeat("x", 1000))[:20]) // cut inside a record
	f.Add(cat(rec(wire.TypeStdout, 1, "\r\nbody"), rec(wire.TypeEndRequest, 1, "short")))
	// Interim blocks (103 Early Hints), one split across records.
	f.Add(cat(rec(wire.TypeStdout, 1, "Status: 103\r\nLink: </a>\r"), rec(wire.TypeStdout, 1, "\n\r\nStatus: 103\nLink: </b>\n\nX: y\n\nbody"), rec(wire.TypeStdout, 1, ""), end(1, 0)))
	f.Add(cat(rec(wire.TypeStdout, 1, strings.Repeat("Status: 103\n\n", 20)+"\r\n"), end(1, 0)))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &fcgi.Client{
			Addr:                  "fuzz:1",
			ErrorLog:              quietLog,
			ResponseHeaderTimeout: time.Second,
			ReadTimeout:           time.Second,
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				client, backend := net.Pipe()
				go func() { io.Copy(io.Discard, backend) }()
				go func() {
					backend.Write(data)
					backend.Close()
				}()
				return client, nil
			},
		}
		defer c.Close()
		resp, err := c.Do(context.Background(), get("/"))
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil {
				return
			}
		}
		var pe *fcgi.ProtocolStatusError
		var te *fcgi.TimeoutError
		switch {
		case errors.Is(err, fcgi.ErrBackendClosed), errors.Is(err, fcgi.ErrProtocol),
			errors.Is(err, fcgi.ErrMalformedResponse), errors.Is(err, fcgi.ErrResponseHeaderTooLarge),
			errors.As(err, &pe), errors.As(err, &te):
		default:
			t.Fatalf("unexpected error %T %v", err, err)
		}
	})
}

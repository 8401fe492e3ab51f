package fcgi_test

import (
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/fcgikit/fcgi/internal/wire"
)

// A handler that ignores a body larger than the server's fixed drain
// allowance (1 MiB), on a connection without KEEP_CONN: the server must
// still take the whole declared body before it closes, or the web server,
// still sending it, gets EPIPE or a reset. nginx then answers 502
// ("writev() failed (32: Broken pipe) while sending request to upstream")
// although the response had arrived.
func TestCloseDrainsLargeUnreadBody(t *testing.T) {
	const size = 4 << 20
	transports(t, func(t *testing.T, network string) {
		addr := startServer(t, network, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "not reading your body")
		}))
		c := dial(t, network, addr)
		c.Begin(1, wire.RoleResponder, false).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", strconv.Itoa(size)).Flush()
		resp := c.ReadResponse(1)
		if _, body := parseCGI(t, resp.Stdout); body != "not reading your body" {
			t.Fatalf("body %q", body)
		}
		// The whole body, sent after the response as a web server
		// that does not watch for it would.
		c.W.WriteStream(wire.TypeStdin, 1, make([]byte, size))
		c.Record(wire.TypeStdin, 1, nil)
		if err := c.W.Flush(); err != nil {
			t.Fatalf("sending the body: %v", err)
		}
		c.NC.(interface{ CloseWrite() error }).CloseWrite()
		if _, err := c.TryNext(); err != io.EOF {
			t.Fatalf("want EOF, got %v", err)
		}
	})
}

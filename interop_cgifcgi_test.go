package fcgi_test

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"

	"github.com/fcgikit/fcgi/internal/peer"
)

// TestCGIFCGI sends requests with libfcgi's cgi-fcgi -bind -connect (the
// FastCGI developer kit's own client) to the server over TCP and a unix
// socket: the CGI response comes back whole, and a body given on stdin
// with CONTENT_LENGTH reaches the handler.
func TestCGIFCGI(t *testing.T) {
	peer.Require(t, "cgi-fcgi", "libfcgi-bin")
	forEachNetwork(t, func(t *testing.T, network string) {
		app := startInteropApp(t, network)
		env := func(method, uri, query string) map[string]string {
			return map[string]string{
				"REQUEST_METHOD":  method,
				"SERVER_PROTOCOL": "HTTP/1.1",
				"SCRIPT_NAME":     "/cgi/script",
				"SCRIPT_FILENAME": "/srv/cgi/script",
				"REQUEST_URI":     uri,
				"QUERY_STRING":    query,
				"REMOTE_ADDR":     "192.0.2.7",
				"REMOTE_PORT":     "4242",
				"HTTP_HOST":       "cgi.example",
				"HTTP_X_CUSTOM":   "from cgi-fcgi",
			}
		}

		t.Run("GET", func(t *testing.T) {
			out, err := peer.CGIFCGI(t, app.addr, env("GET", "/cgi/script?a=1", "a=1"), nil)
			if err != nil {
				t.Fatal(err)
			}
			h, body := parseCGI(t, out)
			want := map[string]string{
				"Status":         "201 Created",
				"Content-Type":   "text/plain; charset=utf-8",
				"Content-Length": strconv.Itoa(len(body)),
				"X-Script":       "/srv/cgi/script",
				"X-Custom":       "from cgi-fcgi",
				"X-Remote":       "192.0.2.7:4242",
				"X-Host":         "cgi.example",
			}
			for k, v := range want {
				if h[k] != v {
					t.Errorf("header %s = %q, want %q", k, h[k], v)
				}
			}
			if len(h) != len(want) {
				t.Errorf("headers %q, want exactly %q", h, want)
			}
			if wantBody := `GET /cgi/script?a=1 length=0 body=""`; body != wantBody {
				t.Errorf("body %q, want %q", body, wantBody)
			}
		})

		t.Run("POST", func(t *testing.T) {
			in := bytes.Repeat([]byte("posted body\n"), 10000) // 120000 bytes: several records
			e := env("POST", "/cgi/script", "")
			e["CONTENT_LENGTH"] = strconv.Itoa(len(in))
			e["CONTENT_TYPE"] = "text/plain"
			out, err := peer.CGIFCGI(t, app.addr, e, in)
			if err != nil {
				t.Fatal(err)
			}
			h, body := parseCGI(t, out)
			if h["Status"] != "201 Created" {
				t.Errorf("Status %q", h["Status"])
			}
			if want := fmt.Sprintf("POST /cgi/script length=%d body=%q", len(in), in); body != want {
				t.Errorf("body %.200q..., want %.200q...", body, want)
			}
		})
	})
}

package fcgitest

import (
	"bytes"

	"github.com/fcgikit/fcgi/internal/wire"
)

// NginxGetParams returns the pairs (name, value, name, value...) nginx
// sends for a plain GET of uri with Debian's fastcgi_params and a
// curl-like client: 22 pairs, about 450 bytes. Benchmarks use it so that
// every one measures the same realistic request.
func NginxGetParams(uri string) []string {
	return []string{
		"QUERY_STRING", "",
		"REQUEST_METHOD", "GET",
		"CONTENT_TYPE", "",
		"CONTENT_LENGTH", "",
		"SCRIPT_NAME", uri,
		"SCRIPT_FILENAME", "/srv/www" + uri,
		"REQUEST_URI", uri,
		"DOCUMENT_URI", uri,
		"DOCUMENT_ROOT", "/srv/www",
		"SERVER_PROTOCOL", "HTTP/1.1",
		"REQUEST_SCHEME", "http",
		"GATEWAY_INTERFACE", "CGI/1.1",
		"SERVER_SOFTWARE", "nginx/1.22.1",
		"REMOTE_ADDR", "127.0.0.1",
		"REMOTE_PORT", "51234",
		"SERVER_ADDR", "127.0.0.1",
		"SERVER_PORT", "8080",
		"SERVER_NAME", "localhost",
		"REDIRECT_STATUS", "200",
		"HTTP_HOST", "localhost:8080",
		"HTTP_USER_AGENT", "curl/8.14.1",
		"HTTP_ACCEPT", "*/*",
	}
}

// NginxGet returns a whole request as nginx sends it on a kept connection:
// BEGIN_REQUEST with KEEP_CONN, the PARAMS of NginxGetParams(uri) in one
// record, and an empty STDIN, all for request ID 1.
func NginxGet(uri string) []byte {
	var buf bytes.Buffer
	w := wire.NewWriter(&buf)
	w.WriteBeginRequest(1, wire.RoleResponder, wire.FlagKeepConn)
	w.WriteStream(wire.TypeParams, 1, Pairs(NginxGetParams(uri)...))
	w.WriteRecord(wire.TypeParams, 1, nil)
	w.WriteRecord(wire.TypeStdin, 1, nil)
	if err := w.Flush(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

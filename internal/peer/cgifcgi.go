package peer

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// cgiFCGITimeout bounds one CGIFCGI call.
const cgiFCGITimeout = 10 * time.Second

// CGIFCGI sends one FastCGI Responder request to addr ("host:port" or
// "unix:/abs/path") with cgi-fcgi -bind -connect (Debian package
// libfcgi-bin) and returns what the application wrote to FCGI_STDOUT:
// the CGI response, headers and body.
//
// cgi-fcgi passes its whole environment as the request's parameters, so
// it runs with exactly env and nothing else, as under env -i. A server
// usually needs at least REQUEST_METHOD, SCRIPT_NAME, SCRIPT_FILENAME,
// SERVER_PROTOCOL and REQUEST_URI. stdin is sent as FCGI_STDIN (set
// CONTENT_LENGTH to match).
//
// The call is killed after 10 seconds. The error, if any, includes what
// cgi-fcgi wrote to stderr, which is also where it copies the
// application's FCGI_STDERR.
func CGIFCGI(t testing.TB, addr string, env map[string]string, stdin []byte) (stdout []byte, err error) {
	t.Helper()
	bin := Require(t, "cgi-fcgi", "libfcgi-bin")
	// cgi-fcgi takes "host:port" for TCP and a bare path for unix.
	_, address := parseAddr(t, addr)

	keys := make([]string, 0, len(env))
	for k := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			t.Fatalf("peer cgi-fcgi: bad environment variable name %q", k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vars := make([]string, 0, len(keys))
	for _, k := range keys {
		vars = append(vars, k+"="+env[k])
	}

	ctx, cancel := context.WithTimeout(context.Background(), cgiFCGITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-bind", "-connect", address)
	cmd.Env = vars // non-nil: exactly these, as env -i does
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v", cgiFCGITimeout)
		}
		return out.Bytes(), fmt.Errorf("cgi-fcgi -connect %s: %w; stderr: %q", address, err, errOut.String())
	}
	if errOut.Len() > 0 {
		t.Logf("cgi-fcgi stderr: %s", errOut.String())
	}
	return out.Bytes(), nil
}

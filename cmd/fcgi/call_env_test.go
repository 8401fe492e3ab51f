package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

// envServer is fcgikit's server answering every request, in the
// Responder and the Authorizer role, with its variables as a JSON object,
// "REMOTE_ADDR" replaced by r.RemoteAddr, the address the application's
// handler sees. It returns the address ("unix:/path").
func envServer(t *testing.T) string {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env := fcgi.Params(r)
		env["REMOTE_ADDR"] = r.RemoteAddr
		json.NewEncoder(w).Encode(env)
	})
	return startFcgiServer(t, &fcgi.Server{Handler: h, Authorizer: h}, filepath.Join(t.TempDir(), "env.sock"))
}

// callEnv runs fcgi call with args and returns the variables the
// application received.
func callEnv(t *testing.T, args ...string) map[string]string {
	t.Helper()
	res := runFcgi(t, nil, append([]string{"call"}, args...)...)
	if res.code != 0 {
		t.Fatalf("fcgi call %s: exit %d, stderr %q", strings.Join(args, " "), res.code, res.stderr)
	}
	var env map[string]string
	if err := json.Unmarshal([]byte(res.stdout), &env); err != nil {
		t.Fatalf("not the variables: %q: %v", res.stdout, err)
	}
	return env
}

// TestCallRouting: call splits PATH_INFO off a path whose segment ends in
// --ext, and sends a path naming no script to --front-controller, as
// fcgi gateway --root does; a path naming no script without a front
// controller is sent as it is, with no PATH_INFO.
func TestCallRouting(t *testing.T) {
	addr := envServer(t)
	for _, tc := range []struct {
		args []string
		want map[string]string
	}{
		{[]string{"/app.php/a/b?x=1"}, map[string]string{
			"SCRIPT_NAME": "/app.php", "PATH_INFO": "/a/b", "SCRIPT_FILENAME": "/srv/app/app.php",
			"DOCUMENT_URI": "/app.php", "REQUEST_URI": "/app.php/a/b?x=1", "QUERY_STRING": "x=1",
		}},
		{[]string{"--front-controller", "/index.php", "/products/5?page=2"}, map[string]string{
			"SCRIPT_NAME": "/index.php", "PATH_INFO": "", "SCRIPT_FILENAME": "/srv/app/index.php",
			"DOCUMENT_URI": "/index.php", "REQUEST_URI": "/products/5?page=2", "QUERY_STRING": "page=2",
		}},
		{[]string{"--front-controller", "/index.php", "/other.php/x"}, map[string]string{
			"SCRIPT_NAME": "/other.php", "PATH_INFO": "/x", "SCRIPT_FILENAME": "/srv/app/other.php",
		}},
		{[]string{"--ext", ".cgi", "/bin/run.cgi/deep/path"}, map[string]string{
			"SCRIPT_NAME": "/bin/run.cgi", "PATH_INFO": "/deep/path", "SCRIPT_FILENAME": "/srv/app/bin/run.cgi",
		}},
	} {
		args := append([]string{"--root", "/srv/app", addr}, tc.args...)
		env := callEnv(t, args...)
		for k, v := range tc.want {
			if got, ok := env[k]; !ok || got != v {
				t.Errorf("%s: %s = %q (sent: %v), want %q", strings.Join(tc.args, " "), k, got, ok, v)
			}
		}
	}
	// No script in the path, no front controller: the path is the script.
	env := callEnv(t, "--root", "/srv/app", addr, "/status")
	if env["SCRIPT_NAME"] != "/status" || env["SCRIPT_FILENAME"] != "/srv/app/status" {
		t.Errorf("/status: SCRIPT_NAME %q, SCRIPT_FILENAME %q", env["SCRIPT_NAME"], env["SCRIPT_FILENAME"])
	}
	if v, ok := env["PATH_INFO"]; ok {
		t.Errorf("/status: PATH_INFO %q sent, want none", v)
	}
	// The Authorizer gets none of the variables §6.3 leaves out.
	env = callEnv(t, "--role", "authorizer", "--root", "/srv/app", addr, "/app.php/a")
	for _, k := range []string{"CONTENT_LENGTH", "PATH_INFO", "SCRIPT_NAME"} {
		if v, ok := env[k]; ok {
			t.Errorf("--role authorizer: %s = %q sent, want none", k, v)
		}
	}
}

// TestCallRemotePort: call has no HTTP client, so no client port: the
// application sees REMOTE_ADDR alone, never a made-up port 0, as behind
// the Gateway when the client's address has no port.
func TestCallRemotePort(t *testing.T) {
	addr := envServer(t)
	for _, raw := range []bool{false, true} {
		args := []string{addr, "/x"}
		if raw {
			args = append(args, "--raw")
		}
		res := runFcgi(t, nil, append([]string{"call"}, args...)...)
		body := res.stdout
		if raw {
			if i := strings.IndexByte(body, '{'); i >= 0 {
				body = body[i:] // after the CGI header
			}
		}
		var env map[string]string
		if err := json.Unmarshal([]byte(body), &env); err != nil {
			t.Fatalf("--raw=%v: %q: %v", raw, res.stdout, err)
		}
		if env["REMOTE_ADDR"] != "127.0.0.1" || env["REMOTE_PORT"] != "" {
			t.Errorf("--raw=%v: the application sees RemoteAddr %q, REMOTE_PORT %q; want 127.0.0.1 and no port", raw, env["REMOTE_ADDR"], env["REMOTE_PORT"])
		}
	}
}

// TestCallStderrNewline: what the application writes to FCGI_STDERR ends
// in a newline on the terminal even when the application's does not, so
// the shell prompt does not follow it on the same line.
func TestCallStderrNewline(t *testing.T) {
	sock := rawApp(t, func(w *wire.Writer, id uint16, _ []byte) {
		w.WriteRecord(wire.TypeStderr, id, []byte("PHP Warning: no newline"))
		w.WriteRecord(wire.TypeStdout, id, []byte("Content-Type: text/plain\n\nbody\n"))
		w.WriteRecord(wire.TypeStdout, id, nil)
		w.WriteEndRequest(id, 0, wire.StatusRequestComplete)
	})
	for _, raw := range []bool{false, true} {
		args := []string{"call", sock, "/x"}
		if raw {
			args = append(args, "--raw")
		}
		res := runFcgi(t, nil, args...)
		if res.code != 0 || res.stderr != "PHP Warning: no newline\n" {
			t.Errorf("--raw=%v: exit %d, stderr %q; want the warning and one newline", raw, res.code, res.stderr)
		}
	}
	// On a terminal, where both streams are one, the warning's line ends
	// before the body starts, as PHP-FPM's "Primary script unknown" does
	// before "File not found.".
	for _, raw := range []bool{false, true} {
		args := []string{"call", sock, "/x"}
		if raw {
			args = append(args, "--raw")
		}
		cmd := exec.Command(fcgiBin, args...)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "PHP Warning: no newline\n") || !strings.HasSuffix(string(out), "body\n") {
			t.Errorf("--raw=%v: %v, output on one stream %q; want the warning's line, then the body", raw, err, out)
		}
	}
	// A newline the application wrote is not doubled.
	sock = rawApp(t, func(w *wire.Writer, id uint16, _ []byte) {
		w.WriteRecord(wire.TypeStderr, id, []byte("line\n"))
		w.WriteRecord(wire.TypeStdout, id, []byte("Content-Type: text/plain\n\nbody\n"))
		w.WriteRecord(wire.TypeStdout, id, nil)
		w.WriteEndRequest(id, 0, wire.StatusRequestComplete)
	})
	if res := runFcgi(t, nil, "call", sock, "/x"); res.stderr != "line\n" {
		t.Errorf("stderr %q, want %q", res.stderr, "line\n")
	}
}

// TestCallMissingBodyFile: -d @FILE naming no file is a usage error, exit
// 2, told in one line that names the file (then the usage hint every
// usage error ends with), and nothing is sent.
func TestCallMissingBodyFile(t *testing.T) {
	var conns atomic.Int32
	sock := rawServer(t, func(nc net.Conn) { conns.Add(1); nc.Close() })
	missing := filepath.Join(t.TempDir(), "missing.json")
	res := runFcgi(t, nil, "call", "-d", "@"+missing, sock, "/x")
	lines := strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n")
	if res.code != exitUsage || len(lines) != 2 || !strings.Contains(lines[0], missing) || !strings.HasPrefix(lines[1], "Run 'fcgi call --help'") {
		t.Errorf("exit %d, stderr %q; want exit 2, one line naming %s and the usage hint", res.code, res.stderr, missing)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("%d connections made; want none before the body is read", n)
	}
}

// TestCallPHPFPMHint: PHP-FPM's "Primary script unknown" names neither the
// cause nor the setting; fcgi call follows it with the hint the Gateway
// logs, in both modes, and says nothing more when all went well.
func TestCallPHPFPMHint(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	fpm.WriteFile("ok.php", "<?php echo 'ok';")
	for _, raw := range []bool{false, true} {
		args := []string{"call", "--root", fpm.Root(), fpm.Addr(), "/missing.php"}
		if raw {
			args = append(args, "--raw")
		}
		res := runFcgi(t, nil, args...)
		if !strings.Contains(res.stderr, "Primary script unknown") || !strings.Contains(res.stderr, "hint: PHP-FPM found no file at SCRIPT_FILENAME") {
			t.Errorf("--raw=%v: stderr %q; want PHP-FPM's message and the hint", raw, res.stderr)
		}
	}
	if res := runFcgi(t, nil, "call", "--root", fpm.Root(), fpm.Addr(), "/ok.php"); res.code != 0 || res.stderr != "" || res.stdout != "ok" {
		t.Errorf("a good page: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
}

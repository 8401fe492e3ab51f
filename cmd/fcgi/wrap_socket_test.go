package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/peer"
)

// TestWrapSocketMode: --listen unix: makes the socket with mode 0660 by
// default, as PHP-FPM does, and with -M (--socket-mode) the mode given,
// whatever the umask.
func TestWrapSocketMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		mode os.FileMode
	}{
		{nil, 0o660},
		{[]string{"-M", "0600"}, 0o600},
		{[]string{"--socket-mode", "666"}, 0o666},
	} {
		sock := filepath.Join(dir, strings.Join(append([]string{"s"}, tc.args...), "")+".sock")
		startFcgi(t, append([]string{"wrap", "--listen", "unix:" + sock}, tc.args...)...)
		waitDial(t, sock)
		if mode, uid, gid := sockStat(t, sock); mode != tc.mode || int(uid) != os.Geteuid() || int(gid) != os.Getegid() {
			t.Errorf("wrap %s: socket %#o %d:%d, want %#o and wrap's own user and group", strings.Join(tc.args, " "), mode, uid, gid, tc.mode)
		}
	}
}

// TestWrapSocketOwner: nginx running as www-data, as Debian runs it,
// runs a CGI script through wrap (root) on a socket made with -U nobody
// -G www-data -M 0660, which it could not open with wrap's default owner.
func TestWrapSocketOwner(t *testing.T) {
	peer.RequireRoot(t, "give sockets to other users", "nobody", "www-data")
	peer.Require(t, "nginx", "nginx")
	dir := peer.TempDir(t)
	script := filepath.Join(dir, "hello.cgi")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"hello $REQUEST_URI\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "wrap.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock, "--script", script, "-U", "nobody", "-G", "www-data", "-M", "0660")
	waitDial(t, sock)
	if mode, uid, gid := sockStat(t, sock); mode != 0o660 || uid != 65534 || gid != 33 {
		t.Errorf("socket %#o %d:%d, want 0660 65534:33", mode, uid, gid)
	}
	n := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + sock, User: "www-data"})
	body, err := httpGet(n.URL() + "/x")
	if err != nil || body != "hello /x\n" {
		t.Errorf("GET /x through nginx (www-data): %v %q\n%s", err, body, n.ErrorLog())
	}

	// Without them the socket is root's, and nginx is refused.
	sock0 := filepath.Join(dir, "wrap0.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock0, "--script", script)
	waitDial(t, sock0)
	n0 := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + sock0, User: "www-data"})
	if _, err := httpGet(n0.URL() + "/x"); err == nil || !strings.Contains(n0.ErrorLog(), "Permission denied") {
		t.Errorf("GET /x through nginx (www-data) on root's socket: %v, want 502 and Permission denied\n%s", err, n0.ErrorLog())
	}

	// The long names, and names as numbers.
	sock2 := filepath.Join(dir, "wrap2.sock")
	startFcgi(t, "wrap", "--listen", "unix:"+sock2, "--script", script, "--socket-user", "33", "--socket-group", "nogroup")
	waitDial(t, sock2)
	if mode, uid, gid := sockStat(t, sock2); mode != 0o660 || uid != 33 || gid != 65534 {
		t.Errorf("socket %#o %d:%d, want 0660 33:65534", mode, uid, gid)
	}
}

// TestWrapSocketFlagErrors: the socket flags are refused for what is not
// a unix socket wrap makes, and bad values before anything listens.
func TestWrapSocketFlagErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--listen", "127.0.0.1:0", "-M", "0660"}, exitUsage, "for a unix socket made by --listen, not 127.0.0.1:0"},
		{[]string{"-G", "www-data"}, exitUsage, "not an inherited socket (no --listen)"},
		{[]string{"--listen", "unix:" + sock, "-M", "0999"}, exitUsage, "octal"},
		{[]string{"--listen", "unix:" + sock, "-U", "no-such-user-fcgikit"}, exitFail, "SocketOwner"},
		{[]string{"--listen", "unix:" + sock, "-G", "no-such-group-fcgikit"}, exitFail, "SocketGroup"},
	} {
		res := runRefused(t, append([]string{"wrap"}, tc.args...)...)
		if res.code != tc.code || !strings.Contains(res.stderr, tc.msg) {
			t.Errorf("wrap %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), res.code, res.stderr, tc.code, tc.msg)
		}
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("wrap %s: socket left behind", strings.Join(tc.args, " "))
			os.Remove(sock)
		}
	}
}

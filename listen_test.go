package fcgi_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// socketStat returns the mode bits, owner and group of the file at path.
func socketStat(t *testing.T, path string) (os.FileMode, int, int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is %v, not a socket", path, fi.Mode())
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode().Perm(), int(st.Uid), int(st.Gid)
}

// waitAccepting waits until the unix socket at path accepts connections.
func waitAccepting(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not accepting", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lookupUID(t *testing.T, name string) int {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := strconv.Atoi(u.Uid)
	return id
}

func lookupGID(t *testing.T, name string) int {
	t.Helper()
	g, err := user.LookupGroup(name)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := strconv.Atoi(g.Gid)
	return id
}

// The mode is the one asked for, whatever the umask: 0660 by default, and
// wider modes than the umask allows (0666 under the usual 022) too.
func TestListenSocketMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode, want os.FileMode
	}{
		{0, 0o660},
		{0o600, 0o600},
		{0o666, 0o666},
		{0o770, 0o770},
	} {
		path := filepath.Join(dir, "s"+strconv.FormatUint(uint64(tc.mode), 8))
		lc := fcgi.ListenConfig{SocketMode: tc.mode}
		l, err := lc.Listen(context.Background(), "unix:"+path)
		if err != nil {
			t.Fatal(err)
		}
		mode, uid, gid := socketStat(t, path)
		if mode != tc.want || uid != os.Geteuid() || gid != os.Getegid() {
			t.Errorf("SocketMode %#o: socket %#o %d:%d, want %#o %d:%d", tc.mode, mode, uid, gid, tc.want, os.Geteuid(), os.Getegid())
		}
		l.Close()
	}
	// The package-level Listen is the zero ListenConfig.
	path := filepath.Join(dir, "plain")
	l, err := fcgi.Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if mode, _, _ := socketStat(t, path); mode != 0o660 {
		t.Errorf("Listen: socket %#o, want 0660", mode)
	}
}

// Owner and group are set by name and by number; ListenAndServe uses the
// Server's fields.
func TestListenSocketOwner(t *testing.T) {
	peer.RequireRoot(t, "chown a socket", "nobody", "www-data")
	nobody, wwwData := lookupUID(t, "nobody"), lookupGID(t, "www-data")
	dir := t.TempDir()
	for _, tc := range []struct {
		owner, group      string
		wantUID, wantGID  int
		wantMode, askMode os.FileMode
	}{
		{"nobody", "www-data", nobody, wwwData, 0o660, 0},
		{strconv.Itoa(nobody), strconv.Itoa(wwwData), nobody, wwwData, 0o600, 0o600},
		{"", "www-data", 0, wwwData, 0o660, 0},
		{"nobody", "", nobody, 0, 0o660, 0},
		{"4242", "4343", 4242, 4343, 0o660, 0}, // numeric IDs need no account, as with chown(1)
	} {
		path := filepath.Join(dir, "s")
		lc := fcgi.ListenConfig{SocketMode: tc.askMode, SocketOwner: tc.owner, SocketGroup: tc.group}
		l, err := lc.Listen(context.Background(), "unix:"+path)
		if err != nil {
			t.Fatalf("%+v: %v", lc, err)
		}
		mode, uid, gid := socketStat(t, path)
		if mode != tc.wantMode || uid != tc.wantUID || gid != tc.wantGID {
			t.Errorf("%+v: socket %#o %d:%d, want %#o %d:%d", lc, mode, uid, gid, tc.wantMode, tc.wantUID, tc.wantGID)
		}
		l.Close()
	}

	// ListenAndServe.
	path := filepath.Join(dir, "srv.sock")
	srv := &fcgi.Server{SocketOwner: "nobody", SocketGroup: "www-data", SocketMode: 0o640, ErrorLog: quietLog}
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe("unix:" + path) }()
	waitAccepting(t, path)
	if mode, uid, gid := socketStat(t, path); mode != 0o640 || uid != nobody || gid != wwwData {
		t.Errorf("ListenAndServe: socket %#o %d:%d, want 0640 %d:%d", mode, uid, gid, nobody, wwwData)
	}
	srv.Close()
	if err := <-done; !errors.Is(err, fcgi.ErrServerClosed) {
		t.Errorf("ListenAndServe: %v", err)
	}
}

// Bad settings are refused before a socket file is made.
func TestListenSocketBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, lc := range []fcgi.ListenConfig{
		{SocketMode: 0o4755},
		{SocketMode: os.ModeSetuid | 0o660},
		{SocketOwner: "no-such-user-fcgikit"},
		{SocketGroup: "no-such-group-fcgikit"},
	} {
		path := filepath.Join(dir, "s")
		l, err := lc.Listen(context.Background(), "unix:"+path)
		if err == nil {
			l.Close()
			t.Errorf("%+v: no error", lc)
			continue
		}
		if !strings.HasPrefix(err.Error(), "fcgi: ") {
			t.Errorf("%+v: error %q lacks the package prefix", lc, err)
		}
		if _, serr := os.Lstat(path); serr == nil {
			t.Errorf("%+v: socket file made despite %v", lc, err)
		}
	}
}

// A process that may not chown gets an error, and no socket is left.
func TestListenSocketChownFails(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may chown to anyone; covered by TestListenSocketOwner")
	}
	path := filepath.Join(t.TempDir(), "s")
	lc := fcgi.ListenConfig{SocketOwner: "0"}
	if l, err := lc.Listen(context.Background(), "unix:"+path); err == nil {
		l.Close()
		t.Fatal("chown to root as another user: no error")
	}
	if _, err := os.Lstat(path); err == nil {
		t.Error("socket left behind after a failed chown")
	}
}

// The stale-socket rule holds with a mode and owner set: a live socket
// is kept, a dead one replaced, and the new one gets the settings.
func TestListenSocketStaleWithMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	l, err := fcgi.Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	lc := fcgi.ListenConfig{SocketMode: 0o600}
	if l2, err := lc.Listen(context.Background(), "unix:"+path); err == nil {
		l2.Close()
		t.Fatal("took over a live socket")
	}
	if mode, _, _ := socketStat(t, path); mode != 0o660 {
		t.Errorf("live socket's mode changed to %#o", mode)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := lc.Listen(context.Background(), "unix:"+path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l2.Close()
	if mode, _, _ := socketStat(t, path); mode != 0o600 {
		t.Errorf("replacing socket %#o, want 0600", mode)
	}
}

// TestNginxSocketPermissions: nginx with its workers running as www-data,
// as Debian runs them, reaches a root-owned socket of group www-data and
// mode 0660, but gets 502 (Permission denied) from one of mode 0600, from
// the old default (as created under the umask) and from the new default
// without a group.
func TestNginxSocketPermissions(t *testing.T) {
	peer.Require(t, "nginx", "nginx")
	peer.RequireRoot(t, "run nginx's workers as www-data", "www-data")
	for _, tc := range []struct {
		name   string
		srv    *fcgi.Server
		umask  bool // created by net.Listen, as before SocketMode existed
		status int
	}{
		{name: "group-www-data-0660", srv: &fcgi.Server{SocketGroup: "www-data"}, status: 200},
		{name: "owner-www-data-0600", srv: &fcgi.Server{SocketOwner: "www-data", SocketMode: 0o600}, status: 200},
		{name: "root-0600", srv: &fcgi.Server{SocketMode: 0o600}, status: 502},
		{name: "root-default-0660", srv: &fcgi.Server{}, status: 502},
		{name: "root-umask", srv: &fcgi.Server{}, umask: true, status: 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// peer.TempDir is 0755 under /tmp: www-data can search it.
			path := filepath.Join(peer.TempDir(t), "app.sock")
			srv := tc.srv
			srv.ErrorLog = quietLog
			srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte("reached"))
			})
			done := make(chan error, 1)
			if tc.umask {
				l, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				go func() { done <- srv.Serve(l) }()
			} else {
				go func() { done <- srv.ListenAndServe("unix:" + path) }()
			}
			t.Cleanup(func() {
				srv.Close()
				if err := <-done; !errors.Is(err, fcgi.ErrServerClosed) {
					t.Errorf("serve: %v", err)
				}
			})
			waitAccepting(t, path)
			mode, uid, gid := socketStat(t, path)
			t.Logf("socket %#o uid %d gid %d", mode, uid, gid)

			n := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + path, User: "www-data"})
			status, body := httpGet(t, httpClient(t), n.URL()+"/")
			if status != tc.status {
				t.Fatalf("GET /: %d %q, want %d\nnginx error log:\n%s", status, body, tc.status, n.ErrorLog())
			}
			if status == 200 && body != "reached" {
				t.Errorf("GET /: body %q", body)
			}
			if status == 502 && !strings.Contains(n.ErrorLog(), "Permission denied") {
				t.Errorf("502 without \"Permission denied\" in nginx's error log:\n%s", n.ErrorLog())
			}
		})
	}
}

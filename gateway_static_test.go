package fcgi_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// unreadableFile makes a regular file named name under root that this
// process may not read. Root reads a file of mode 0 all the same
// (CAP_DAC_OVERRIDE), so for root it is a symbolic link to a write-only
// sysctl file, which the kernel refuses to open for reading even to root.
func unreadableFile(t *testing.T, root, name string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.WriteFile(p, []byte("secret"), 0); err != nil {
		t.Fatal(err)
	}
	if f, err := os.Open(p); err == nil {
		f.Close()
		os.Remove(p)
		if err := os.Symlink("/proc/sys/vm/drop_caches", p); err != nil {
			t.Fatal(err)
		}
		if f, err := os.Open(p); err == nil {
			f.Close()
			t.Skip("no file here that this process may not read")
		}
	}
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		t.Skipf("%s: not a regular file: %v", name, err)
	}
}

// A file the gateway may not read is answered 403 Forbidden, with a log
// line saying which file and why, as nginx does ("open() failed (13:
// Permission denied)"), not 404 as if it were missing: the operator needs
// to see a permission to fix. The Filter role answers it the same way,
// and neither sends it to the application.
func TestGatewayUnreadableFile(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	root := docRoot(t)
	unreadableFile(t, root, "secret.txt")
	g, logs := newGateway(t, app.Addr, root)
	g.ServeStatic = true
	for name, h := range map[string]http.Handler{"static": g, "filter": g.Filter()} {
		w := serveGW(h, "GET", "/secret.txt", nil)
		if w.Code != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", name, w.Code)
		}
		if strings.Contains(w.Body.String(), root) {
			t.Errorf("%s: the body shows the file's path: %q", name, w.Body)
		}
	}
	log := logs.String()
	if n := strings.Count(log, "permission denied"); n != 2 || !strings.Contains(log, filepath.Join(root, "secret.txt")) {
		t.Errorf("want two log lines naming the file and the permission; log:\n%s", log)
	}
	if n := app.requests.Load(); n != 0 {
		t.Errorf("%d requests reached the application", n)
	}
	// A missing file stays 404.
	if w := serveGW(g.Filter(), "GET", "/missing.txt", nil); w.Code != http.StatusNotFound {
		t.Errorf("filter, missing file: %d, want 404", w.Code)
	}
}

package fcgi

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSplitScript(t *testing.T) {
	for _, tc := range []struct{ in, script, info string }{
		{"/a.php", "/a.php", ""},
		{"/a.php/b/c", "/a.php", "/b/c"},
		{"/A.PHP/x", "/A.PHP", "/x"},
		{"/x.php.bak", "", ""},
		{"/d.php/e.php/f", "/d.php", "/e.php/f"},
		{"/.php/x", "", ""},
		{"/dir/.php", "", ""},
		{"/phpinfo", "", ""},
	} {
		script, info, ok := splitScript(tc.in, ".php")
		if script != tc.script || info != tc.info || ok != (tc.script != "") {
			t.Errorf("%q: %q %q %v", tc.in, script, info, ok)
		}
	}
}

func TestInRoot(t *testing.T) {
	for _, tc := range []struct {
		root, p, want string
		ok            bool
	}{
		{"/srv/www", "/a.php", "/srv/www/a.php", true},
		{"/srv/www", "/", "/srv/www", true},
		{"/srv/www", "/../www2/a.php", "", false},
		{"/srv/www", "/../../etc/passwd", "", false},
		{"/srv/www", "/../www/a.php", "/srv/www/a.php", true},
		{"/", "/etc/passwd", "/etc/passwd", true},
		{"/", "/", "/", true},
	} {
		got, ok := inRoot(tc.root, tc.p)
		if got != tc.want || ok != tc.ok {
			t.Errorf("inRoot(%q, %q) = %q, %v; want %q, %v", tc.root, tc.p, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzGatewayRoute routes arbitrary paths: the result must never leave
// the document root, must keep SCRIPT_NAME + PATH_INFO consistent with
// the cleaned path, and control bytes must be refused.
func FuzzGatewayRoute(f *testing.F) {
	root := f.TempDir()
	for _, name := range []string{"index.php", "app.php", "sub/index.php", "static.txt"} {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o644)
	}
	for _, s := range []string{"/app.php/x/y", "/../../etc/passwd", "/sub/", "/index.php/PHP\nis.php", "/a\x00.php", "/APP.PHP", "/static.txt", "//app.php//x"} {
		f.Add(s)
	}
	g := &Gateway{Root: root, FrontController: "/index.php", ServeStatic: true}
	f.Fuzz(func(t *testing.T, p string) {
		rt, err := g.route(p)
		if strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			if err != errBadPath {
				t.Fatalf("control byte accepted: %v", err)
			}
			return
		}
		if err != nil {
			return
		}
		if rt.file != root && !strings.HasPrefix(rt.file, root+string(filepath.Separator)) {
			t.Fatalf("%q routed outside the root: %q", p, rt.file)
		}
		if rt.script != "" && !strings.HasPrefix(rt.script, "/") {
			t.Fatalf("SCRIPT_NAME %q", rt.script)
		}
		if rt.pathInfo != "" && !strings.HasPrefix(rt.pathInfo, "/") {
			t.Fatalf("PATH_INFO %q", rt.pathInfo)
		}
	})
}

// Root "/" gives SCRIPT_FILENAME with one slash, and a relative Root ("."
// or none) is the working directory, absolute in DOCUMENT_ROOT.
func TestGatewayRootForms(t *testing.T) {
	g := &Gateway{Root: "/"}
	r := httptest.NewRequest("GET", "/etc/hostname", nil)
	p := g.params(r, route{script: "/etc/hostname", docURI: "/etc/hostname", file: "/etc/hostname"}, "")
	if p["SCRIPT_FILENAME"] != "/etc/hostname" || p["DOCUMENT_ROOT"] != "/" {
		t.Errorf("Root \"/\": SCRIPT_FILENAME %q, DOCUMENT_ROOT %q", p["SCRIPT_FILENAME"], p["DOCUMENT_ROOT"])
	}

	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "index.php"), []byte("<?php"), 0o644)
	t.Chdir(dir)
	for _, root := range []string{".", "", "./"} {
		g := &Gateway{Root: root}
		rt, err := g.route("/index.php")
		if err != nil || rt.file != filepath.Join(dir, "index.php") {
			t.Errorf("Root %q: %+v %v", root, rt, err)
			continue
		}
		p := g.params(httptest.NewRequest("GET", "/index.php", nil), rt, "")
		if p["DOCUMENT_ROOT"] != dir || p["SCRIPT_FILENAME"] != filepath.Join(dir, "index.php") {
			t.Errorf("Root %q: DOCUMENT_ROOT %q SCRIPT_FILENAME %q", root, p["DOCUMENT_ROOT"], p["SCRIPT_FILENAME"])
		}
	}
}

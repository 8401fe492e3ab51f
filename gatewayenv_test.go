package fcgi

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/wire"
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
		{"/srv/www", "/a/b.php", "/srv/www/a/b.php", true},
		{"/srv/www", "/a//b.php", "/srv/www/a/b.php", true},
		{"/srv/www", "/a/./b.php", "/srv/www/a/b.php", true},
		{"/srv/www", "/a/", "/srv/www/a", true},
		{"/srv/www", "/a/.", "/srv/www/a", true},
		{"/srv/www", "/a/..", "/srv/www", true},
		{"/srv/www", "/...", "/srv/www/...", true},
		{"/srv/www", "/..a", "/srv/www/..a", true},
	} {
		got, ok := inRoot(tc.root, tc.p)
		if got != tc.want || ok != tc.ok {
			t.Errorf("inRoot(%q, %q) = %q, %v; want %q, %v", tc.root, tc.p, got, ok, tc.want, tc.ok)
		}
		// The short cut for clean paths gives what Join gives.
		if j := filepath.Join(tc.root, tc.p); ok && got != j {
			t.Errorf("inRoot(%q, %q) = %q, Join gives %q", tc.root, tc.p, got, j)
		}
	}
	for p, want := range map[string]bool{
		"/a": true, "/a/b.php": true, "/.x": true, "/...": true, "/a..b/c": true,
		"": false, "/": false, "a": false, "/a/": false, "//a": false, "/a//b": false,
		"/./a": false, "/a/.": false, "/../a": false, "/a/..": false,
	} {
		if got := cleanRooted(p); got != want || (got && path.Clean(p) != p) {
			t.Errorf("cleanRooted(%q) = %v, want %v", p, got, want)
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
		// inRoot's short cut for clean paths agrees with Join.
		if got, ok := inRoot(root, p); ok && got != filepath.Join(root, filepath.FromSlash(p)) {
			t.Fatalf("inRoot(%q) = %q, Join gives %q", p, got, filepath.Join(root, filepath.FromSlash(p)))
		}
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
	p := envMap(t, g.params(nil, r, route{script: "/etc/hostname", docURI: "/etc/hostname", file: "/etc/hostname"}, ""))
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
		p := envMap(t, g.params(nil, httptest.NewRequest("GET", "/index.php", nil), rt, ""))
		if p["DOCUMENT_ROOT"] != dir || p["SCRIPT_FILENAME"] != filepath.Join(dir, "index.php") {
			t.Errorf("Root %q: DOCUMENT_ROOT %q SCRIPT_FILENAME %q", root, p["DOCUMENT_ROOT"], p["SCRIPT_FILENAME"])
		}
	}
}

// envMap is e as a map, failing t if a variable appears twice.
func envMap(t *testing.T, e cgiEnv) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range e {
		name := p.name
		if p.header {
			name = string(appendCGIHeaderName(nil, p.name))
		}
		if _, dup := m[name]; dup {
			t.Errorf("%s sent twice", name)
		}
		m[name] = p.value
	}
	return m
}

// The environment holds each variable once, whatever sets it: the
// gateway's own win over Params, set (an Authorizer's variables, a Filter's
// FCGI_DATA_*) wins over the gateway's, a Host field over r.Host, and two
// spellings of one field name in a hand-made header give one variable.
func TestCGIEnv(t *testing.T) {
	g := &Gateway{Root: "/srv", Params: map[string]string{"APP_ENV": "prod", "REQUEST_METHOD": "EVIL", "HTTP_ACCEPT": "env"}}
	r := httptest.NewRequest("POST", "http://example.com:8080/a.php/b?q=1", nil)
	r.Header = http.Header{
		"Accept":  {"text/html", "*/*"},
		"Cookie":  {"a=1", "b=2"},
		"X-Dup":   {"1"},
		"x-dup":   {"2"},
		"proxy":   {"http://evil"},
		"X_Under": {"dropped"},
		"X.Dot":   {"dropped"},
		"Host":    {"field.example"},
	}
	rt := route{script: "/a.php", pathInfo: "/b", docURI: "/a.php", file: "/srv/a.php"}
	e := g.params(nil, r, rt, "5")
	e.set("REMOTE_USER", "alice")
	e.set("HTTP_X_DUP", "authorizer")
	e.set("FCGI_DATA_LENGTH", "7")
	m := envMap(t, e)
	want := map[string]string{
		"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "5", "QUERY_STRING": "q=1",
		"SCRIPT_NAME": "/a.php", "PATH_INFO": "/b", "SCRIPT_FILENAME": "/srv/a.php",
		"APP_ENV": "prod", "HTTP_ACCEPT": "text/html, */*", "HTTP_COOKIE": "a=1; b=2",
		"HTTP_HOST": "field.example", "REMOTE_USER": "alice", "HTTP_X_DUP": "authorizer",
		"FCGI_DATA_LENGTH": "7", "SERVER_NAME": "example.com",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	for _, k := range []string{"HTTP_PROXY", "HTTP_X_UNDER", "HTTP_X.DOT", "HTTPS"} {
		if v, ok := m[k]; ok {
			t.Errorf("%s = %q, want none", k, v)
		}
	}
	if v, ok := e.get("HTTP_ACCEPT"); !ok || v != "text/html, */*" {
		t.Errorf("get(HTTP_ACCEPT) = %q, %v", v, ok)
	}
	e.del("HTTP_COOKIE")
	e.del("PATH_INFO")
	if _, ok := envMap(t, e)["HTTP_COOKIE"]; ok || e.index("PATH_INFO") >= 0 {
		t.Error("del left the variable")
	}
	// What del freed holds no request's strings once the slice goes
	// back to the pool.
	for _, p := range e[len(e):cap(e)] {
		if p != (param{}) {
			t.Errorf("freed slot holds %+v", p)
		}
	}

	// A Params name that only looks like a header's variable is its own:
	// X-Foo is sent as HTTP_X_FOO, not as HTTP_x_foo or HTTP_X-FOO.
	g = &Gateway{Root: "/srv", Params: map[string]string{"HTTP_x_foo": "env1", "HTTP_X-FOO": "env2", "HTTP_X_FOO": "env3"}}
	r = httptest.NewRequest("GET", "/a.php", nil)
	r.Header.Set("X-Foo", "hdr")
	m = envMap(t, g.params(nil, r, rt, ""))
	if m["HTTP_x_foo"] != "env1" || m["HTTP_X-FOO"] != "env2" || m["HTTP_X_FOO"] != "hdr" {
		t.Errorf("Params beside a header: %q %q %q", m["HTTP_x_foo"], m["HTTP_X-FOO"], m["HTTP_X_FOO"])
	}
}

// What the client packs for a gateway's environment decodes to the same
// variables, header names turned into CGI ones on the way.
func TestPairPackerHeaderNames(t *testing.T) {
	e := cgiEnv{{name: "A", value: "1"}}
	e.addHeader(1, "X-Forwarded-For", "10.0.0.1")
	e.addHeader(1, "user-agent", "curl")
	var pk pairPacker
	for _, p := range e {
		pk.add(p.name, p.value, p.header)
	}
	got := map[string]string{}
	if err := wire.ForEachPair(pk.buf, func(n, v []byte) bool { got[string(n)] = string(v); return true }); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "HTTP_X_FORWARDED_FOR": "10.0.0.1", "HTTP_USER_AGENT": "curl"}
	if !maps.Equal(got, want) {
		t.Errorf("packed %v, want %v", got, want)
	}
}

// FuzzPairPacker packs arbitrary variables, some of them header variables
// and some of them long, and checks what PHP-FPM relies on: each PARAMS
// record decodes on its own, none is over 65535 bytes unless it holds a
// single pair (which the writer then splits), and the pairs come out in
// order with header names turned into HTTP_ variables.
func FuzzPairPacker(f *testing.F) {
	f.Add("REQUEST_METHOD\x00User-Agent\x00x-forwarded-for", "GET\x00curl\x0010.0.0.1", uint64(0b110), uint16(0))
	f.Add("A\x00B\x00C", "1\x002\x003", uint64(0), uint16(40000))
	f.Add(strings.Repeat("N", 130)+"\x00h", "v\x00w", uint64(0b10), uint16(65535))
	f.Fuzz(func(t *testing.T, names, values string, headers uint64, grow uint16) {
		ns, vs := strings.Split(names, "\x00"), strings.Split(values, "\x00")
		var e cgiEnv
		for i, n := range ns {
			v := ""
			if i < len(vs) {
				v = vs[i]
			}
			if grow > 0 && i%2 == 1 {
				// Long values, to make the packer cut between records.
				v = strings.Repeat("v", int(grow)) + v
			}
			e = append(e, param{name: n, value: v, header: headers&(1<<(i%64)) != 0})
		}
		var pk pairPacker
		for _, p := range e {
			pk.add(p.name, p.value, p.header)
		}
		if pk.err != nil {
			t.Fatal(pk.err)
		}
		var got []param
		prev := 0
		for _, cut := range append(pk.cuts, len(pk.buf)) {
			rec := pk.buf[prev:cut]
			prev = cut
			n := 0
			if err := wire.ForEachPair(rec, func(name, value []byte) bool {
				got = append(got, param{name: string(name), value: string(value)})
				n++
				return true
			}); err != nil {
				t.Fatalf("a record does not decode on its own: %v", err)
			}
			if len(rec) > wire.MaxContent && n != 1 {
				t.Fatalf("a record of %d bytes holds %d pairs", len(rec), n)
			}
		}
		if len(got) != len(e) {
			t.Fatalf("%d pairs out, %d in", len(got), len(e))
		}
		for i, p := range e {
			name := p.name
			if p.header {
				name = string(appendCGIHeaderName(nil, p.name))
			}
			if got[i].name != name || got[i].value != p.value {
				t.Fatalf("pair %d: %q=%.20q, want %q=%.20q", i, got[i].name, got[i].value, name, p.value)
			}
		}
	})
}

// FuzzHeaderVariables: whatever the request's header names, every HTTP_
// variable sent holds only upper-case letters, digits and '_', and no two
// header fields give the same one.
func FuzzHeaderVariables(f *testing.F) {
	f.Add("X-Real-Ip\x00X.Real.Ip\x00X_Real_Ip\x00x-real-ip")
	f.Add("Host\x00Proxy\x00X[a\x00X a\x00Cookie")
	f.Fuzz(func(t *testing.T, names string) {
		g := &Gateway{Root: "/srv"}
		r := httptest.NewRequest("GET", "/a.php", nil)
		r.Header = http.Header{}
		for _, n := range strings.Split(names, "\x00") {
			r.Header[n] = append(r.Header[n], "v")
		}
		seen := map[string]bool{}
		for _, p := range g.params(nil, r, route{script: "/a.php", file: "/srv/a.php"}, "") {
			if !p.header {
				continue
			}
			name := string(appendCGIHeaderName(nil, p.name))
			for i := len(cgiHeaderPrefix); i < len(name); i++ {
				if c := name[i]; !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
					t.Fatalf("variable %q from field %q", name, p.name)
				}
			}
			if seen[name] {
				t.Fatalf("variable %q twice", name)
			}
			seen[name] = true
		}
	})
}

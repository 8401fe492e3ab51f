package fcgi

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/fcgikit/fcgi/internal/cgienv"
)

// A route is what a request URL path maps to, as nginx's try_files and
// fastcgi_split_path_info decide it.
type route struct {
	script   string // SCRIPT_NAME, "" for a static file
	pathInfo string // PATH_INFO
	docURI   string // DOCUMENT_URI: the path after internal redirects
	file     string // the file on disk: the script or the static file
}

// errBadPath rejects paths with NUL or other control bytes.
var errBadPath = &httpError{code: http.StatusBadRequest, msg: "fcgi: control character in request path"}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// splitScript finds the first path segment ending in ext, compared ASCII
// case-insensitively, and splits p after it: "/a.php/b/c" gives "/a.php"
// and "/b/c". It is nginx's fastcgi_split_path_info ^(.+?\.php)(/.*)$
// without a regular expression, so a newline in the path (CVE-2019-11043)
// cannot make the split fail and leave PATH_INFO inconsistent.
func splitScript(p, ext string) (script, pathInfo string, ok bool) {
	if ext == "" {
		return "", "", false
	}
	for i := 1; i+len(ext) <= len(p); i++ {
		if !asciiEqualFold(p[i:i+len(ext)], ext) {
			continue
		}
		end := i + len(ext)
		if p[i-1] == '/' {
			continue // "/.php" is a hidden file, not a script name
		}
		if end == len(p) || p[end] == '/' {
			return p[:end], p[end:], true
		}
	}
	return "", "", false
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// inRoot joins the slash path p to root and reports whether the result
// stays inside root.
func inRoot(root, p string) (string, bool) {
	var f string
	if filepath.Separator == '/' && root != "/" && cleanRooted(p) {
		f = root + p // what Join gives (root is clean), in one allocation rather than three
	} else {
		f = filepath.Join(root, filepath.FromSlash(p))
	}
	if f == root {
		return f, true
	}
	rest, ok := strings.CutPrefix(f, root)
	// A root of "/" ends in a separator already; any other must be
	// followed by one ("/srv/app" does not contain "/srv/apple").
	if !ok || !(strings.HasSuffix(root, string(filepath.Separator)) || strings.HasPrefix(rest, string(filepath.Separator))) {
		return "", false
	}
	return f, true
}

// cleanRooted reports whether p is a rooted slash path that path.Clean
// leaves as it is and that names something below the root: "/a/b", not
// "/", "/a/", "/a//b" or "/a/../b".
func cleanRooted(p string) bool {
	if len(p) < 2 || p[0] != '/' {
		return false
	}
	for seg := p[1:]; ; {
		i := strings.IndexByte(seg, '/')
		s := seg
		if i >= 0 {
			s = seg[:i]
		}
		if s == "" || s == "." || s == ".." {
			return false
		}
		if i < 0 {
			return true
		}
		seg = seg[i+1:]
	}
}

func isFile(name string) bool {
	fi, err := os.Stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// route maps a request path the way nginx does with
//
//	index index.php;
//	location / { try_files $uri $uri/ /index.php$is_args$args; }
//	location ~ [^/]\.php(/|$) {
//	    fastcgi_split_path_info ^(.+?\.php)(/.*)$;
//	    try_files $fastcgi_script_name =404;
//	    ...
//	}
//
// It returns a 404 httpError when nothing matches. With PassThrough every
// path is the script, as nginx's $fastcgi_script_name is $uri when nothing
// splits it: cleaned ("/a//b/../c" is "/a/c"), a trailing slash kept.
func (g *Gateway) route(urlPath string) (route, error) {
	return g.routeFiles(urlPath, true)
}

// routeFiles is route. With onDisk false it looks up no file, for a
// caller that cannot see the application's: a script the path names and
// the front controller are taken to exist, and nothing else is.
func (g *Gateway) routeFiles(urlPath string, onDisk bool) (route, error) {
	if hasControl(urlPath) {
		return route{}, errBadPath
	}
	p := cleanURLPath(urlPath)
	if strings.HasSuffix(urlPath, "/") && urlPath != "/" {
		p += "/"
	}
	if g.PassThrough {
		return route{script: p, docURI: p}, nil
	}
	root := g.root()
	ext := g.scriptExt()
	notFound := func() error {
		return &httpError{code: http.StatusNotFound, msg: "fcgi: no script for " + clip(urlPath)}
	}

	if script, info, ok := splitScript(p, ext); ok {
		f, ok := inRoot(root, script)
		if !ok || onDisk && !isFile(f) {
			return route{}, notFound()
		}
		// try_files $fastcgi_script_name sets $uri, hence DOCUMENT_URI,
		// to the script.
		return route{script: script, pathInfo: info, docURI: script, file: f}, nil
	}
	// try_files $uri $uri/, with one stat for both.
	var fi os.FileInfo
	f, ok := inRoot(root, p)
	if ok && onDisk {
		fi, _ = os.Stat(f)
	}
	if fi != nil && fi.Mode().IsRegular() && !strings.HasSuffix(p, "/") {
		if g.ServeStatic {
			return route{docURI: p, file: f}, nil
		}
	}
	if fi != nil && fi.IsDir() {
		index := g.index()
		dirPath := strings.TrimSuffix(p, "/") + "/"
		if idx, ok := inRoot(root, dirPath+index); ok && isFile(idx) {
			s := dirPath + index
			if _, _, isScript := splitScript(s, ext); isScript {
				return route{script: s, docURI: s, file: idx}, nil
			}
			if g.ServeStatic {
				return route{docURI: s, file: idx}, nil
			}
		}
	}
	// The front controller.
	if fc := g.FrontController; fc != "" {
		if f, ok := inRoot(root, fc); ok && (!onDisk || isFile(f)) {
			return route{script: fc, docURI: fc, file: f}, nil
		}
	}
	return route{}, notFound()
}

// hasControl reports whether s holds a control byte (NUL, newline, DEL...),
// which no file name served here may contain.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// cleanURLPath makes a request path rooted and clean.
func cleanURLPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	return path.Clean(p)
}

// filterRoute maps a request path to a file under Root for
// [Gateway.Filter], or a 400 or 404 httpError. That the file is a regular
// one is for the caller to see when it opens it.
func (g *Gateway) filterRoute(urlPath string) (route, error) {
	if hasControl(urlPath) {
		return route{}, errBadPath
	}
	p := cleanURLPath(urlPath)
	f, ok := inRoot(g.root(), p)
	if !ok {
		return route{}, noFile(urlPath)
	}
	return route{script: p, docURI: p, file: f}, nil
}

// noFile is the 404 for a path that names no file.
func noFile(urlPath string) error {
	return &httpError{code: http.StatusNotFound, msg: "fcgi: no file for " + clip(urlPath)}
}

// root is Root, cleaned and made absolute: PHP needs DOCUMENT_ROOT and
// SCRIPT_FILENAME absolute, and inRoot compares prefixes. A relative Root
// is taken from the working directory at each request.
func (g *Gateway) root() string {
	r := filepath.Clean(g.Root)
	if !filepath.IsAbs(r) {
		if abs, err := filepath.Abs(r); err == nil {
			r = abs
		}
	}
	return r
}

func (g *Gateway) scriptExt() string {
	if g.ScriptExt == "" {
		return ".php"
	}
	return g.ScriptExt
}

func (g *Gateway) index() string {
	if g.Index == "" {
		return "index.php"
	}
	return g.Index
}

// params builds the CGI environment nginx's fastcgi_params gives, plus
// PATH_INFO, for r routed to rt, and Params. contentLength is "" for no body.
// The environment is appended to env, which should be empty.
func (g *Gateway) params(env cgiEnv, r *http.Request, rt route, contentLength string) cgiEnv {
	root := g.root()
	env.add("QUERY_STRING", r.URL.RawQuery)
	env.add("REQUEST_METHOD", r.Method)
	env.add("CONTENT_TYPE", r.Header.Get("Content-Type"))
	env.add("CONTENT_LENGTH", contentLength)
	env.add("SCRIPT_NAME", rt.script)
	// root has no trailing separator but when it is "/" itself.
	env.add("SCRIPT_FILENAME", strings.TrimSuffix(root, string(filepath.Separator))+filepath.FromSlash(rt.script))
	if !g.PassThrough {
		// fastcgi_params has no PATH_INFO: a location that splits
		// nothing sends none.
		env.add("PATH_INFO", rt.pathInfo)
	}
	reqURI := r.RequestURI
	if reqURI == "" {
		reqURI = r.URL.RequestURI()
	}
	env.add("REQUEST_URI", reqURI)
	env.add("DOCUMENT_URI", rt.docURI)
	env.add("DOCUMENT_ROOT", root)
	env.add("SERVER_PROTOCOL", r.Proto)
	if r.TLS != nil {
		env.add("REQUEST_SCHEME", "https")
		env.add("HTTPS", "on")
	} else {
		env.add("REQUEST_SCHEME", "http")
	}
	env.add("GATEWAY_INTERFACE", "CGI/1.1")
	sw := g.ServerSoftware
	if sw == "" {
		sw = "fcgikit"
	}
	env.add("SERVER_SOFTWARE", sw)
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		env.add("REMOTE_ADDR", host)
		env.add("REMOTE_PORT", port)
	} else {
		env.add("REMOTE_ADDR", r.RemoteAddr)
		env.add("REMOTE_PORT", "")
	}
	user := ""
	if u, _, ok := r.BasicAuth(); ok {
		user = u
	}
	env.add("REMOTE_USER", user)
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if host, port, ok := g.localAddr(la); ok {
			env.add("SERVER_ADDR", host)
			env.add("SERVER_PORT", port)
		}
	}
	name := g.ServerName
	if name == "" {
		name = r.Host
		if strings.IndexByte(name, ':') >= 0 { // no error to build when there is no port
			if h, _, err := net.SplitHostPort(name); err == nil {
				name = h
			}
		}
	}
	env.add("SERVER_NAME", name)
	env.add("REDIRECT_STATUS", "200")

	// Every header as HTTP_*, as nginx passes them, except Proxy
	// (httpoxy, CVE-2016-5385). Repeated headers are joined as nginx
	// joins them: cookies with "; ", others with ", ".
	headers := len(env)
	if r.Host != "" {
		env.addHeader(headers, "Host", r.Host)
	}
	_, authorized := r.Context().Value(authVarsKey{}).(map[string]string)
	for k, vs := range r.Header {
		if len(vs) == 0 || asciiEqualFold(k, "Proxy") {
			continue
		}
		// A name with "_" is dropped, as nginx does by default
		// (underscores_in_headers off): X_Forwarded_For and
		// X-Forwarded-For would both become HTTP_X_FORWARDED_FOR, and
		// the one the application trusts could be forged. PHP folds
		// '.', ' ' and '[' into '_' too ($_SERVER['HTTP_X_REAL_IP'] from
		// X.Real.Ip), so every name with anything but letters, digits
		// and '-' goes. Variables an Authorizer passed on are kept: it
		// removed the client's own.
		if !plainHeaderName(k) && !(authorized && strings.HasPrefix(k, "Variable-")) {
			continue
		}
		sep := ", "
		if k == "Cookie" {
			sep = "; "
		}
		env.addHeader(headers, k, strings.Join(vs, sep))
	}
	// Params last, where the gateway's own variables have not taken the name.
	for k, v := range g.Params {
		if env.index(k) < 0 {
			env.add(k, v)
		}
	}
	return env
}

func init() { cgienv.Build = commandEnv }

// commandEnv is cgienv.Build: the environment of a request the fcgi
// command sends, by the rules of params, route and authorizerEnv.
func commandEnv(cr *cgienv.Request) ([][2]string, error) {
	r := cr.HTTP
	g := &Gateway{Root: cr.Root, ScriptExt: cr.ScriptExt, FrontController: cr.FrontController}
	rt, err := g.routeFiles(r.URL.Path, false)
	if he := (*httpError)(nil); errors.As(err, &he) && he.code == http.StatusNotFound {
		g.PassThrough = true
		rt, err = g.route(r.URL.Path)
	}
	if err != nil {
		return nil, err
	}
	env := g.params(nil, r, rt, cr.ContentLength)
	for _, kv := range cr.Set {
		env.set(kv[0], kv[1])
	}
	if cr.Authorizer {
		authorizerEnv(&env, rt)
	}
	kv := make([][2]string, len(env))
	for i, p := range env {
		name := p.name
		if p.header {
			name = string(appendCGIHeaderName(nil, p.name))
		}
		kv[i] = [2]string{name, p.value}
	}
	return kv, nil
}

// A param is one CGI variable. A header param's name is the HTTP field
// name (User-Agent), sent as its CGI variable (HTTP_USER_AGENT) without a
// string being built for it.
type param struct {
	name, value string
	header      bool
}

// is reports whether p is the variable name.
func (p *param) is(name string) bool {
	if !p.header {
		return p.name == name
	}
	rest, ok := strings.CutPrefix(name, cgiHeaderPrefix)
	if !ok || len(rest) != len(p.name) {
		return false
	}
	// Only the field name is turned into its variable: HTTP_x_foo is not
	// the variable of X-Foo, which is sent as HTTP_X_FOO.
	for i := 0; i < len(rest); i++ {
		if cgiHeaderByte(p.name[i]) != rest[i] {
			return false
		}
	}
	return true
}

// cgiEnv is a request's CGI environment as the client sends it: the
// variables in order, each once. It is a slice rather than a map because
// the gateway builds one per request and a map was, after the system
// calls, the largest cost of a request.
type cgiEnv []param

func (e *cgiEnv) add(name, value string) { *e = append(*e, param{name: name, value: value}) }

// addHeader adds the variable for the field name, replacing one among
// e[from:] that maps to the same variable ("Host" from r.Host and a Host
// field, or two spellings of one name in a hand-made header).
func (e *cgiEnv) addHeader(from int, name, value string) {
	for i := from; i < len(*e); i++ {
		if p := &(*e)[i]; p.header && len(p.name) == len(name) && sameCGIHeader(p.name, name) {
			p.name, p.value = name, value
			return
		}
	}
	*e = append(*e, param{name: name, value: value, header: true})
}

// index returns the position of the variable name, or -1.
func (e cgiEnv) index(name string) int {
	for i := range e {
		if e[i].is(name) {
			return i
		}
	}
	return -1
}

func (e cgiEnv) get(name string) (string, bool) {
	if i := e.index(name); i >= 0 {
		return e[i].value, true
	}
	return "", false
}

// set gives the variable name the value, replacing the gateway's own.
func (e *cgiEnv) set(name, value string) {
	if i := e.index(name); i >= 0 {
		(*e)[i] = param{name: name, value: value}
		return
	}
	e.add(name, value)
}

func (e *cgiEnv) del(name string) {
	if i := e.index(name); i >= 0 {
		*e = slices.Delete(*e, i, i+1) // zeroes the freed slot: the pool keeps no request's strings
	}
}

// envs recycles the backing arrays of cgiEnv: one per request otherwise.
var envs = sync.Pool{New: func() any { e := make(cgiEnv, 0, 48); return &e }}

func getEnv() *cgiEnv { return envs.Get().(*cgiEnv) }

// putEnv recycles e once the request it was sent with is done with it:
// Client.Do has written it by the time it returns.
func putEnv(e *cgiEnv) {
	if cap(*e) > 256 {
		return // a request with a great many headers; let it go
	}
	clear(*e) // drop the strings
	*e = (*e)[:0]
	envs.Put(e)
}

// plainHeaderName reports whether the field name k has only ASCII
// letters, digits and '-', the characters whose CGI variable no other
// name shares, even after an application folds punctuation into '_'.
func plainHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

const cgiHeaderPrefix = "HTTP_"

// appendCGIHeaderName appends the CGI variable of an HTTP field name:
// "X-Forwarded-For" gives "HTTP_X_FORWARDED_FOR".
func appendCGIHeaderName(dst []byte, field string) []byte {
	dst = append(dst, cgiHeaderPrefix...)
	for i := 0; i < len(field); i++ {
		dst = append(dst, cgiHeaderByte(field[i]))
	}
	return dst
}

func cgiHeaderByte(c byte) byte {
	switch {
	case 'a' <= c && c <= 'z':
		return c - ('a' - 'A')
	case c == '-':
		return '_'
	}
	return c
}

// sameCGIHeader reports whether the field names a and b, of equal length,
// give the same CGI variable.
func sameCGIHeader(a, b string) bool {
	for i := 0; i < len(a); i++ {
		if cgiHeaderByte(a[i]) != cgiHeaderByte(b[i]) {
			return false
		}
	}
	return true
}

// localAddr returns host and port of the address a connection was accepted
// on, formatted once: it is the same for nearly every request.
func (g *Gateway) localAddr(la net.Addr) (host, port string, ok bool) {
	if c := g.local.Load(); c != nil && sameAddr(c.addr, la) {
		return c.host, c.port, true
	}
	host, port, err := net.SplitHostPort(la.String())
	if err != nil {
		return "", "", false
	}
	g.local.Store(&hostPort{addr: la, host: host, port: port})
	return host, port, true
}

// A hostPort is an address and its formatted parts.
type hostPort struct {
	addr       net.Addr
	host, port string
}

// sameAddr reports whether a and b are the same address: by value, since
// each connection has its own.
func sameAddr(a, b net.Addr) bool {
	switch x := a.(type) {
	case *net.TCPAddr:
		y, ok := b.(*net.TCPAddr)
		return ok && x.Port == y.Port && x.Zone == y.Zone && x.IP.Equal(y.IP)
	case *net.UnixAddr:
		y, ok := b.(*net.UnixAddr)
		return ok && *x == *y
	}
	return false
}

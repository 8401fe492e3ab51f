package fcgi

import (
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
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
	f := filepath.Join(root, filepath.FromSlash(p))
	prefix := root
	if !strings.HasSuffix(prefix, string(filepath.Separator)) {
		prefix += string(filepath.Separator) // a root of "/" ends in one already
	}
	if f != root && !strings.HasPrefix(f, prefix) {
		return "", false
	}
	return f, true
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
// It returns a 404 httpError when nothing matches.
func (g *Gateway) route(urlPath string) (route, error) {
	if hasControl(urlPath) {
		return route{}, errBadPath
	}
	root := g.root()
	p := cleanURLPath(urlPath)
	if strings.HasSuffix(urlPath, "/") && urlPath != "/" {
		p += "/"
	}
	ext := g.scriptExt()
	notFound := &httpError{code: http.StatusNotFound, msg: "fcgi: no script for " + clip(urlPath)}

	if script, info, ok := splitScript(p, ext); ok {
		f, ok := inRoot(root, script)
		if !ok || !isFile(f) {
			return route{}, notFound
		}
		// try_files $fastcgi_script_name sets $uri, hence DOCUMENT_URI,
		// to the script.
		return route{script: script, pathInfo: info, docURI: script, file: f}, nil
	}
	// try_files $uri $uri/, with one stat for both.
	var fi os.FileInfo
	f, ok := inRoot(root, p)
	if ok {
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
		if f, ok := inRoot(root, fc); ok && isFile(f) {
			return route{script: fc, docURI: fc, file: f}, nil
		}
	}
	return route{}, notFound
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
// PATH_INFO, for r routed to rt. contentLength is "" for no body.
func (g *Gateway) params(r *http.Request, rt route, contentLength string) map[string]string {
	root := g.root()
	p := make(map[string]string, 24+len(r.Header)+len(g.Env))
	for k, v := range g.Env {
		p[k] = v
	}
	p["QUERY_STRING"] = r.URL.RawQuery
	p["REQUEST_METHOD"] = r.Method
	p["CONTENT_TYPE"] = r.Header.Get("Content-Type")
	p["CONTENT_LENGTH"] = contentLength
	p["SCRIPT_NAME"] = rt.script
	// root has no trailing separator but when it is "/" itself.
	p["SCRIPT_FILENAME"] = strings.TrimSuffix(root, string(filepath.Separator)) + filepath.FromSlash(rt.script)
	p["PATH_INFO"] = rt.pathInfo
	reqURI := r.RequestURI
	if reqURI == "" {
		reqURI = r.URL.RequestURI()
	}
	p["REQUEST_URI"] = reqURI
	p["DOCUMENT_URI"] = rt.docURI
	p["DOCUMENT_ROOT"] = root
	p["SERVER_PROTOCOL"] = r.Proto
	if r.TLS != nil {
		p["REQUEST_SCHEME"] = "https"
		p["HTTPS"] = "on"
	} else {
		p["REQUEST_SCHEME"] = "http"
	}
	p["GATEWAY_INTERFACE"] = "CGI/1.1"
	sw := g.ServerSoftware
	if sw == "" {
		sw = "fcgikit"
	}
	p["SERVER_SOFTWARE"] = sw
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		p["REMOTE_ADDR"], p["REMOTE_PORT"] = host, port
	} else {
		p["REMOTE_ADDR"], p["REMOTE_PORT"] = r.RemoteAddr, ""
	}
	user := ""
	if u, _, ok := r.BasicAuth(); ok {
		user = u
	}
	p["REMOTE_USER"] = user
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if host, port, err := net.SplitHostPort(la.String()); err == nil {
			p["SERVER_ADDR"], p["SERVER_PORT"] = host, port
		}
	}
	name := g.ServerName
	if name == "" {
		name = r.Host
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
	}
	p["SERVER_NAME"] = name
	p["REDIRECT_STATUS"] = "200"

	// Every header as HTTP_*, as nginx passes them, except Proxy
	// (httpoxy, CVE-2016-5385). Repeated headers are joined as nginx
	// joins them: cookies with "; ", others with ", ".
	if r.Host != "" {
		p["HTTP_HOST"] = r.Host
	}
	_, authorized := r.Context().Value(authVarsKey{}).(map[string]string)
	for k, vs := range r.Header {
		if k == "Proxy" || len(vs) == 0 {
			continue
		}
		// A name with "_" is dropped, as nginx does by default
		// (underscores_in_headers off): X_Forwarded_For and
		// X-Forwarded-For would both become HTTP_X_FORWARDED_FOR, and
		// the one the application trusts could be forged. Variables an
		// Authorizer passed on are kept: it removed the client's own.
		if strings.IndexByte(k, '_') >= 0 && !(authorized && strings.HasPrefix(k, "Variable-")) {
			continue
		}
		name := cgiHeaderName(k)
		sep := ", "
		if k == "Cookie" {
			sep = "; "
		}
		p[name] = strings.Join(vs, sep)
	}
	return p
}

// cgiHeaderName turns "X-Forwarded-For" into "HTTP_X_FORWARDED_FOR".
func cgiHeaderName(k string) string {
	b := make([]byte, 0, len("HTTP_")+len(k))
	b = append(b, "HTTP_"...)
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case c == '-':
			c = '_'
		}
		b = append(b, c)
	}
	return string(b)
}

package fcgi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Sendfile lets the application hand a file to the [Gateway] instead of
// sending it: a response with an X-Accel-Redirect field (nginx's) naming a
// URL path under one of Locations' prefixes, or an X-Sendfile field
// (Apache's mod_xsendfile, lighttpd's) naming a file under one of their
// directories, has its body dropped and the file served in its place, with
// http.ServeContent: Range, If-Range, If-None-Match, If-Modified-Since and
// HEAD, with the file's Last-Modified and an ETag made as nginx makes it. The application is done with as
// soon as its header has arrived, so that no PHP worker is held while a
// slow client downloads.
//
// As nginx does, the file's response keeps only the application's
// Content-Type, Content-Disposition, Cache-Control, Expires, Set-Cookie and
// Accept-Ranges fields; its status is the file's (200, 206, 304, 412 or
// 416), never the application's. A path outside every location, one that
// leaves its directory with ".." or a symbolic link, or one naming no
// regular file gets 404 and a log line; an unreadable file 403. The field
// itself never reaches the client.
//
// Every request carries X-Sendfile-Type (the first of Headers) and, when
// X-Accel-Redirect is honoured, X-Accel-Mapping ("dir=prefix" for each
// location), in place of any the client sent: Symfony's and Laravel's
// BinaryFileResponse, with trustXSendfileTypeHeader, then answer with the
// field instead of the file.
//
// X-Accel-Expires and X-Accel-Limit-Rate are not supported, and dropped
// from the response: the Gateway keeps no cache for X-Accel-Expires to
// govern, and rate limits belong to the HTTP server in front of it.
type Sendfile struct {
	// Headers are the response fields honoured, "X-Accel-Redirect" and
	// "X-Sendfile". Empty means both, X-Accel-Redirect first.
	Headers []string

	// Locations are the internal locations files may be served from.
	Locations []SendfileLocation
}

// A SendfileLocation maps URL paths under Prefix to files under Dir, as
// nginx's "location /protected/ { internal; alias /srv/private/; }" does;
// an X-Sendfile path must lie under Dir.
type SendfileLocation struct {
	// Prefix is a URL path ending in "/": "/protected/".
	Prefix string

	// Dir is the directory it maps to.
	Dir string
}

const (
	accelRedirect = "X-Accel-Redirect"
	xSendfile     = "X-Sendfile"
)

func (s *Sendfile) headers() []string {
	if len(s.Headers) == 0 {
		return []string{accelRedirect, xSendfile}
	}
	return s.Headers
}

// sendfileParams sets the request fields that tell the application the
// Gateway serves its files.
func (g *Gateway) sendfileParams(env *cgiEnv) {
	s := g.Sendfile
	if s == nil {
		return
	}
	hs := s.headers()
	env.set("HTTP_X_SENDFILE_TYPE", http.CanonicalHeaderKey(hs[0]))
	for _, h := range hs {
		if http.CanonicalHeaderKey(h) != accelRedirect {
			continue
		}
		var b strings.Builder
		for i, l := range s.Locations {
			if i > 0 {
				b.WriteByte(',')
			}
			dir := filepath.Clean(l.Dir)
			if !strings.HasSuffix(dir, string(filepath.Separator)) {
				dir += string(filepath.Separator)
			}
			b.WriteString(dir + "=" + l.Prefix)
		}
		env.set("HTTP_X_ACCEL_MAPPING", b.String())
	}
}

// sendfileFields are the application's fields nginx keeps on the response of
// an X-Accel-Redirect.
var sendfileFields = []string{"Content-Type", "Content-Disposition", "Cache-Control", "Expires", "Set-Cookie", "Accept-Ranges"}

// sendfile serves the file resp names, if it names one, and reports whether
// it did. w's header may hold the application's fields already (the
// Gateway's direct mode): only those nginx keeps are left.
func (g *Gateway) sendfile(w http.ResponseWriter, r *http.Request, resp *Response) bool {
	s := g.Sendfile
	if s == nil {
		return false
	}
	var field, target string
	for _, name := range s.headers() {
		name = http.CanonicalHeaderKey(name)
		if v := resp.Header.Get(name); v != "" {
			field, target = name, v
			break
		}
	}
	if field == "" {
		return false
	}
	// The application's body is not wanted: drain what it has already sent
	// so that its connection is kept, and otherwise abandon it, without
	// waiting for more.
	discardBuffered(resp)
	resp.Body.Close()

	h := w.Header()
	kept := make(http.Header, len(sendfileFields))
	for _, k := range sendfileFields {
		if v, ok := resp.Header[k]; ok {
			kept[k] = v
		}
	}
	for k := range h {
		delete(h, k)
	}
	for k, v := range kept {
		h[k] = v
	}

	name, err := s.resolve(field, target)
	if err != nil {
		g.logger().Error("fcgi: gateway: "+field+" refused", "method", r.Method, "uri", r.RequestURI, "target", target, "status", http.StatusNotFound, "err", err)
		g.sendfileError(w, r, http.StatusNotFound)
		return true
	}
	f, fi, err := openRegular(name)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			g.logger().Error("fcgi: gateway: file not readable", "method", r.Method, "uri", r.RequestURI, "status", http.StatusForbidden, "err", err)
			g.sendfileError(w, r, http.StatusForbidden)
			return true
		}
		g.logger().Error("fcgi: gateway: "+field+" names no file", "method", r.Method, "uri", r.RequestURI, "target", target, "status", http.StatusNotFound, "err", err)
		g.sendfileError(w, r, http.StatusNotFound)
		return true
	}
	defer f.Close()
	if r.Method != http.MethodHead && r.Method != http.MethodGet {
		// As nginx's internal redirect does: the file is served as for a GET.
		r2 := *r
		r2.Method = http.MethodGet
		r = &r2
	}
	// nginx's ETag for static files: If-None-Match and If-Range work with
	// it as with nginx.
	h.Set("Etag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size()))
	var rw http.ResponseWriter = w
	if _, ok := kept["Accept-Ranges"]; !ok {
		rw = partialWriter{w}
	}
	sw := &sendWriter{ResponseWriter: rw, sd: g.sendDeadline(w, r)}
	http.ServeContent(sw, r, fi.Name(), fi.ModTime(), f)
	if sw.err != nil {
		g.clientGone(r, &sw.sd, sw.err)
	}
	return true
}

// sendfileError answers the Gateway's own error for a file it cannot serve,
// without the application's fields.
func (g *Gateway) sendfileError(w http.ResponseWriter, r *http.Request, code int) {
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	g.errorPage(w, r, code)
}

var (
	errOutsideLocations = errors.New("fcgi: path outside the internal locations")
	errEscapes          = errors.New("fcgi: path leaves its location's directory")
)

// resolve maps the value of field to a file under one of the locations.
func (s *Sendfile) resolve(field, target string) (string, error) {
	if field == accelRedirect {
		// A query string is nginx's $args for the internal redirect; the
		// file is all that is served here.
		p, _, _ := strings.Cut(target, "?")
		up, err := url.PathUnescape(p)
		if err != nil {
			return "", err
		}
		if strings.ContainsRune(up, 0) || hasDotDot(up) {
			return "", errEscapes
		}
		for _, l := range s.Locations {
			if rest, ok := strings.CutPrefix(up, l.Prefix); ok && l.Prefix != "" {
				return confined(l.Dir, filepath.FromSlash(path.Clean("/"+rest)))
			}
		}
		return "", errOutsideLocations
	}
	if !filepath.IsAbs(target) {
		return "", errOutsideLocations
	}
	if hasDotDot(filepath.ToSlash(target)) {
		return "", errEscapes
	}
	for _, l := range s.Locations {
		dir := filepath.Clean(l.Dir)
		if rest, ok := strings.CutPrefix(filepath.Clean(target), dir+string(filepath.Separator)); ok {
			return confined(dir, rest)
		}
	}
	return "", errOutsideLocations
}

// hasDotDot reports whether the slash path p has a ".." segment.
func hasDotDot(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}

// confined returns dir/rel if, with symbolic links followed, it stays under
// dir.
func confined(dir, rel string) (string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	name := filepath.Join(root, rel)
	real, err := filepath.EvalSymlinks(name)
	if err != nil {
		return "", err
	}
	if real != root && !strings.HasPrefix(real, root+string(filepath.Separator)) {
		return "", errEscapes
	}
	return real, nil
}

// accelNoBuffering reports whether the application asked, with
// "X-Accel-Buffering: no", for its response to be flushed as it comes, and
// removes that field and the other X-Accel ones, which are for the Gateway
// alone, from h.
func accelNoBuffering(h http.Header) bool {
	if len(h) == 0 {
		return false
	}
	no := strings.EqualFold(h.Get("X-Accel-Buffering"), "no")
	for _, k := range []string{"X-Accel-Buffering", "X-Accel-Expires", "X-Accel-Limit-Rate", "X-Accel-Charset"} {
		delete(h, k)
	}
	return no
}

// A partialWriter leaves Accept-Ranges out of a 206, as nginx does: the
// client knows already.
type partialWriter struct{ http.ResponseWriter }

func (p partialWriter) WriteHeader(code int) {
	if code == http.StatusPartialContent {
		p.Header().Del("Accept-Ranges")
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p partialWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// ReadFrom keeps sendfile(2) for the file.
func (p partialWriter) ReadFrom(r io.Reader) (int64, error) { return io.Copy(p.ResponseWriter, r) }

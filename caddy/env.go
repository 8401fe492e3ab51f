package fcgicaddy

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/fcgikit/fcgi"
)

// buildEnv returns the CGI environment of r; contentLength is
// CONTENT_LENGTH. It is the environment Caddy's fastcgi transport builds,
// variable for variable, but for two things fcgikit's Gateway and nginx do
// too, and one that is fcgikit's:
//
//   - several Cookie fields are joined with "; ", the separator of the
//     Cookie header, not ", ", which makes PHP read a cookie's value as
//     "1, b=2";
//   - a request without a body has no CONTENT_LENGTH value and no
//     HTTP_CONTENT_LENGTH, where php_fastcgi's request buffering adds a
//     Content-Length of 0; and a body sent without Content-Length (chunked)
//     has its spooled length, where php_fastcgi answers 411;
//   - FCGI_EARLY_HINTS=1 (fcgi.EarlyHintsParam) announces to HTTP/1.1 and
//     later requests that a 103 block of the application reaches the
//     client: the transport reports it to reverse_proxy, which passes 1xx
//     responses on (docs/early-hints.md of the fcgi module).
//
// Header fields whose names hold "_" or "." never get here: Caddy's server
// drops them (but those its expected_underscore_headers allows), so that
// X_Forwarded_For cannot pose as X-Forwarded-For.
func (t *Transport) buildEnv(r *http.Request, contentLength string) (map[string]string, error) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		repl = caddy.NewReplacer()
	}

	// RemoteAddr without its port and brackets; lenient where
	// net.SplitHostPort is not.
	ip, port := r.RemoteAddr, ""
	if i := strings.LastIndexByte(ip, ':'); i >= 0 {
		ip, port = ip[:i], ip[i+1:]
	}
	ip = strings.TrimSuffix(strings.TrimPrefix(ip, "["), "]")

	root, err := caddy.FastAbs(repl.ReplaceAll(t.Root, "."))
	if err != nil {
		return nil, err
	}
	if t.ResolveRootSymlink {
		if root, err = filepath.EvalSymlinks(root); err != nil {
			return nil, err
		}
	}

	// The script comes from the path as Caddy's matchers see it (cleaned,
	// slashes merged), so that a path judged to be /other.php cannot run
	// /admin.php through /admin.php/../other.php.
	fpath := caddyhttp.NormalizedPath(r.URL.Path, true)
	docURI, scriptName, pathInfo := fpath, fpath, ""
	if i := t.splitPos(fpath); i >= 0 {
		docURI, pathInfo = fpath[:i], fpath[i:]
		scriptName = strings.TrimSuffix(fpath, pathInfo)
	}
	if runtime.GOOS == "windows" && (strings.Contains(scriptName, ":") || caddyhttp.HasWindowsShortName(scriptName)) {
		return nil, caddyhttp.Error(http.StatusBadRequest, errors.New("illegal script path"))
	}
	// A matcher with "%" in its pattern judges the escaped path: both forms
	// must name the same script.
	if r.URL.RawPath != "" {
		escaped, err := url.PathUnescape(caddyhttp.NormalizedPath(r.URL.EscapedPath(), true))
		if err != nil || t.scriptPart(escaped) != docURI {
			return nil, caddyhttp.Error(http.StatusBadRequest, errors.New("escaped and decoded paths select different scripts"))
		}
	}
	// Without a split, try_files' remainder is the path info.
	if pathInfo == "" {
		pathInfo, _ = repl.GetString("http.matchers.file.remainder")
	}
	scriptFilename := caddyhttp.SanitizedPathJoin(root, scriptName)
	if scriptName != "" && !strings.HasPrefix(scriptName, "/") {
		scriptName = "/" + scriptName
	}

	// REQUEST_URI is the URI before any rewrite, as nginx's.
	requestURI := r.URL.RequestURI()
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		requestURI = orig.URL.RequestURI()
	}

	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host, hostPort, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, hostPort = r.Host, ""
	}
	user, _ := repl.GetString("http.auth.user.id")

	env := map[string]string{
		"AUTH_TYPE":         "",
		"CONTENT_LENGTH":    contentLength,
		"CONTENT_TYPE":      r.Header.Get("Content-Type"),
		"GATEWAY_INTERFACE": "CGI/1.1",
		"PATH_INFO":         pathInfo,
		"QUERY_STRING":      r.URL.RawQuery,
		"REMOTE_ADDR":       ip,
		"REMOTE_HOST":       ip,
		"REMOTE_PORT":       port,
		"REMOTE_IDENT":      "",
		"REMOTE_USER":       user,
		"REQUEST_METHOD":    r.Method,
		"REQUEST_SCHEME":    scheme,
		"SERVER_NAME":       host,
		"SERVER_PROTOCOL":   r.Proto,
		"SERVER_SOFTWARE":   t.serverSoftware,
		"DOCUMENT_ROOT":     root,
		"DOCUMENT_URI":      docURI,
		"HTTP_HOST":         r.Host,
		"REQUEST_URI":       requestURI,
		"SCRIPT_FILENAME":   scriptFilename,
		"SCRIPT_NAME":       scriptName,
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		a := la.String()
		if h, _, err := net.SplitHostPort(a); err == nil {
			a = h
		}
		if net.ParseIP(a) != nil {
			env["SERVER_ADDR"] = a
		}
	}
	if pathInfo != "" {
		env["PATH_TRANSLATED"] = caddyhttp.SanitizedPathJoin(root, pathInfo)
	}
	switch {
	case hostPort != "":
		env["SERVER_PORT"] = hostPort
	case r.TLS != nil:
		env["SERVER_PORT"] = "443"
	default:
		env["SERVER_PORT"] = "80"
	}
	if r.TLS != nil {
		env["HTTPS"] = "on"
		if v, ok := tlsVersions[r.TLS.Version]; ok {
			env["SSL_PROTOCOL"] = v
		}
		env["SSL_CIPHER"] = tls.CipherSuiteName(r.TLS.CipherSuite)
	}

	for name, vs := range r.Header {
		if len(vs) == 0 {
			continue
		}
		switch http.CanonicalHeaderKey(name) {
		case "Host": // HTTP_HOST is r.Host, the host the request was routed on
			continue
		case "Proxy": // httpoxy: HTTP_PROXY would set programs' proxy
			continue
		case "Cookie":
			env["HTTP_COOKIE"] = strings.Join(vs, "; ")
			continue
		}
		env["HTTP_"+strings.ReplaceAll(strings.ToUpper(name), "-", "_")] = strings.Join(vs, ", ")
	}

	if r.ProtoAtLeast(1, 1) {
		env[fcgi.EarlyHintsParam] = "1"
	}

	// The operator's variables last: no request header can override them.
	for k, v := range t.EnvVars {
		env[k] = repl.ReplaceAll(v, "")
	}
	return env, nil
}

// splitPos returns where path's script part ends: after the first match,
// ASCII case-insensitive, of a split extension, or -1 with no match. With no
// split extensions the whole path is path info, as in Caddy's transport.
// Bytes outside ASCII never match, so no Unicode folding turns an uploaded
// file's name into a script.
func (t *Transport) splitPos(path string) int {
	if len(t.split) == 0 {
		return 0
	}
	for _, s := range t.split {
		if s == "" || len(s) > len(path) {
			continue
		}
		for i := 0; i+len(s) <= len(path); i++ {
			if asciiLowerEqual(path[i:i+len(s)], s) {
				return i + len(s)
			}
		}
	}
	return -1
}

// asciiLowerEqual reports whether p, lowered in ASCII only, is lower.
func asciiLowerEqual(p, lower string) bool {
	for j := 0; j < len(p); j++ {
		c := p[j]
		if c >= 0x80 {
			return false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[j] {
			return false
		}
	}
	return true
}

// scriptPart returns the part of path naming the script.
func (t *Transport) scriptPart(path string) string {
	if i := t.splitPos(path); i >= 0 {
		return path[:i]
	}
	return path
}

// tlsVersions are SSL_PROTOCOL's values, in mod_ssl's spelling.
var tlsVersions = map[uint16]string{
	tls.VersionTLS10: "TLSv1",
	tls.VersionTLS11: "TLSv1.1",
	tls.VersionTLS12: "TLSv1.2",
	tls.VersionTLS13: "TLSv1.3",
}

package main

import (
	"fmt"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/fcgikit/fcgi/internal/wire"
)

// paramList is a repeatable -p NAME=VALUE flag.
type paramList [][2]string

func (p *paramList) String() string {
	var b strings.Builder
	for i, kv := range *p {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[0] + "=" + kv[1])
	}
	return b.String()
}

func (p *paramList) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q: want NAME=VALUE", s)
	}
	*p = append(*p, [2]string{name, value})
	return nil
}

// requestParams is the CGI environment of a request sent by call, ping,
// status, lint and bench, built the way nginx's fastcgi_params builds it, so applications see
// what they see behind nginx.
type requestParams struct {
	method string
	target string // path with optional query, or an absolute URL
	root   string // document root: SCRIPT_FILENAME = root + script path
	header [][2]string
	extra  paramList
	body   int64 // CONTENT_LENGTH; -1 for none
}

// pairs returns the ordered CGI variables. Later entries win: -p overrides
// what the defaults set.
func (rp *requestParams) pairs() ([][2]string, error) {
	target := rp.target
	if target == "" {
		target = "/"
	}
	scheme, host, port := "http", "localhost", "80"
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("bad URL or path %q: %v", target, err)
	}
	if u.IsAbs() {
		scheme = u.Scheme
		host = u.Hostname()
		switch {
		case u.Port() != "":
			port = u.Port()
		case scheme == "https":
			port = "443"
		}
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("bad path %q: must start with /", target)
	}
	uri := p
	if u.RawQuery != "" {
		uri += "?" + u.RawQuery
	}
	method := rp.method
	if method == "" {
		method = "GET"
	}
	root := rp.root
	if root == "" {
		root = "/var/www/html"
	}
	scriptPath := u.Path
	if scriptPath == "" {
		scriptPath = "/"
	}
	kv := [][2]string{
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "fcgikit"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"REQUEST_SCHEME", scheme},
		{"REQUEST_METHOD", method},
		{"REQUEST_URI", uri},
		{"DOCUMENT_URI", scriptPath},
		{"SCRIPT_NAME", scriptPath},
		{"SCRIPT_FILENAME", strings.TrimSuffix(root, "/") + path.Clean(scriptPath)},
		{"DOCUMENT_ROOT", root},
		{"QUERY_STRING", u.RawQuery},
		{"SERVER_NAME", host},
		{"SERVER_PORT", port},
		{"SERVER_ADDR", "127.0.0.1"},
		{"REMOTE_ADDR", "127.0.0.1"},
		{"REMOTE_PORT", "0"},
		{"REDIRECT_STATUS", "200"},
		{"HTTP_HOST", u.Host},
	}
	if scheme == "https" {
		kv = append(kv, [2]string{"HTTPS", "on"})
	}
	if u.Host == "" {
		kv[len(kv)-1][1] = "localhost"
	}
	if rp.body >= 0 {
		kv = append(kv, [2]string{"CONTENT_LENGTH", strconv.FormatInt(rp.body, 10)})
	}
	for _, h := range rp.header {
		name := strings.ToUpper(strings.ReplaceAll(h[0], "-", "_"))
		switch name {
		case "CONTENT_TYPE", "CONTENT_LENGTH":
			kv = append(kv, [2]string{name, h[1]})
		case "PROXY":
			// httpoxy: never pass a Proxy header as HTTP_PROXY.
		default:
			kv = append(kv, [2]string{"HTTP_" + name, h[1]})
		}
	}
	kv = append(kv, rp.extra...)
	// Drop earlier duplicates, keeping each name's last value in the
	// position of its first appearance.
	last := make(map[string]string, len(kv))
	for _, p := range kv {
		last[p[0]] = p[1]
	}
	out := kv[:0:0]
	for _, p := range kv {
		if v, ok := last[p[0]]; ok {
			out = append(out, [2]string{p[0], v})
			delete(last, p[0])
		}
	}
	return slices.Clip(out), nil
}

// encodePairs encodes kv as one PARAMS stream.
func encodePairs(kv [][2]string) []byte {
	var b []byte
	for _, p := range kv {
		b = wire.AppendPair(b, p[0], p[1])
	}
	return b
}

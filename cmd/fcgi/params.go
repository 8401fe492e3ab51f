package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/fcgikit/fcgi/internal/cgienv"
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

// requestParams is a request sent by call, ping, status, lint and bench.
// Its CGI environment is the one fcgikit's Gateway builds (package
// cgienv), as nginx's fastcgi_params does, so applications see what they
// see behind nginx or fcgi gateway.
type requestParams struct {
	method string
	target string // path with optional query, or an absolute URL
	root   string // document root: SCRIPT_FILENAME = root + script path
	// ext and frontController route the path as the Gateway's ScriptExt
	// and FrontController do.
	ext             string
	frontController string
	header          [][2]string
	extra           paramList
	body            int64 // CONTENT_LENGTH; -1 for none
	// authorizer leaves out what the Authorizer role is not sent.
	authorizer bool
}

// pairs returns the ordered CGI variables. -p (extra) overrides what the
// request gives.
func (rp *requestParams) pairs() ([][2]string, error) {
	target := rp.target
	if target == "" {
		target = "/"
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("bad URL or path %q: %v", target, err)
	}
	host, port := "localhost", 80
	r := &http.Request{
		Method:     rp.method,
		URL:        &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
		// No HTTP client: REMOTE_ADDR is this machine, and there is no
		// REMOTE_PORT to give.
		RemoteAddr: "127.0.0.1",
	}
	if u.IsAbs() {
		host = u.Host
		if u.Scheme == "https" {
			r.TLS = &tls.ConnectionState{}
			port = 443
		}
		if p := u.Port(); p != "" {
			if port, err = strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("bad port in %q", target)
			}
		}
	}
	r.Host = host
	p := u.EscapedPath()
	if p == "" {
		p = "/"
		r.URL.Path = "/"
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("bad path %q: must start with /", target)
	}
	r.RequestURI = p
	if u.RawQuery != "" {
		r.RequestURI += "?" + u.RawQuery
	}
	if r.Method == "" {
		r.Method = "GET"
	}
	root := rp.root
	if root == "" {
		root = "/var/www/html"
	}
	cl := ""
	if rp.body >= 0 {
		cl = strconv.FormatInt(rp.body, 10)
	}
	for _, h := range rp.header {
		if strings.EqualFold(h[0], "Content-Length") {
			cl = h[1]
		}
		r.Header.Add(h[0], h[1])
	}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	r = r.WithContext(context.WithValue(context.Background(), http.LocalAddrContextKey, local))
	kv, err := cgienv.Build(&cgienv.Request{
		HTTP:            r,
		Root:            root,
		ScriptExt:       rp.ext,
		FrontController: rp.frontController,
		ContentLength:   cl,
		Authorizer:      rp.authorizer,
		Set:             rp.extra,
	})
	if err != nil {
		return nil, fmt.Errorf("bad path %q: %v", target, strings.TrimPrefix(err.Error(), "fcgi: "))
	}
	return kv, nil
}

// encodePairs encodes kv as one PARAMS stream.
func encodePairs(kv [][2]string) []byte {
	var b []byte
	for _, p := range kv {
		b = wire.AppendPair(b, p[0], p[1])
	}
	return b
}

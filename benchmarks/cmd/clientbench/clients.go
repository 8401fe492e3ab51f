package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	caddyfcgi "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy/fastcgi"
	"github.com/yookoala/gofast"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
)

// A contender is one FastCGI client under test.
type contender struct {
	name string
	// worker returns what one goroutine calls for each request for
	// script: send it, read the whole body, check it is want.
	worker func(script string, want []byte) (func(ctx context.Context) error, error)
	close  func()
}

// nginxParams returns the parameters nginx sends for a GET of script with
// Debian's fastcgi_params: what the fcgikit and gofast clients send.
func nginxParams(root, script string) map[string]string {
	kv := fcgitest.NginxGetParams(script)
	m := make(map[string]string, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	m["SCRIPT_FILENAME"] = filepath.Join(root, script)
	m["DOCUMENT_ROOT"] = root
	return m
}

// httpRequest returns the HTTP request that the gateway and Caddy's
// transport turn into FastCGI parameters: a GET of script as wrk sends it.
func httpRequest(ctx context.Context, script string) (*http.Request, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost:8080"+script, nil)
	if err != nil {
		return nil, err
	}
	r.RemoteAddr = "127.0.0.1:51234"
	r.Header.Set("User-Agent", "clientbench")
	r.Header.Set("Accept", "*/*")
	return r, nil
}

// readBody reads body to its end into buf and returns the number of bytes.
func readBody(body io.Reader, buf []byte) (int, error) {
	n := 0
	for {
		m, err := body.Read(buf)
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func checkBody(name string, status, n int, want []byte) error {
	if status != http.StatusOK || n != len(want) {
		return fmt.Errorf("%s: status %d, %d bytes, want 200 and %d bytes", name, status, n, len(want))
	}
	return nil
}

// newClient returns fcgikit's client with its defaults (a pool of kept
// connections, no multiplexing) but for MaxConnsPerBackend.
func newClient(sock string, maxConns int) *fcgi.Client {
	return &fcgi.Client{Addr: "unix:" + sock, MaxConnsPerBackend: maxConns}
}

// clientName names fcgikit's client by its MaxConnsPerBackend.
func clientName(what string, maxConns int) string {
	if maxConns <= 0 {
		return what + " (defaults)"
	}
	return fmt.Sprintf("%s (MaxConnsPerBackend %d)", what, maxConns)
}

// fcgikitClient is fcgi.Client.Do.
func fcgikitClient(sock, root string, maxConns int) *contender {
	c := newClient(sock, maxConns)
	return &contender{
		name: clientName("fcgikit Client.Do", maxConns),
		worker: func(script string, want []byte) (func(context.Context) error, error) {
			req := &fcgi.Request{Params: nginxParams(root, script)}
			buf := make([]byte, 32<<10)
			return func(ctx context.Context) error {
				resp, err := c.Do(ctx, req)
				if err != nil {
					return err
				}
				n, err := readBody(resp.Body, buf)
				resp.Body.Close()
				if err != nil {
					return err
				}
				return checkBody("fcgikit", resp.StatusCode, n, want)
			}, nil
		},
		close: func() { c.Close() },
	}
}

// fcgikitGateway is fcgi.Gateway.ServeHTTP called in-process with a
// ResponseWriter that counts and discards: like Caddy's RoundTrip, it
// builds the parameters from an *http.Request (and stats the script, as
// try_files does).
func fcgikitGateway(sock, root string, maxConns int) *contender {
	c := newClient(sock, maxConns)
	g := &fcgi.Gateway{Client: c, Root: root}
	return &contender{
		name: clientName("fcgikit Gateway.ServeHTTP", maxConns),
		worker: func(script string, want []byte) (func(context.Context) error, error) {
			w := &discardWriter{h: make(http.Header)}
			var r *http.Request
			return func(ctx context.Context) error {
				if r == nil {
					var err error
					if r, err = httpRequest(ctx, script); err != nil {
						return err
					}
				}
				w.reset()
				g.ServeHTTP(w, r)
				return checkBody("fcgikit gateway", w.code, w.n, want)
			}, nil
		},
		close: func() { c.Close() },
	}
}

// gofastClient is github.com/yookoala/gofast's client from its connection
// pool (NewClientPool, as its README sets it up), the response read with
// ResponsePipe.WriteTo, its only way to the body.
func gofastClient(sock, root string, conns int) *contender {
	pool := gofast.NewClientPool(
		gofast.SimpleClientFactory(gofast.SimpleConnFactory("unix", sock)),
		uint(conns), 30*time.Second)
	return &contender{
		name: "gofast ClientPool",
		worker: func(script string, want []byte) (func(context.Context) error, error) {
			params := nginxParams(root, script)
			w := &discardWriter{h: make(http.Header)}
			return func(context.Context) error {
				c, err := pool.CreateClient()
				if err != nil {
					return err
				}
				resp, err := c.Do(&gofast.Request{Role: gofast.RoleResponder, Params: params})
				if err != nil {
					c.Close()
					return err
				}
				w.reset()
				err = resp.WriteTo(w, io.Discard)
				c.Close()
				if err != nil {
					return err
				}
				return checkBody("gofast", w.code, w.n, want)
			}, nil
		},
		// gofast's pool has no Close: its connections stay open until
		// the backend exits.
		close: func() {},
	}
}

// caddyDialInfoKey is the context key under which Caddy's reverse proxy
// hands the upstream's address to its transport (reverseproxy's
// unexported dialInfoCtxKey, hosts.go). Without it the transport dials
// TCP to the request URL's host.
const caddyDialInfoKey caddy.CtxKey = "reverse_proxy.dial_info"

// caddyTransport is Caddy's FastCGI transport, fastcgi.Transport.RoundTrip,
// called directly with the context values Caddy's HTTP server and reverse
// proxy would have set. Caddy itself must be running (an empty
// configuration, admin endpoint off) for the transport to get a logger.
func caddyTransport(sock, root string) (*contender, error) {
	t := &caddyfcgi.Transport{Root: root, SplitPath: []string{".php"}}
	if err := t.Provision(caddy.ActiveContext()); err != nil {
		return nil, err
	}
	srv := &caddyhttp.Server{}
	return &contender{
		name: "Caddy fastcgi.Transport",
		worker: func(script string, want []byte) (func(context.Context) error, error) {
			buf := make([]byte, 32<<10)
			var r *http.Request
			return func(ctx context.Context) error {
				if r == nil {
					var err error
					if r, err = httpRequest(ctx, script); err != nil {
						return err
					}
					c := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
					c = context.WithValue(c, caddyhttp.ServerCtxKey, srv)
					c = context.WithValue(c, caddyhttp.OriginalRequestCtxKey, *r)
					c = context.WithValue(c, caddyDialInfoKey, reverseproxy.DialInfo{Network: "unix", Address: sock})
					r = r.WithContext(c)
				}
				resp, err := t.RoundTrip(r)
				if err != nil {
					return err
				}
				n, err := readBody(resp.Body, buf)
				resp.Body.Close()
				if err != nil {
					return err
				}
				return checkBody("caddy", resp.StatusCode, n, want)
			}, nil
		},
		close: func() {},
	}, nil
}

// startCaddy runs Caddy with an empty configuration: no admin endpoint,
// nothing saved, errors only in the log.
func startCaddy() error {
	return caddy.Load([]byte(`{
		"admin": {"disabled": true, "config": {"persist": false}},
		"logging": {"logs": {"default": {"level": "ERROR"}}}
	}`), true)
}

// discardWriter is an http.ResponseWriter that keeps the status and the
// number of body bytes.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

func (w *discardWriter) Flush() {}

func (w *discardWriter) reset() {
	clear(w.h)
	w.code, w.n = 0, 0
}

// stopCaddy stops the empty configuration startCaddy ran.
func stopCaddy() { caddy.Stop() }

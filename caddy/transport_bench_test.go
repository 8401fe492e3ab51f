package fcgicaddy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"go.uber.org/zap"

	"github.com/fcgikit/fcgi"
)

// The transport's cost per request in process, beside fcgikit's Gateway
// before the same backend: both build the CGI environment from an
// *http.Request, make the FastCGI round trip and hand the response on, so
// what the transport spends above the Gateway is its own. Run with
//
//	go test -run '^$' -bench 'RoundTrip|GatewayServeHTTP' -benchmem -count 3 .

// benchBackend serves "hello" with fcgikit's server on a unix socket in a
// temporary directory and returns that socket's path.
func benchBackend(b *testing.B) string {
	sock := filepath.Join(b.TempDir(), "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello")
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return sock
}

// benchRequest is a GET of /index.php as reverse_proxy hands it to its
// transport: with the replacer, the original request and the upstream's
// dial information in its context.
func benchRequest(root, sock string) *http.Request {
	r := httptest.NewRequest("GET", "/index.php?id=1", nil)
	r.Header.Set("User-Agent", "bench")
	r.Header.Set("Accept", "*/*")
	repl := caddy.NewReplacer()
	repl.Set("http.vars.root", root)
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.OriginalRequestCtxKey, *r)
	ctx = context.WithValue(ctx, caddy.CtxKey("reverse_proxy.dial_info"), reverseproxy.DialInfo{Network: "unix", Address: sock})
	return r.WithContext(ctx)
}

func BenchmarkRoundTrip(b *testing.B) {
	sock := benchBackend(b)
	root := b.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.php"), []byte("<?php"), 0o644); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	t := &Transport{SplitPath: []string{".php"}}
	if err := t.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer t.Cleanup()
	// Caddy's default log level, INFO, skips the debug line of every
	// request; the bare context's logger would write it.
	t.logger = zap.NewNop()
	if _, ok := reverseproxy.GetDialInfo(benchRequest(root, sock).Context()); !ok {
		b.Fatal("the dial information's context key is not reverse_proxy's")
	}
	r := benchRequest(root, sock)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := t.RoundTrip(r)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
}

func BenchmarkGatewayServeHTTP(b *testing.B) {
	sock := benchBackend(b)
	root := b.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.php"), []byte("<?php"), 0o644); err != nil {
		b.Fatal(err)
	}
	c := &fcgi.Client{Addr: "unix:" + sock}
	defer c.Close()
	g := &fcgi.Gateway{Client: c, Root: root}
	r := benchRequest(root, sock)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGatewayEarlyHints: the gateway passes an application's 103 on, and
// with --learn-early-hints sends a page's preload links as a 103 on the
// next HTTP/2 navigation to it.
func TestGatewayEarlyHints(t *testing.T) {
	const link = "</s.css>; rel=preload; as=style"
	app := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hinted" {
			w.Header().Set("Link", link)
			w.WriteHeader(http.StatusEarlyHints)
		}
		w.Header().Set("Link", link)
		io.WriteString(w, "<page>")
	}))
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeCert(t, cert, key)
	_, url := startGateway(t, "--backend", app, "--tls-cert", cert, "--tls-key", key, "--learn-early-hints")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer c.CloseIdleConnections()
	get := func(path string, navigate bool) (codes []int, links []string) {
		t.Helper()
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				codes, links = append(codes, code), append(links, h.Get("Link"))
				return nil
			},
		})
		req, _ := http.NewRequestWithContext(ctx, "GET", url+strings.TrimPrefix(path, "/"), nil)
		if navigate {
			req.Header.Set("Sec-Fetch-Mode", "navigate")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "<page>" || resp.ProtoMajor != 2 {
			t.Fatalf("GET %s: %s %d %q", path, resp.Proto, resp.StatusCode, body)
		}
		return codes, links
	}
	if codes, links := get("/hinted", false); len(codes) != 1 || codes[0] != 103 || links[0] != link {
		t.Errorf("the application's 103: %v %q", codes, links)
	}
	if codes, _ := get("/page", true); len(codes) != 0 {
		t.Errorf("first navigation: %v", codes)
	}
	if codes, links := get("/page", true); len(codes) != 1 || codes[0] != 103 || links[0] != link {
		t.Errorf("second navigation: %v %q", codes, links)
	}
	if codes, _ := get("/page", false); len(codes) != 0 {
		t.Errorf("not a navigation: %v", codes)
	}
}

package fcgi_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

const hintLink = "</s.css>; rel=preload; as=style"

// hintedPage sends a 103 with a Link, as a net/http handler does, then its
// page.
func hintedPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Link", hintLink)
	w.WriteHeader(http.StatusEarlyHints)
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "<page>")
}

// interims records the 1xx responses a request's trace sees.
type interims struct {
	mu    sync.Mutex
	codes []int
	links []string
	hdrs  []textproto.MIMEHeader
}

func (i *interims) context(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			i.mu.Lock()
			defer i.mu.Unlock()
			i.codes = append(i.codes, code)
			i.links = append(i.links, strings.Join(h["Link"], ", "))
			i.hdrs = append(i.hdrs, h)
			return nil
		},
	})
}

func (i *interims) check(t *testing.T, codes ...int) {
	t.Helper()
	i.mu.Lock()
	defer i.mu.Unlock()
	if len(i.codes) != len(codes) {
		t.Fatalf("1xx responses %v (Link %q), want %v", i.codes, i.links, codes)
	}
	for n, c := range codes {
		if i.codes[n] != c || (c == http.StatusEarlyHints && i.links[n] != hintLink) {
			t.Fatalf("1xx responses %v (Link %q), want %v with Link %q", i.codes, i.links, codes, hintLink)
		}
	}
}

// A Go handler's WriteHeader(103) behind the Server reaches the Client's
// caller through httptrace, as it does behind net/http's server and
// Transport: the 103 carries the Link set so far, and the final response
// keeps it.
func TestEarlyHintsServerClient(t *testing.T) {
	checkLeaks(t)
	forEachNetwork(t, func(t *testing.T, network string) {
		addr := startServer(t, network, nil, http.HandlerFunc(hintedPage))
		if network == "unix" {
			addr = "unix:" + addr
		}
		c := newClient(addr)
		defer c.Close()

		// A web server that does not announce the convention gets no
		// interim block, traced or not: it would take it for the response.
		var none interims
		resp, err := c.Do(none.context(context.Background()), get("/"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		none.check(t)
		if resp.StatusCode != 200 || string(body) != "<page>" || resp.Header.Get("Link") != hintLink {
			t.Fatalf("without %s: %d %v %q", fcgi.EarlyHintsParam, resp.StatusCode, resp.Header, body)
		}

		var seen interims
		resp, err = c.Do(seen.context(context.Background()), hintedGet("/"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		seen.check(t, http.StatusEarlyHints)
		if resp.StatusCode != 200 || string(body) != "<page>" || resp.Header.Get("Link") != hintLink {
			t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
		}

		// The same handler under net/http.
		hs := httptest.NewServer(http.HandlerFunc(hintedPage))
		defer hs.Close()
		var ref interims
		req, _ := http.NewRequestWithContext(ref.context(context.Background()), "GET", hs.URL, nil)
		hresp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		hresp.Body.Close()
		ref.check(t, http.StatusEarlyHints)
		if hresp.Header.Get("Link") != hintLink {
			t.Fatalf("net/http: %v", hresp.Header)
		}

		// Without a trace the interim block is dropped.
		resp, body2 := doString(t, c, hintedGet("/"))
		if resp.StatusCode != 200 || body2 != "<page>" {
			t.Fatalf("%d %q", resp.StatusCode, body2)
		}
	})
}

// hintedGet is a GET from a web server that announces the Early Hints
// convention.
func hintedGet(uri string) *fcgi.Request {
	req := get(uri)
	req.Params[fcgi.EarlyHintsParam] = "1"
	return req
}

// Behind nginx, which does not follow the convention, a handler's 103 is
// dropped and the page arrives whole, also when the client sends a header
// that would name the announcement: headers arrive as HTTP_* parameters.
func TestEarlyHintsBehindNginx(t *testing.T) {
	checkLeaks(t)
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := fcgi.Params(r)[fcgi.EarlyHintsParam]; v != "" {
			t.Errorf("%s = %q from nginx", fcgi.EarlyHintsParam, v)
		}
		hintedPage(w, r)
	}))
	n := peer.StartNginx(t, peer.NginxConfig{Dir: peer.TempDir(t), FastCGI: addr})
	client := httpClient(t)
	for _, hdr := range [][]string{nil, {"Fcgi-Early-Hints", "1"}, {"Fcgi_Early_Hints", "1"}} {
		seen, resp, body := traceGet(t, client, n.URL()+"/page", hdr...)
		seen.check(t)
		if resp.StatusCode != 200 || body != "<page>" || resp.Header.Get("Link") != hintLink || resp.Header.Get("Content-Type") != "text/html" {
			t.Fatalf("header %q: %d %v %q", hdr, resp.StatusCode, resp.Header, body)
		}
	}
}

// The Gateway announces the convention to HTTP/1.1 and later clients only,
// whatever its Params hold.
func TestEarlyHintsGatewayAnnounces(t *testing.T) {
	checkLeaks(t)
	g, h1, h2, _ := hintsGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, fcgi.Params(r)[fcgi.EarlyHintsParam])
	}))
	g.Params = map[string]string{fcgi.EarlyHintsParam: "1"}
	for _, s := range []*httptest.Server{h1, h2} {
		if _, resp, body := traceGet(t, s.Client(), s.URL+"/"); body != "1" {
			t.Fatalf("%s: %s = %q, want 1", resp.Proto, fcgi.EarlyHintsParam, body)
		}
	}
	nc, err := net.Dial("tcp", h1.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(nc, "GET / HTTP/1.0\r\nHost: x\r\nFcgi-Early-Hints: 1\r\n\r\n")
	raw, _ := io.ReadAll(nc)
	if !strings.HasPrefix(string(raw), "HTTP/1.0 200 OK\r\n") || !strings.HasSuffix(string(raw), "\r\n\r\n") {
		t.Fatalf("HTTP/1.0: %s sent:\n%s", fcgi.EarlyHintsParam, raw)
	}
}

// hintsGateway serves h behind a Server and a Gateway, over HTTP/1.1 and,
// with TLS, HTTP/2.
func hintsGateway(t *testing.T, h http.Handler) (*fcgi.Gateway, *httptest.Server, *httptest.Server, *logBuffer) {
	addr := startServer(t, "unix", nil, h)
	g, logs := newGateway(t, "unix:"+addr, t.TempDir())
	g.PassThrough = true
	h1 := httptest.NewServer(g)
	t.Cleanup(h1.Close)
	h2 := httptest.NewUnstartedServer(g)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(h2.Close)
	return g, h1, h2, logs
}

func traceGet(t *testing.T, c *http.Client, url string, hdr ...string) (*interims, *http.Response, string) {
	t.Helper()
	var seen interims
	req, _ := http.NewRequestWithContext(seen.context(context.Background()), "GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return &seen, resp, string(body)
}

// The Gateway passes an application's 103 on as an interim 103 with its
// Link, to HTTP/1.1 and HTTP/2 clients, and the page after it.
func TestEarlyHintsGateway(t *testing.T) {
	checkLeaks(t)
	_, h1, h2, _ := hintsGateway(t, http.HandlerFunc(hintedPage))
	for _, s := range []*httptest.Server{h1, h2} {
		seen, resp, body := traceGet(t, s.Client(), s.URL+"/")
		seen.check(t, http.StatusEarlyHints)
		if resp.StatusCode != 200 || body != "<page>" || resp.Header.Get("Link") != hintLink {
			t.Fatalf("%s: %d %v %q", resp.Proto, resp.StatusCode, resp.Header, body)
		}
		if want := s == h2; (resp.ProtoMajor == 2) != want {
			t.Fatalf("proto %s", resp.Proto)
		}
	}
}

// curl -v shows the 103 the Gateway sends on.
func TestEarlyHintsGatewayCurl(t *testing.T) {
	checkLeaks(t)
	curl := peer.Require(t, "curl", "curl")
	_, h1, _, _ := hintsGateway(t, http.HandlerFunc(hintedPage))
	out, err := exec.Command(curl, "-sv", h1.URL+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	s := string(out)
	i103, i200 := strings.Index(s, "< HTTP/1.1 103 Early Hints"), strings.Index(s, "< HTTP/1.1 200 OK")
	if i103 < 0 || i200 < i103 || !strings.Contains(s[i103:i200], "< Link: "+hintLink) || !strings.HasSuffix(s, "<page>") {
		t.Fatalf("curl -v:\n%s", s)
	}
}

// An HTTP/1.0 client gets no interim response, and statuses other than 103
// are not passed on: the client sees the final response only.
func TestEarlyHintsGatewayDropped(t *testing.T) {
	checkLeaks(t)
	_, h1, _, _ := hintsGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusProcessing)
		if r.URL.Path == "/hinted" {
			hintedPage(w, r)
			return
		}
		io.WriteString(w, "<page>")
	}))
	seen, resp, body := traceGet(t, h1.Client(), h1.URL+"/plain")
	seen.check(t)
	if resp.StatusCode != 200 || body != "<page>" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}

	nc, err := net.Dial("tcp", h1.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(nc, "GET /hinted HTTP/1.0\r\nHost: x\r\n\r\n")
	raw, _ := io.ReadAll(nc)
	if !strings.HasPrefix(string(raw), "HTTP/1.0 200 OK\r\n") || strings.Contains(string(raw), " 103 ") || !strings.HasSuffix(string(raw), "<page>") {
		t.Fatalf("HTTP/1.0:\n%s", raw)
	}
}

// A hostile application cannot keep a request waiting with interim blocks:
// more than the bound, or more bytes than MaxResponseHeaderBytes in all, end
// the request with an error, which the Gateway answers with a 502.
func TestEarlyHintsBounded(t *testing.T) {
	checkLeaks(t)
	block := "Status: 103 Early Hints\r\nLink: " + hintLink + "\r\n\r\n"
	for _, tc := range []struct {
		name   string
		stdout string
		want   error
	}{
		{"a thousand blocks", strings.Repeat(block, 1000), fcgi.ErrMalformedResponse},
		{"a huge block", "Status: 103\r\nLink: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", fcgi.ErrResponseHeaderTooLarge},
		{"blocks too large together", strings.Repeat("Status: 103\r\nLink: "+strings.Repeat("a", 10<<10)+"\r\n\r\n", 8), fcgi.ErrResponseHeaderTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := startFake(t, "tcp", func(a *fakeApp) {
				a.Handler = func(r *fakeReq) {
					r.Write(tc.stdout)
					r.Write("Status: 200 OK\r\n\r\n<page>")
				}
			})
			c := newClient(app.Addr)
			defer c.Close()
			var seen interims
			resp, err := c.Do(seen.context(context.Background()), get("/"))
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if len(seen.codes) > 16 {
				t.Fatalf("%d interim responses delivered", len(seen.codes))
			}

			g, logs := newGateway(t, app.Addr, t.TempDir())
			g.PassThrough = true
			hs := httptest.NewServer(g)
			defer hs.Close()
			_, gresp, _ := traceGet(t, hs.Client(), hs.URL+"/")
			if gresp.StatusCode != http.StatusBadGateway || !strings.Contains(logs.String(), tc.want.Error()) {
				t.Fatalf("%d; log:\n%s", gresp.StatusCode, logs.String())
			}
		})
	}
}

// The bound leaves room for an application's few hints.
func TestEarlyHintsSeveral(t *testing.T) {
	checkLeaks(t)
	app := startFake(t, "unix", func(a *fakeApp) {
		a.Handler = func(r *fakeReq) {
			// Split across records, and the final header in the record of
			// the last hint.
			r.Write("Status: 103\r\nLink: " + hintLink + "\r\n")
			r.Write("\r\nStatus: 103\nLink: " + hintLink + "\n\nStatus: 103\r\nLink: " + hintLink + "\r\n\r\nStatus: 201 Created\r\n")
			r.Write("X: y\r\n\r\n<page>")
		}
	})
	c := newClient(app.Addr)
	defer c.Close()
	var seen interims
	resp, err := c.Do(seen.context(context.Background()), get("/"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	seen.check(t, 103, 103, 103)
	if resp.StatusCode != 201 || resp.Header.Get("X") != "y" || string(body) != "<page>" || resp.Header.Get("Link") != "" {
		t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
	}
}

// With LearnEarlyHints the Gateway sends the preload and preconnect links
// of a route's last page as a 103 on the next HTTP/2 navigation to it, before
// the application answers; not to HTTP/1.1 clients, nor for requests that are
// not navigations, nor for links of other rels; and a page without them
// stops the hints.
func TestEarlyHintsLearned(t *testing.T) {
	checkLeaks(t)
	var mu sync.Mutex
	links := []string{hintLink + `, <https://cdn.example>; rel="preconnect"`, "</next>; rel=next"}
	_, h1, h2, _ := hintsGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		for _, l := range links {
			w.Header().Add("Link", l)
		}
		mu.Unlock()
		io.WriteString(w, "<page>")
	}))
	g := h1.Config.Handler.(*fcgi.Gateway)
	g.LearnEarlyHints = true
	nav := []string{"Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}
	want := hintLink + ", <https://cdn.example>; rel=\"preconnect\""

	seen, _, _ := traceGet(t, h2.Client(), h2.URL+"/a", nav...)
	seen.check(t) // nothing learned yet
	seen, resp, body := traceGet(t, h2.Client(), h2.URL+"/a", nav...)
	if len(seen.codes) != 1 || seen.codes[0] != 103 || seen.links[0] != want || body != "<page>" || resp.ProtoMajor != 2 {
		t.Fatalf("second navigation: 1xx %v %q, %s %q", seen.codes, seen.links, resp.Proto, body)
	}
	seen, _, _ = traceGet(t, h2.Client(), h2.URL+"/a", "Sec-Fetch-Dest", "document")
	if len(seen.codes) != 1 {
		t.Fatalf("Sec-Fetch-Dest: document: 1xx %v", seen.codes)
	}
	for name, tc := range map[string]struct {
		c   *http.Client
		url string
		hdr []string
	}{
		"not a navigation": {h2.Client(), h2.URL + "/a", []string{"Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty"}},
		"no Sec-Fetch":     {h2.Client(), h2.URL + "/a", nil},
		"another route":    {h2.Client(), h2.URL + "/b", nav},
		"HTTP/1.1":         {h1.Client(), h1.URL + "/a", nav},
	} {
		seen, _, _ := traceGet(t, tc.c, tc.url, tc.hdr...)
		if len(seen.codes) != 0 {
			t.Errorf("%s: 1xx %v %q", name, seen.codes, seen.links)
		}
	}

	mu.Lock()
	links = []string{"</next>; rel=next"}
	mu.Unlock()
	traceGet(t, h2.Client(), h2.URL+"/a", nav...) // hinted, and forgets
	seen, _, _ = traceGet(t, h2.Client(), h2.URL+"/a", nav...)
	seen.check(t)
}

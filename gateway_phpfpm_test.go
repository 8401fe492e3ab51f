package fcgi_test

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

const dumpServer = `<?php header('Content-Type: application/json'); echo json_encode($_SERVER);`

// nginxPHP is the usual nginx configuration for a PHP front controller.
func nginxPHP(t *testing.T, fpm *peer.PHPFPM) *peer.Nginx {
	dir := peer.TempDir(t)
	server := fmt.Sprintf(`
        index index.php;
        location / { try_files $uri $uri/ /index.php$is_args$args; }
        location ~ [^/]\.php(/|$) {
            fastcgi_split_path_info ^(.+?\.php)(/.*)$;
            try_files $fastcgi_script_name =404;
            set $path_info $fastcgi_path_info;
            fastcgi_param PATH_INFO $path_info;
            include %s/fastcgi_params;
            fastcgi_pass unix:%s;
        }
`, dir, fpm.Socket())
	return peer.StartNginx(t, peer.NginxConfig{Dir: dir, Root: fpm.Root(), Server: server})
}

func phpGateway(t *testing.T, fpm *peer.PHPFPM, maxConns int) (*fcgi.Gateway, *httptest.Server, *logBuffer) {
	g, logs := newGateway(t, fpm.Addr(), fpm.Root())
	g.Client.MaxConnsPerBackend = maxConns
	g.Client.ResponseHeaderTimeout = 10 * time.Second
	g.ServeStatic = true
	g.ServerName = "127.0.0.1"
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv, logs
}

// The gateway gives PHP the same $_SERVER as nginx does for the same
// requests, ports and SERVER_SOFTWARE aside.
func TestGatewayMatchesNginx(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("env.php", dumpServer)
	fpm.WriteFile("blog/index.php", dumpServer)
	ngx := nginxPHP(t, fpm)
	_, srv, _ := phpGateway(t, fpm, 2)

	// FCGI_EARLY_HINTS is the Gateway's own announcement (docs/early-hints.md).
	ignore := []string{"SERVER_SOFTWARE", "SERVER_PORT", "REMOTE_PORT", "REQUEST_TIME", "REQUEST_TIME_FLOAT", fcgi.EarlyHintsParam}
	type reqSpec struct {
		method, target, ctype, body string
		header                      map[string]string
	}
	for _, rs := range []reqSpec{
		{method: "GET", target: "/env.php?a=b&c"},
		{method: "GET", target: "/env.php/extra/path?x=1"},
		{method: "GET", target: "/blog/"},
		{method: "GET", target: "/blog/?dump=1"},
		{method: "GET", target: "/route/to/page?dump=1&x=%20y"},
		{method: "GET", target: "/?dump=1"},
		{method: "POST", target: "/env.php", ctype: "application/x-www-form-urlencoded", body: "a=1&b=2"},
		{method: "GET", target: "/env.php", header: map[string]string{"X-Custom": "v", "Cookie": "k=v", "Proxy": "http://evil/", "Accept-Language": "fr"}},
		{method: "HEAD", target: "/env.php"},
	} {
		fetch := func(base string) (int, map[string]any) {
			var body io.Reader
			if rs.body != "" {
				body = strings.NewReader(rs.body)
			}
			req, _ := http.NewRequest(rs.method, base+rs.target, body)
			req.Host = "example.test"
			if rs.ctype != "" {
				req.Header.Set("Content-Type", rs.ctype)
			}
			for k, v := range rs.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var m map[string]any
			if rs.method != "HEAD" {
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatalf("%s %s via %s: %d %q", rs.method, rs.target, base, resp.StatusCode, b)
				}
			}
			for _, k := range ignore {
				delete(m, k)
			}
			return resp.StatusCode, m
		}
		nc, nm := fetch(ngx.URL())
		gc, gm := fetch(srv.URL)
		if nc != gc {
			t.Errorf("%s %s: status %d via nginx, %d via the gateway", rs.method, rs.target, nc, gc)
		}
		for _, k := range slices.Sorted(maps.Keys(nm)) {
			if fmt.Sprint(nm[k]) != fmt.Sprint(gm[k]) {
				t.Errorf("%s %s: %s = %q via nginx, %q via the gateway", rs.method, rs.target, k, nm[k], gm[k])
			}
		}
		for k := range gm {
			if _, ok := nm[k]; !ok {
				t.Errorf("%s %s: %s = %q only via the gateway", rs.method, rs.target, k, gm[k])
			}
		}
	}
}

func TestGatewayPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	_, srv, logs := phpGateway(t, fpm, 2)

	t.Run("10MiB multipart upload", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("title", "big")
		file := make([]byte, 10<<20)
		for i := range file {
			file[i] = byte(i * 31)
		}
		fw, _ := mw.CreateFormFile("upload", "big.bin")
		fw.Write(file)
		mw.Close()
		resp, err := http.Post(srv.URL+"/post", mw.FormDataContentType(), &buf)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Post  map[string]string
			Files map[string]struct {
				Size int
				MD5  string
			}
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if f := got.Files["upload"]; f.Size != len(file) || f.MD5 != fmt.Sprintf("%x", md5.Sum(file)) || got.Post["title"] != "big" {
			t.Fatalf("%d: %+v", resp.StatusCode, got)
		}
	})
	t.Run("chunked upload", func(t *testing.T) {
		data := bytes.Repeat([]byte("chunk!"), 500000) // 3 MB, no Content-Length
		resp, err := http.Post(srv.URL+"/raw", "application/octet-stream", chunked{bytes.NewReader(data)})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %x", len(data), md5.Sum(data)); string(b) != want {
			t.Fatalf("%q, want %q", b, want)
		}
	})
	t.Run("flush streams", func(t *testing.T) {
		start := time.Now()
		resp, err := http.Get(srv.URL + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var at []time.Duration
		for sc.Scan() {
			at = append(at, time.Since(start))
		}
		if len(at) != 3 || at[2]-at[0] < 250*time.Millisecond {
			t.Fatalf("lines at %v: not streamed", at)
		}
	})
	t.Run("more clients than workers", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Get(srv.URL + "/slow")
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "slow ") {
					errs <- fmt.Errorf("%d %q", resp.StatusCode, b)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("missing script", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/nothere.php")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("errors logged:\n%s", logs.String())
	}
}

// CVE-2019-11043: the exploit's URLs reach neither a broken split nor
// PHP-FPM; PHP-FPM keeps serving.
func TestGatewayCVE201911043(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	_, srv, _ := phpGateway(t, fpm, 1)
	for i := 0; i < 20; i++ {
		q := strings.Repeat("Q", 1500+i*10)
		resp, err := http.Get(srv.URL + "/index.php/PHP%0Ais_the_shittiest_lang.php?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	}
	resp, err := http.Get(srv.URL + "/index.php/a/b")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "front /a/b" {
		t.Fatalf("%q", b)
	}
}

// A PHP script as a FastCGI Authorizer in front of a PHP application.
func TestGatewayAuthorizerPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("auth.php", `<?php
if (($_SERVER['HTTP_AUTHORIZATION'] ?? '') !== 'Bearer s3cret') {
	http_response_code(401);
	header('WWW-Authenticate: Bearer');
	echo 'denied ', $_SERVER['FCGI_ROLE'];
	exit;
}
header('Variable-AUTH_USER: alice');
`)
	fpm.WriteFile("env.php", dumpServer)
	g, _, _ := phpGateway(t, fpm, 2)
	// The authorizer runs auth.php whatever the path: no path names a
	// script, so every one goes to the front controller.
	ag, _ := newGateway(t, fpm.Addr(), fpm.Root())
	ag.FrontController = "/auth.php"
	ag.ScriptExt = ".none"
	srv := httptest.NewServer(ag.Authorizer(g))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/env.php")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || string(b) != "denied AUTHORIZER" || resp.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("denied: %d %q %v", resp.StatusCode, b, resp.Header)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/env.php", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var server map[string]any
	json.NewDecoder(resp.Body).Decode(&server)
	resp.Body.Close()
	if resp.StatusCode != 200 || server["AUTH_USER"] != "alice" || server["FCGI_ROLE"] != "RESPONDER" {
		t.Fatalf("allowed: %d AUTH_USER=%v FCGI_ROLE=%v", resp.StatusCode, server["AUTH_USER"], server["FCGI_ROLE"])
	}
}

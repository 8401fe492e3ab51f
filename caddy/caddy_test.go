package fcgicaddy_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// app is the small PHP application every test serves.
var app = map[string]string{
	"env.php": `<?php header('Content-Type: application/json'); echo json_encode($_SERVER);`,
	"index.php": `<?php echo "index ", $_SERVER['SCRIPT_NAME'], " ", $_SERVER['REQUEST_URI'], " [",
		$_SERVER['PATH_INFO'] ?? '', "]";`,
	"sub/index.php": `<?php echo "sub index ", $_SERVER['SCRIPT_NAME'];`,
	"info.php":      `<?php echo "info ", $_SERVER['SCRIPT_NAME'], " [", $_SERVER['PATH_INFO'] ?? '', "]";`,
	"form.php": `<?php
$files = [];
foreach ($_FILES as $k => $f) {
	$files[$k] = ['name' => $f['name'], 'size' => $f['size'], 'error' => $f['error'],
		'md5' => $f['error'] === 0 ? md5_file($f['tmp_name']) : ''];
}
header('Content-Type: application/json');
echo json_encode(['get' => (object)$_GET, 'post' => (object)$_POST, 'files' => (object)$files]);`,
	"body.php": `<?php $b = file_get_contents('php://input');
echo strlen($b), " ", md5($b), " ", $_SERVER['CONTENT_LENGTH'] ?? '-';`,
	"stream.php": `<?php while (ob_get_level()) ob_end_flush();
echo "first\n"; flush(); usleep(800000); echo "second\n";`,
	"hello.php": `<?php echo "hello";`,
	"big.php":   `<?php echo str_repeat("0123456789abcdef", 8192);`,
	"sleep.php": `<?php usleep(200000); echo getmypid();`,
}

// hintsPage is the PHP page of docs/early-hints.md: a 103 block, then the
// page, when the web server announces the convention.
func hintsPage(t *testing.T) string {
	doc, err := os.ReadFile("../docs/early-hints.md")
	if err != nil {
		t.Fatal(err)
	}
	_, code, ok := strings.Cut(string(doc), "```php\n")
	code, _, ok2 := strings.Cut(code, "\n```")
	if !ok || !ok2 {
		t.Fatal("docs/early-hints.md: no php block")
	}
	return code
}

// writeApp writes app into dir.
func writeApp(t *testing.T, dir string) {
	t.Helper()
	for name, src := range app {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "hints.php"), []byte(hintsPage(t)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fronts is the app served twice by one caddy: through Caddy's own
// php_fastcgi and through php_fcgikit, each with its own PHP-FPM pool (a
// kept connection pins a worker: a shared pool would let one front starve
// the other), from the same document root.
type fronts struct {
	stock, fcgikit string // base URLs
	root           string
}

func startFronts(t *testing.T, fcgikitOptions string) *fronts {
	t.Helper()
	stockFPM := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 4})
	fkFPM := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 4})
	root := stockFPM.Root()
	writeApp(t, root)
	p1, p2 := peer.FreePort(t), peer.FreePort(t)
	sites := fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	root * %s
	php_fastcgi %s
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	root * %s
	php_fcgikit %s {
		max_conns 4
		%s
	}
}
`, p1, root, socket(stockFPM.Addr()), p2, root, socket(fkFPM.Addr()), fcgikitOptions)
	startCaddy(t, sites, p1, p2)
	return &fronts{
		stock:   fmt.Sprintf("http://127.0.0.1:%d", p1),
		fcgikit: fmt.Sprintf("http://127.0.0.1:%d", p2),
		root:    root,
	}
}

func get(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// serverVars returns PHP's $_SERVER for a GET of base+path with header.
func serverVars(t *testing.T, base, path string, header http.Header) map[string]string {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	code, _, body := get(t, req)
	if code != 200 {
		t.Fatalf("GET %s%s: %d %s", base, path, code, body)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatalf("GET %s%s: %v in %q", base, path, err, body)
	}
	port := base[strings.LastIndexByte(base, ':')+1:]
	vars := make(map[string]string)
	for k, v := range raw {
		switch k {
		case "REQUEST_TIME", "REQUEST_TIME_FLOAT", "REMOTE_PORT":
			continue // differ between any two requests
		}
		vars[k] = strings.ReplaceAll(fmt.Sprint(v), port, "PORT")
	}
	return vars
}

// TestServerVarsLikePHPFastCGI: $_SERVER through php_fcgikit is what it is
// through Caddy's php_fastcgi, variable for variable, but for the
// deliberate differences listed here (and in the README):
//
//   - HTTP_COOKIE joins several Cookie fields with "; ", not ", ";
//   - a request without a body has CONTENT_LENGTH "" and no
//     HTTP_CONTENT_LENGTH, as behind nginx, where php_fastcgi's request
//     buffering sets both to "0";
//   - a body sent without Content-Length gets CONTENT_LENGTH, its length
//     (TestChunkedUpload), where php_fastcgi answers 411;
//   - FCGI_EARLY_HINTS is 1: a 103 block reaches the client (TestEarlyHints).
func TestServerVarsLikePHPFastCGI(t *testing.T) {
	f := startFronts(t, "")
	header := http.Header{
		"X-Multi":   {"a", "b"},
		"Cookie":    {"a=1", "b=2"},
		"X_Spoofed": {"u"},
		"Proxy":     {"http://evil"},
		"Accept":    {"text/html"},
	}
	for _, path := range []string{"/env.php", "/env.php/extra/path?x=1&y=%20z", "/sub/../env.php?q"} {
		stock := serverVars(t, f.stock, path, header)
		fk := serverVars(t, f.fcgikit, path, header)

		// The deliberate differences, checked, then set aside.
		if got, want := stock["HTTP_COOKIE"], "a=1, b=2"; got != want {
			t.Errorf("%s: php_fastcgi HTTP_COOKIE = %q, want %q", path, got, want)
		}
		if got, want := fk["HTTP_COOKIE"], "a=1; b=2"; got != want {
			t.Errorf("%s: php_fcgikit HTTP_COOKIE = %q, want %q", path, got, want)
		}
		if stock["CONTENT_LENGTH"] != "0" || stock["HTTP_CONTENT_LENGTH"] != "0" {
			t.Errorf("%s: php_fastcgi CONTENT_LENGTH %q HTTP_CONTENT_LENGTH %q, want 0 and 0",
				path, stock["CONTENT_LENGTH"], stock["HTTP_CONTENT_LENGTH"])
		}
		if cl, ok := fk["HTTP_CONTENT_LENGTH"]; fk["CONTENT_LENGTH"] != "" || ok {
			t.Errorf("%s: php_fcgikit CONTENT_LENGTH %q HTTP_CONTENT_LENGTH %q, want \"\" and none",
				path, fk["CONTENT_LENGTH"], cl)
		}
		if _, ok := stock[fcgi.EarlyHintsParam]; ok || fk[fcgi.EarlyHintsParam] != "1" {
			t.Errorf("%s: %s php_fastcgi %q php_fcgikit %q, want none and 1",
				path, fcgi.EarlyHintsParam, stock[fcgi.EarlyHintsParam], fk[fcgi.EarlyHintsParam])
		}
		for _, m := range []map[string]string{stock, fk} {
			delete(m, fcgi.EarlyHintsParam)
			delete(m, "HTTP_COOKIE")
			delete(m, "CONTENT_LENGTH")
			delete(m, "HTTP_CONTENT_LENGTH")
		}

		for _, k := range slices.Sorted(maps.Keys(stock)) {
			if v, ok := fk[k]; !ok {
				t.Errorf("%s: php_fcgikit lacks %s (php_fastcgi: %q)", path, k, stock[k])
			} else if v != stock[k] {
				t.Errorf("%s: %s = %q, php_fastcgi %q", path, k, v, stock[k])
			}
		}
		for _, k := range slices.Sorted(maps.Keys(fk)) {
			if _, ok := stock[k]; !ok {
				t.Errorf("%s: php_fcgikit adds %s = %q", path, k, fk[k])
			}
		}
		// A few values spelled out, so that two identical mistakes fail.
		if fk["HTTP_X_MULTI"] != "a, b" || fk["SCRIPT_FILENAME"] != filepath.Join(f.root, "env.php") ||
			fk["GATEWAY_INTERFACE"] != "CGI/1.1" || fk["HTTP_PROXY"] != "" || fk["HTTP_X_SPOOFED"] != "" {
			t.Errorf("%s: php_fcgikit HTTP_X_MULTI %q SCRIPT_FILENAME %q GATEWAY_INTERFACE %q HTTP_PROXY %q HTTP_X_SPOOFED %q",
				path, fk["HTTP_X_MULTI"], fk["SCRIPT_FILENAME"], fk["GATEWAY_INTERFACE"], fk["HTTP_PROXY"], fk["HTTP_X_SPOOFED"])
		}
	}
}

// TestEarlyHints: through php_fcgikit the PHP page of docs/early-hints.md
// sends its 103, which Caddy passes on with its Link, then the page; through
// php_fastcgi, which does not announce the convention, the same page sends
// none and arrives whole.
func TestEarlyHints(t *testing.T) {
	f := startFronts(t, "")
	const link = "</s.css>; rel=preload; as=style"
	const page = "<!doctype html><link rel=stylesheet href=/s.css>"
	for _, tc := range []struct {
		base  string
		hints []int
	}{{f.fcgikit, []int{http.StatusEarlyHints}}, {f.stock, nil}} {
		var mu sync.Mutex
		var codes []int
		var links []string
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				mu.Lock()
				defer mu.Unlock()
				codes, links = append(codes, code), append(links, h.Get("Link"))
				return nil
			},
		})
		req, _ := http.NewRequestWithContext(ctx, "GET", tc.base+"/hints.php", nil)
		code, hdr, body := get(t, req)
		mu.Lock()
		if !slices.Equal(codes, tc.hints) || (len(codes) > 0 && links[0] != link) {
			t.Errorf("%s: 1xx %v Link %q, want %v with %q", tc.base, codes, links, tc.hints, link)
		}
		mu.Unlock()
		if code != 200 || body != page || hdr.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("%s: %d %v %q", tc.base, code, hdr, body)
		}
	}
}

// TestRouting: php_fcgikit routes as php_fastcgi does: the canonical-path
// redirect of a directory with an index.php, try_files {path}
// {path}/index.php index.php, PATH_INFO split at .php, and a front
// controller for paths that name no file.
func TestRouting(t *testing.T) {
	f := startFronts(t, "")
	cases := []struct {
		path, want string
		code       int
	}{
		{"/", "index /index.php / []", 200},
		{"/no/such/page?a=b", "index /index.php /no/such/page?a=b []", 200},
		{"/info.php/extra/x", "info /info.php [/extra/x]", 200},
		{"/INFO.PHP", "", 0}, // whatever php_fastcgi does
		{"/sub", "", 308},
		{"/sub/", "sub index /sub/index.php", 200},
		{"/sub/?x=1", "sub index /sub/index.php", 200},
	}
	for _, c := range cases {
		var got [2]string
		var codes [2]int
		var locs [2]string
		for i, base := range []string{f.stock, f.fcgikit} {
			req, _ := http.NewRequest("GET", base+c.path, nil)
			code, h, body := get(t, req)
			got[i], codes[i], locs[i] = body, code, h.Get("Location")
		}
		if got[0] != got[1] || codes[0] != codes[1] || locs[0] != locs[1] {
			t.Errorf("%s: php_fcgikit %d %q Location %q, php_fastcgi %d %q Location %q",
				c.path, codes[1], got[1], locs[1], codes[0], got[0], locs[0])
		}
		if c.code != 0 && codes[1] != c.code {
			t.Errorf("%s: status %d, want %d", c.path, codes[1], c.code)
		}
		if c.want != "" && got[1] != c.want {
			t.Errorf("%s: body %q, want %q", c.path, got[1], c.want)
		}
	}
}

// TestForms: an urlencoded form and a multipart upload reach PHP's $_POST
// and $_FILES whole, as through php_fastcgi.
func TestForms(t *testing.T) {
	f := startFronts(t, "")
	upload := make([]byte, 300<<10)
	rand.Read(upload)
	sum := md5.Sum(upload)

	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	w.WriteField("title", "a photo")
	fw, _ := w.CreateFormFile("photo", "p.bin")
	fw.Write(upload)
	w.Close()

	type result struct {
		Get   map[string]string `json:"get"`
		Post  map[string]string `json:"post"`
		Files map[string]struct {
			Name  string `json:"name"`
			Size  int    `json:"size"`
			Error int    `json:"error"`
			MD5   string `json:"md5"`
		} `json:"files"`
	}
	for _, base := range []string{f.stock, f.fcgikit} {
		form := url.Values{"name": {"Zoë & co"}, "n": {"1"}}.Encode()
		req, _ := http.NewRequest("POST", base+"/form.php?q=z", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		code, _, body := get(t, req)
		var r result
		if err := json.Unmarshal([]byte(body), &r); code != 200 || err != nil {
			t.Fatalf("%s form: %d %v %q", base, code, err, body)
		}
		if r.Post["name"] != "Zoë & co" || r.Post["n"] != "1" || r.Get["q"] != "z" {
			t.Errorf("%s form: %+v", base, r)
		}

		req, _ = http.NewRequest("POST", base+"/form.php", bytes.NewReader(mp.Bytes()))
		req.Header.Set("Content-Type", w.FormDataContentType())
		code, _, body = get(t, req)
		r = result{}
		if err := json.Unmarshal([]byte(body), &r); code != 200 || err != nil {
			t.Fatalf("%s upload: %d %v %q", base, code, err, body)
		}
		p := r.Files["photo"]
		if r.Post["title"] != "a photo" || p.Name != "p.bin" || p.Size != len(upload) || p.Error != 0 || p.MD5 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s upload: %+v", base, r)
		}
	}
}

// TestFlushStreams: what PHP flush()es reaches the client before the
// script ends.
// TestWholeResponseOneWrite: a page that has arrived whole when its header
// is read gets its length, as behind the Gateway, where reverse_proxy would
// flush a body of unknown length after every write and send it chunked; a
// page larger than what is read ahead still arrives whole; a HEAD gets no
// made-up Content-Length of 0.
func TestWholeResponseOneWrite(t *testing.T) {
	f := startFronts(t, "")
	for _, tc := range []struct {
		method, path string
		length       int64 // -1: chunked
		body         int
	}{
		{"GET", "/hello.php", 5, 5},
		{"GET", "/big.php", -1, 16 * 8192},
		{"HEAD", "/hello.php", -1, 0},
	} {
		req, _ := http.NewRequest(tc.method, f.fcgikit+tc.path, nil)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(body) != tc.body {
			t.Errorf("%s %s: %d, %d bytes, %v", tc.method, tc.path, resp.StatusCode, len(body), err)
		}
		if resp.ContentLength != tc.length {
			t.Errorf("%s %s: Content-Length %d (Transfer-Encoding %q), want %d", tc.method, tc.path, resp.ContentLength, resp.TransferEncoding, tc.length)
		}
	}
}

func TestFlushStreams(t *testing.T) {
	f := startFronts(t, "")
	start := time.Now()
	resp, err := http.Get(f.fcgikit + "/stream.php")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	n, err := resp.Body.Read(buf)
	first := time.Since(start)
	if err != nil || string(buf[:n]) != "first\n" {
		t.Fatalf("first read: %q, %v", buf[:n], err)
	}
	if first > 600*time.Millisecond {
		t.Errorf("first line after %v: not streamed (the script sleeps 800ms after it)", first)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second\n" {
		t.Errorf("rest: %q, %v", rest, err)
	}
	if all := time.Since(start); all < 700*time.Millisecond {
		t.Errorf("whole response after %v: the script sleeps 800ms", all)
	}
}

// unsized hides a reader's length, so that net/http sends it chunked.
type unsized struct{ r io.Reader }

func (u unsized) Read(p []byte) (int, error) { return u.r.Read(p) }

// TestChunkedUpload: a chunked upload of several MiB, which Caddy's own
// transport answers 411, reaches PHP whole through php_fcgikit, with
// CONTENT_LENGTH set; and max_body bounds it.
func TestChunkedUpload(t *testing.T) {
	f := startFronts(t, "body_memory 256KiB\n\t\tmax_body 8MiB")
	body := make([]byte, 5<<20+123)
	rand.Read(body)
	req, _ := http.NewRequest("POST", f.stock+"/body.php", unsized{bytes.NewReader(body)})
	if code, _, _ := get(t, req); code != http.StatusLengthRequired {
		t.Errorf("php_fastcgi: status %d, want 411 (the limitation php_fcgikit lifts)", code)
	}

	for _, size := range []int{0, 100, 300 << 10, len(body)} {
		req, _ = http.NewRequest("POST", f.fcgikit+"/body.php", unsized{bytes.NewReader(body[:size])})
		code, _, got := get(t, req)
		s := md5.Sum(body[:size])
		want := fmt.Sprintf("%d %s %d", size, hex.EncodeToString(s[:]), size)
		if code != 200 || got != want {
			t.Errorf("php_fcgikit, %d bytes chunked: %d %q, want 200 %q", size, code, got, want)
		}
	}
	big := make([]byte, 9<<20)
	req, _ = http.NewRequest("POST", f.fcgikit+"/body.php", unsized{bytes.NewReader(big)})
	if code, _, got := get(t, req); code != http.StatusRequestEntityTooLarge {
		t.Errorf("php_fcgikit, 9 MiB chunked over max_body 8MiB: %d %q, want 413", code, got)
	}
}

// loadResult counts the answers of a load run.
type loadResult struct {
	mu     sync.Mutex
	codes  map[int]int
	errs   []error
	bodies map[string]int
}

// load sends n GETs of url from clients goroutines and counts the answers.
func load(url string, n, clients int) *loadResult {
	r := &loadResult{codes: map[int]int{}, bodies: map[string]int{}}
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next sync.WaitGroup
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range clients {
		next.Go(func() {
			for range jobs {
				resp, err := hc.Get(url)
				var b []byte
				if err == nil {
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				r.mu.Lock()
				if err != nil {
					r.errs = append(r.errs, err)
				} else {
					r.codes[resp.StatusCode]++
					r.bodies[string(b)]++
				}
				r.mu.Unlock()
			}
		})
	}
	next.Wait()
	return r
}

// TestRecycling: thousands of requests across PHP-FPM's pm.max_requests
// recycling, each worker replaced dozens of times, get no error: the
// transport learns after how many requests PHP-FPM closes a connection and
// retires it itself.
func TestRecycling(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2, MaxRequests: 25})
	writeApp(t, fpm.Root())
	port := peer.FreePort(t)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	root * %s
	php_fcgikit %s {
		max_conns 2
	}
}
`, port, fpm.Root(), socket(fpm.Addr())), port)

	const n = 3000
	r := load(fmt.Sprintf("http://127.0.0.1:%d/hello.php", port), n, 6)
	if len(r.errs) > 0 || r.codes[200] != n || r.bodies["hello"] != n {
		t.Errorf("%d requests across pm.max_requests=25: statuses %v, bodies %d \"hello\", errors %d %v",
			n, r.codes, r.bodies["hello"], len(r.errs), r.errs[:min(3, len(r.errs))])
	}
}

// TestQueueAtMaxConns: with three times more concurrent clients than
// pm.max_children, and a listen backlog of 1 that refuses connections
// beyond it, every request waits for one of max_conns connections and
// succeeds; none is refused.
func TestQueueAtMaxConns(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2, Backlog: 1})
	writeApp(t, fpm.Root())
	port := peer.FreePort(t)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	root * %s
	php_fcgikit %s {
		max_conns 2
	}
}
`, port, fpm.Root(), socket(fpm.Addr())), port)

	const clients, n = 12, 24
	start := time.Now()
	r := load(fmt.Sprintf("http://127.0.0.1:%d/sleep.php", port), n, clients)
	took := time.Since(start)
	if len(r.errs) > 0 || r.codes[200] != n {
		t.Fatalf("%d clients, %d requests on 2 workers: statuses %v, errors %v", clients, n, r.codes, r.errs)
	}
	// 24 requests of 200ms on 2 workers take 2.4s at least: they queued.
	if took < 2*time.Second {
		t.Errorf("%d requests of 200ms on 2 workers took %v: not queued?", n, took)
	}
	if len(r.bodies) > 2 {
		t.Errorf("answered by %d PHP-FPM workers, want at most 2: %v", len(r.bodies), r.bodies)
	}
}

// TestActiveHealthCheck: Caddy's active health check, which goes through
// the transport, marks a stopped PHP-FPM down (Caddy then answers 503, no
// upstream available) and a restarted one up again.
func TestActiveHealthCheck(t *testing.T) {
	dir := peer.TempDir(t)
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{Dir: dir, MaxChildren: 2})
	writeApp(t, fpm.Root())
	port := peer.FreePort(t)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	root * %s
	php_fcgikit %s {
		root %s
		max_conns 2
		health_uri /hello.php
		health_interval 100ms
		health_timeout 1s
		health_body hello
	}
}
`, port, fpm.Root(), socket(fpm.Addr()), fpm.Root()), port)
	url := fmt.Sprintf("http://127.0.0.1:%d/hello.php", port)

	waitStatus := func(want int, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var last string
		for time.Now().Before(deadline) {
			resp, err := noRedirect.Get(url)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == want {
					return
				}
				last = strconv.Itoa(resp.StatusCode) + " " + string(b)
			} else {
				last = err.Error()
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s: no %d within 10s; last answer %s", what, want, last)
	}

	waitStatus(200, "PHP-FPM running")
	fpm.Stop()
	waitStatus(http.StatusServiceUnavailable, "PHP-FPM stopped")
	peer.StartPHPFPM(t, peer.PHPFPMConfig{Dir: dir, MaxChildren: 2})
	waitStatus(200, "PHP-FPM restarted")
}

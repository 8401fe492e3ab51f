package fcgi_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// frontController is a PHP app routing on PATH_INFO (or REQUEST_URI) the
// way framework front controllers do.
const frontController = `<?php
if (isset($_GET['dump'])) {
	header('Content-Type: application/json');
	echo json_encode($_SERVER);
	exit;
}
while (ob_get_level()) { ob_end_flush(); }
$path = ($_SERVER['PATH_INFO'] ?? '') ?: parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
switch ($path) {
case '/server':
	header('Content-Type: application/json');
	echo json_encode($_SERVER);
	break;
case '/post':
	$files = [];
	foreach ($_FILES as $k => $f) {
		$files[$k] = ['name' => $f['name'], 'size' => $f['size'], 'md5' => md5_file($f['tmp_name']), 'error' => $f['error']];
	}
	echo json_encode(['post' => $_POST, 'files' => $files]);
	break;
case '/raw':
	$b = file_get_contents('php://input');
	echo strlen($b), ' ', md5($b);
	break;
case '/raw-then-hang':
	file_get_contents('php://input');
	sleep(5);
	echo 'too late';
	break;
case '/stream':
	for ($i = 0; $i < 3; $i++) { echo "tick $i\n"; flush(); usleep(150000); }
	break;
case '/log':
	error_log('hello from php');
	echo 'logged';
	break;
case '/missing':
	http_response_code(404);
	echo 'nope';
	break;
case '/redirect':
	header('Location: https://example.com/next');
	break;
case '/slow':
	usleep(50000);
	echo 'slow ', getmypid();
	break;
default:
	echo 'front ', $path;
}
`

func startFPM(t *testing.T, cfg peer.PHPFPMConfig) *peer.PHPFPM {
	t.Helper()
	cfg.Pool += "php_admin_value[post_max_size] = 64M\nphp_admin_value[upload_max_filesize] = 64M\n"
	fpm := peer.StartPHPFPM(t, cfg)
	fpm.WriteFile("index.php", frontController)
	return fpm
}

// fpmRequest builds the parameters nginx would send for uri, routed to
// index.php with PATH_INFO.
func fpmRequest(fpm *peer.PHPFPM, method, uri string, body []byte, ctype string) *fcgi.Request {
	u, _ := url.Parse(uri)
	p := map[string]string{
		"REQUEST_METHOD":    method,
		"REQUEST_URI":       uri,
		"QUERY_STRING":      u.RawQuery,
		"SCRIPT_NAME":       "/index.php",
		"SCRIPT_FILENAME":   fpm.Root() + "/index.php",
		"PATH_INFO":         u.Path,
		"DOCUMENT_ROOT":     fpm.Root(),
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"GATEWAY_INTERFACE": "CGI/1.1",
		"REDIRECT_STATUS":   "200",
		"HTTP_HOST":         "example.test",
	}
	req := &fcgi.Request{Params: p}
	if body != nil {
		p["CONTENT_LENGTH"] = strconv.Itoa(len(body))
		p["CONTENT_TYPE"] = ctype
		req.Body = bytes.NewReader(body)
		req.GetBody = func() (io.Reader, error) { return bytes.NewReader(body), nil }
	}
	return req
}

func TestClientPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	c := newClient(fpm.Addr())
	c.MaxConnsPerBackend = 2
	defer c.Close()

	t.Run("front controller", func(t *testing.T) {
		resp, body := doString(t, c, fpmRequest(fpm, "GET", "/blog/post/7?x=1", nil, ""))
		if resp.StatusCode != 200 || body != "front /blog/post/7" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("header %v", resp.Header)
		}
	})
	t.Run("server vars", func(t *testing.T) {
		_, body := doString(t, c, fpmRequest(fpm, "GET", "/server?a=b", nil, ""))
		var server map[string]any
		if err := json.Unmarshal([]byte(body), &server); err != nil {
			t.Fatal(err, body)
		}
		if server["QUERY_STRING"] != "a=b" || server["HTTP_HOST"] != "example.test" || server["PATH_INFO"] != "/server" {
			t.Fatalf("$_SERVER %v", server)
		}
	})
	t.Run("status and redirect", func(t *testing.T) {
		resp, body := doString(t, c, fpmRequest(fpm, "GET", "/missing", nil, ""))
		if resp.StatusCode != 404 || body != "nope" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		resp, _ = doString(t, c, fpmRequest(fpm, "GET", "/redirect", nil, ""))
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://example.com/next" {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		req := fpmRequest(fpm, "GET", "/x", nil, "")
		req.Params["SCRIPT_FILENAME"] = fpm.Root() + "/nothere.php"
		var stderr bytes.Buffer
		req.Stderr = &stderr
		resp, _ = doString(t, c, req)
		if resp.StatusCode != 404 || !strings.Contains(stderr.String(), "Primary script unknown") {
			t.Fatalf("%d, stderr %q", resp.StatusCode, stderr.String())
		}
	})
	t.Run("form", func(t *testing.T) {
		form := url.Values{"name": {"Zoë & co"}, "n": {"1"}}.Encode()
		_, body := doString(t, c, fpmRequest(fpm, "POST", "/post", []byte(form), "application/x-www-form-urlencoded"))
		var got struct{ Post map[string]string }
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.Post["name"] != "Zoë & co" || got.Post["n"] != "1" {
			t.Fatalf("%q %v", body, err)
		}
	})
	t.Run("multipart", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("title", "hello")
		file := bytes.Repeat([]byte("0123456789abcdef"), 100000) // 1.6 MB
		fw, _ := mw.CreateFormFile("upload", "data.bin")
		fw.Write(file)
		mw.Close()
		_, body := doString(t, c, fpmRequest(fpm, "POST", "/post", buf.Bytes(), mw.FormDataContentType()))
		var got struct {
			Post  map[string]string
			Files map[string]struct {
				Name  string
				Size  int
				MD5   string
				Error int
			}
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err, body)
		}
		f := got.Files["upload"]
		sum := md5.Sum(file)
		if got.Post["title"] != "hello" || f.Name != "data.bin" || f.Size != len(file) || f.MD5 != hex.EncodeToString(sum[:]) {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("10MiB body", func(t *testing.T) {
		data := make([]byte, 10<<20)
		for i := range data {
			data[i] = byte(i * 7)
		}
		sum := md5.Sum(data)
		_, body := doString(t, c, fpmRequest(fpm, "POST", "/raw", data, "application/octet-stream"))
		if want := fmt.Sprintf("%d %x", len(data), sum); body != want {
			t.Fatalf("%q, want %q", body, want)
		}
	})
	t.Run("flush streams", func(t *testing.T) {
		resp, err := c.Do(context.Background(), fpmRequest(fpm, "GET", "/stream", nil, ""))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var times []time.Duration
		start := time.Now()
		buf := make([]byte, 100)
		var all []byte
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				times = append(times, time.Since(start))
				all = append(all, buf[:n]...)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if string(all) != "tick 0\ntick 1\ntick 2\n" || len(times) < 3 || times[len(times)-1]-times[0] < 250*time.Millisecond {
			t.Fatalf("%q arrived at %v: not incremental", all, times)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 1, StderrToFastCGI: true})
		fpm.WriteFile("index.php", frontController)
		c := newClient(fpm.Addr())
		defer c.Close()
		var stderr bytes.Buffer
		req := fpmRequest(fpm, "GET", "/log", nil, "")
		req.Stderr = &stderr
		resp, body := doString(t, c, req)
		if body != "logged" || !strings.Contains(stderr.String(), "hello from php") {
			t.Fatalf("body %q stderr %q", body, stderr.String())
		}
		if st, ok := resp.AppStatus(); !ok || st != 0 {
			t.Fatalf("app status %d %v", st, ok)
		}
	})
}

// Thousands of requests while workers are recycled every few requests,
// with more concurrent callers than workers: no errors, and never more
// connections than workers.
func TestClientPHPFPMRecycling(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 3, MaxRequests: 20})
	c := newClient(fpm.Addr())
	c.MaxConnsPerBackend = 3
	defer c.Close()
	const total, workers = 2000, 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	next := make(chan int)
	go func() {
		for i := 0; i < total; i++ {
			next <- i
		}
		close(next)
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var req *fcgi.Request
				want := ""
				// POSTs are not idempotent and cannot be retried on EOF:
				// they start once the client has seen workers recycled
				// and retires connections before the backend does.
				if i >= 300 && i%3 == 0 {
					body := []byte("n=" + strconv.Itoa(i))
					req = fpmRequest(fpm, "POST", "/raw", body, "application/x-www-form-urlencoded")
					want = fmt.Sprintf("%d %x", len(body), md5.Sum(body))
				} else {
					req = fpmRequest(fpm, "GET", "/r/"+strconv.Itoa(i), nil, "")
					want = "front /r/" + strconv.Itoa(i)
				}
				resp, err := c.Do(context.Background(), req)
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && string(b) != want {
						err = fmt.Errorf("request %d: body %q, want %q", i, b, want)
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
}

// Without MaxConnsPerBackend, more concurrent requests than PHP-FPM
// workers: connections beyond the workers wait in PHP-FPM's accept queue,
// and kept idle connections must not pin the workers they need.
func TestClientPHPFPMOvercommit(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	c := newClient(fpm.Addr())
	c.ResponseHeaderTimeout = 5 * time.Second
	defer c.Close()
	start := time.Now()
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 12)
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.Do(context.Background(), fpmRequest(fpm, "GET", "/slow", nil, ""))
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	// 36 requests of 50 ms on 2 workers: about a second when nothing stalls.
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("took %v: requests stalled behind idle connections", d)
	}
}

// An upload slower than ResponseHeaderTimeout, which PHP reads to its end
// before the script answers: the wait for the header starts once the body
// is sent, so it succeeds; a script that reads the body and then hangs
// still gets the timeout.
func TestClientPHPFPMSlowUpload(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	c := newClient(fpm.Addr())
	c.MaxConnsPerBackend = 2
	const timeout = time.Second
	c.ResponseHeaderTimeout = timeout
	defer c.Close()
	upload := func(uri string) *fcgi.Request {
		req := fpmRequest(fpm, "POST", uri, []byte{}, "application/octet-stream")
		req.Params["CONTENT_LENGTH"] = "12288"
		req.Body, req.GetBody = &trickle{n: 12, gap: timeout / 8}, nil // 1.5 timeouts long
		return req
	}
	zeros := make([]byte, 12288)
	if _, body := doString(t, c, upload("/raw")); body != fmt.Sprintf("12288 %x", md5.Sum(zeros)) {
		t.Fatalf("slow upload: %q", body)
	}
	_, err := c.Do(context.Background(), upload("/raw-then-hang"))
	var te *fcgi.TimeoutError
	if !errors.As(err, &te) || te.Op != "response header" {
		t.Fatalf("script hanging after the upload: %v, want a response header timeout", err)
	}
}

package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// gatewayURL starts fcgi gateway with args and returns the URL it prints.
func gatewayURL(t *testing.T, args ...string) string {
	t.Helper()
	_, url := startGateway(t, args...)
	return url
}

// startGateway starts fcgi gateway with args and returns the process and
// the URL it prints.
func startGateway(t *testing.T, args ...string) (*os.Process, string) {
	t.Helper()
	cmd, out := startFcgi(t, append([]string{"gateway", "--listen", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`https?://127\.0\.0\.1:[0-9]+/`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if u := re.FindString(out.String()); u != "" {
			return cmd.Process, u
		}
		if time.Now().After(deadline) {
			t.Fatalf("no URL printed:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayDemo: with no --backend, the gateway serves the built-in demo
// application through fcgikit's server on a unix socket.
func TestGatewayDemo(t *testing.T) {
	url := gatewayURL(t)
	body, err := httpGet(url)
	if err != nil || !strings.Contains(body, "Hello from fcgikit") {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
	resp, err := http.Post(url+"echo", "text/plain", strings.NewReader("ping through the gateway"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 100)
	n, _ := resp.Body.Read(b)
	if string(b[:n]) != "ping through the gateway" {
		t.Errorf("POST /echo: %q", b[:n])
	}
	if _, err := httpGet(url + "status/418"); err == nil || err.(*statusError).code != 418 {
		t.Errorf("GET /status/418: %v", err)
	}
	// Every path reaches the application, one ending in .php too: the
	// demo's own mux answers it, not the gateway's router.
	if body, err := httpGet(url + "no/such.php"); err == nil || err.(*statusError).code != 404 || body != "404 page not found\n" {
		t.Errorf("GET /no/such.php: %v %q; want the demo's 404 page", err, body)
	}
}

// TestGatewayShutdown: on SIGTERM the gateway stops accepting but lets a
// request in flight finish, then exits 0 (startFcgi's cleanup checks).
func TestGatewayShutdown(t *testing.T) {
	proc, url := startGateway(t)
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		body, err := httpGet(url + "sleep?d=1s")
		done <- result{body, err}
	}()
	time.Sleep(300 * time.Millisecond)
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.body != "slept 1s\n" {
		t.Errorf("request in flight at SIGTERM: %v %q", r.err, r.body)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"), time.Second); err == nil {
		t.Errorf("still accepting after SIGTERM")
	}
	// Wait for the exit here: the cleanup's SIGTERM would be a second
	// signal, which kills.
	deadline := time.Now().Add(10 * time.Second)
	for proc.Signal(syscall.Signal(0)) == nil {
		if time.Now().After(deadline) {
			t.Fatal("still running 10 s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayTLS: with --tls-cert and --tls-key the gateway serves HTTPS,
// and the application sees REQUEST_SCHEME=https.
func TestGatewayTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeCert(t, cert, key)
	gw, url := startGateway(t, "--tls-cert", cert, "--tls-key", key)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("URL %q: want https", url)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url + "env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "REQUEST_SCHEME=https\n") {
		t.Errorf("GET /env over TLS: %d\n%s", resp.StatusCode, body)
	}

	// A renewed certificate is served after SIGHUP, without a restart;
	// files that do not load leave the one in use.
	os.WriteFile(cert, []byte("not a certificate"), 0o600)
	gw.Signal(syscall.SIGHUP)
	time.Sleep(100 * time.Millisecond)
	if _, err := fetchTLS(url, pool); err != nil {
		t.Fatalf("after a failed reload: %v", err)
	}
	pool2 := writeCert(t, cert, key)
	gw.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errNew := fetchTLS(url, pool2)
		_, errOld := fetchTLS(url, pool)
		if errNew == nil && errOld != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP: new certificate %v, old certificate %v", errNew, errOld)
		}
		time.Sleep(50 * time.Millisecond)
	}

	res := runFcgi(t, nil, "gateway", "--tls-cert", cert)
	if res.code != exitUsage {
		t.Errorf("--tls-cert without --tls-key: exit %d, want 2", res.code)
	}
}

// fetchTLS gets url on a new connection that trusts only pool.
func fetchTLS(url string, pool *x509.CertPool) (string, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: tr}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files, and returns a pool that trusts it.
func writeCert(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return pool
}

// TestGatewayPHPFPM: a PHP front controller behind the gateway; static
// files are served directly; a script gets its PATH_INFO; with
// --max-conns 1 concurrent requests share one connection in turn.
func TestGatewayPHPFPM(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("index.php", `<?php echo "front ", $_SERVER["REQUEST_URI"], " ", $_SERVER["SCRIPT_NAME"];`)
	fpm.WriteFile("info.php", `<?php usleep(100000); echo $_SERVER["SCRIPT_NAME"], " ", $_SERVER["PATH_INFO"];`)
	fpm.WriteFile("style.css", "body{}")
	url := gatewayURL(t, "--backend", fpm.Addr(), "--root", fpm.Root(), "--front-controller", "/index.php")
	body, err := httpGet(url + "articles/7?x=1")
	if err != nil || body != "front /articles/7?x=1 /index.php" {
		t.Errorf("front controller: %v %q", err, body)
	}
	body, err = httpGet(url + "style.css")
	if err != nil || body != "body{}" {
		t.Errorf("static file: %v %q", err, body)
	}

	url = gatewayURL(t, "--backend", fpm.Addr(), "--root", fpm.Root(), "--front-controller", "/index.php",
		"--static=false", "--max-conns", "1")
	body, err = httpGet(url + "style.css")
	if err != nil || body != "front /style.css /index.php" {
		t.Errorf("--static=false: %v %q; want the front controller", err, body)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			body, err := httpGet(url + "info.php/a/b")
			if err != nil || body != "/info.php /a/b" {
				t.Errorf("GET /info.php/a/b: %v %q", err, body)
			}
		})
	}
	wg.Wait()
}

// TestGatewayFilter: with --filter each file under --root goes to the
// application in the Filter role, here fcgikit's server upper-casing it.
func TestGatewayFilter(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "page.md"), []byte("# hello"), 0o644)
	sock := filepath.Join(t.TempDir(), "filter.sock")
	l, err := fcgi.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &fcgi.Server{Filter: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := fcgi.FilterDataOf(r)
		b, err := io.ReadAll(d)
		fmt.Fprintf(w, "%s %d %v", bytes.ToUpper(b), d.Length, err)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	_, url := startGateway(t, "--backend", "unix:"+sock, "--root", root, "--filter")
	if body, err := httpGet(url + "page.md"); err != nil || body != "# HELLO 7 <nil>" {
		t.Fatalf("GET /page.md: %q %v", body, err)
	}
	if _, err := httpGet(url + "missing.md"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("GET /missing.md: %v, want 404", err)
	}
	if res := runFcgi(t, nil, "gateway", "--filter"); res.code != exitUsage {
		t.Fatalf("--filter without --backend and --root: exit %d, want 2", res.code)
	}
}

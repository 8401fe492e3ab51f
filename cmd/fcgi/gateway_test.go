package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

// gatewayURL starts fcgi gateway with args and returns the URL it prints.
func gatewayURL(t *testing.T, args ...string) string {
	t.Helper()
	_, out := startFcgi(t, append([]string{"gateway", "--listen", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+/`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if u := re.FindString(out.String()); u != "" {
			return u
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
}

// TestGatewayPHPFPM: a PHP front controller behind the gateway; static
// files are served directly.
func TestGatewayPHPFPM(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("index.php", `<?php echo "front ", $_SERVER["REQUEST_URI"], " ", $_SERVER["SCRIPT_NAME"];`)
	fpm.WriteFile("style.css", "body{}")
	url := gatewayURL(t, "--backend", fpm.Addr(), "--root", fpm.Root(), "--index", "/index.php")
	body, err := httpGet(url + "articles/7?x=1")
	if err != nil || body != "front /articles/7?x=1 /index.php" {
		t.Errorf("front controller: %v %q", err, body)
	}
	body, err = httpGet(url + "style.css")
	if err != nil || body != "body{}" {
		t.Errorf("static file: %v %q", err, body)
	}
}

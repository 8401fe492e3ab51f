package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/peer"
)

// TestGatewaySendfileFlags: with --sendfile the gateway serves the file a
// PHP script names with X-Accel-Redirect (a Range of it), tells the script
// X-Sendfile-Type and X-Accel-Mapping, and refuses a path outside the
// location; --sendfile-header X-Sendfile turns X-Accel-Redirect off.
func TestGatewaySendfileFlags(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	fpm.WriteFile("dl.php", `<?php
header('Content-Disposition: attachment; filename="a.txt"');
header('X-Seen: ' . $_SERVER['HTTP_X_SENDFILE_TYPE'] . ' ' . ($_SERVER['HTTP_X_ACCEL_MAPPING'] ?? '-'));
header('X-Accel-Redirect: ' . $_GET['p']);
echo "app body";`)
	private := filepath.Join(peer.TempDir(t), "private")
	if err := os.MkdirAll(private, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(private, "a.txt"), []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := gatewayURL(t, "--backend", fpm.Addr(), "--root", fpm.Root(), "--sendfile", "/protected/="+private)

	req, _ := http.NewRequest("GET", url+"dl.php?p=/protected/a.txt", nil)
	req.Header.Set("Range", "bytes=2-4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || string(b) != "234" || resp.Header.Get("Content-Disposition") != `attachment; filename="a.txt"` || resp.Header.Get("X-Accel-Redirect") != "" {
		t.Errorf("X-Accel-Redirect with Range: %d %q %v", resp.StatusCode, b, resp.Header)
	}
	if resp.Header.Get("X-Seen") != "" {
		t.Errorf("an application field nginx drops was kept: X-Seen %q", resp.Header.Get("X-Seen"))
	}
	resp, err = http.Get(url + "dl.php?p=/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("outside the location: %d, want 404", resp.StatusCode)
	}

	// X-Accel-Redirect not honoured: the application's answer goes out
	// as it is, and X-Sendfile-Type says X-Sendfile.
	url = gatewayURL(t, "--backend", fpm.Addr(), "--root", fpm.Root(), "--sendfile", "/protected/="+private, "--sendfile-header", "X-Sendfile")
	resp, err = http.Get(url + "dl.php?p=/protected/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "app body" || resp.Header.Get("X-Seen") != "X-Sendfile -" {
		t.Errorf("--sendfile-header X-Sendfile: %q, X-Seen %q", b, resp.Header.Get("X-Seen"))
	}
}

// TestGatewayErrorPageFlag: --error-page answers the gateway's own 502 with
// the file, status kept; bad values are refused at start.
func TestGatewayErrorPageFlag(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "502.html")
	if err := os.WriteFile(page, []byte("<h1>back soon</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := gatewayURL(t, "--backend", "unix:"+filepath.Join(dir, "none.sock"), "--error-page", "502="+page)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || string(b) != "<h1>back soon</h1>" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("502 page: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	for _, args := range [][]string{
		{"--error-page", "200=" + page},
		{"--error-page", "502=" + filepath.Join(dir, "missing.html")},
		{"--sendfile", "protected=" + dir},
		{"--sendfile", "/protected/=" + page},
		{"--sendfile", "/p/=" + dir, "--sendfile-header", "X-Lighttpd-Send-File"},
	} {
		res := runRefused(t, append([]string{"gateway", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"}, args...)...)
		if res.code != exitUsage || !strings.Contains(res.stderr, args[0]) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming the flag", args, res.code, res.stderr)
		}
	}
}

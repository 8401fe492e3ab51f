package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

// opcacheFigures runs fcgi opcache status --json and returns the number
// of cached scripts and of manual restarts.
func opcacheFigures(t *testing.T, addr, dir string) (scripts, manual float64) {
	t.Helper()
	res := runFcgi(t, nil, "opcache", "status", "--json", "--backend", addr, "--dir", dir)
	if res.code != 0 {
		t.Fatalf("fcgi opcache status: exit %d", res.code)
	}
	var out struct {
		Status struct {
			Stats struct {
				Scripts float64 `json:"num_cached_scripts"`
				Manual  float64 `json:"manual_restarts"`
			} `json:"opcache_statistics"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatal(err)
	}
	return out.Status.Stats.Scripts, out.Status.Stats.Manual
}

// TestOpcache: against PHP-FPM with OPcache enabled, the cached-scripts
// count of fcgi opcache status and of fcgi exporter --opcache rises by
// the pages served; the script that reads it stays one entry however
// often it runs and is removed after each run; fcgi opcache reset
// empties the cache.
func TestOpcache(t *testing.T) {
	// OPcache leaves alone a file changed in the last
	// opcache.file_update_protection seconds (2): the pages are new.
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2,
		Pool: "php_admin_value[opcache.enable] = 1\nphp_admin_value[opcache.file_update_protection] = 0\n"})
	dir := t.TempDir()
	n0, _ := opcacheFigures(t, fpm.Addr(), dir)
	for _, page := range []string{"a", "b", "c", "d", "e"} {
		fpm.WriteFile(page+".php", "<?php echo '"+page+"';")
		if res := runFcgi(t, nil, "call", "--root", fpm.Root(), fpm.Addr(), "/"+page+".php"); res.code != 0 || res.stdout != page {
			t.Fatalf("%s.php: exit %d, %q", page, res.code, res.stdout)
		}
	}
	n1, _ := opcacheFigures(t, fpm.Addr(), dir)
	if n1 < n0+5 {
		t.Errorf("cached scripts %v after 5 pages, %v before", n1, n0)
	}
	text := runFcgi(t, nil, "opcache", "status", "--backend", fpm.Addr(), "--dir", dir)
	if text.code != 0 || !strings.Contains(text.stdout, "cached scripts:") || !strings.Contains(text.stdout, "enabled:                 true") {
		t.Errorf("fcgi opcache status: exit %d\n%s", text.code, text.stdout)
	}

	url, _ := startExporter(t, "--backend", fpm.Addr(), "--opcache", "--opcache-dir", dir)
	var body string
	for range 3 {
		body, _ = scrape(t, url)
		samples := parseExposition(t, body)
		if v := one(t, samples, "phpfpm_opcache_up", map[string]string{"pool": "www"}); v != 1 {
			t.Fatalf("phpfpm_opcache_up %v", v)
		}
		// The exporter's script is one more entry, the same at every
		// scrape.
		if v := one(t, samples, "phpfpm_opcache_cached_scripts", map[string]string{"pool": "www"}); v != n1+1 {
			t.Errorf("phpfpm_opcache_cached_scripts %v, want %v: fcgi opcache status's %v and the exporter's script", v, n1+1, n1)
		}
	}
	checkExposition(t, body)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("files left in --opcache-dir: %v", left)
	}

	if res := runFcgi(t, nil, "opcache", "reset", "--backend", fpm.Addr(), "--dir", dir); res.code != 0 || !strings.Contains(res.stdout, "OPcache reset") {
		t.Fatalf("fcgi opcache reset: exit %d", res.code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// After the restart only the reading script itself is cached.
		n, manual := opcacheFigures(t, fpm.Addr(), dir)
		if n <= 1 && manual >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after fcgi opcache reset: %v cached scripts, %v manual restarts", n, manual)
		}
		time.Sleep(200 * time.Millisecond)
	}
	samples := parseExposition(t, func() string { b, _ := scrape(t, url); return b }())
	if v := one(t, samples, "phpfpm_opcache_restarts_total", map[string]string{"pool": "www", "reason": "manual"}); v < 1 {
		t.Errorf("phpfpm_opcache_restarts_total{reason=manual} %v", v)
	}
	if v := one(t, samples, "phpfpm_opcache_cached_scripts", map[string]string{"pool": "www"}); v > 2 {
		t.Errorf("phpfpm_opcache_cached_scripts %v after the reset; want at most the two scripts that read it", v)
	}
}

// TestOpcacheUnreadable: a pool that cannot read the script, here for
// its open_basedir, gives exit status 1 and a message that says where
// the file must be; the exporter reports phpfpm_opcache_up 0 and keeps
// the pool's other figures. No pool is exit status 3, no --backend 2.
func TestOpcacheUnreadable(t *testing.T) {
	pdir := peer.TempDir(t)
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{Dir: pdir, MaxChildren: 2,
		Pool: "php_admin_value[open_basedir] = " + filepath.Join(pdir, "www") + "\n"})
	dir := t.TempDir()
	res := runFcgi(t, nil, "opcache", "status", "--backend", fpm.Addr(), "--dir", dir)
	if res.code != 1 || !strings.Contains(res.stderr, "open_basedir") {
		t.Errorf("outside open_basedir: exit %d, want 1 and a word on open_basedir", res.code)
	}
	url, _ := startExporter(t, "--backend", fpm.Addr(), "--opcache", "--opcache-dir", dir)
	body, _ := scrape(t, url)
	samples := parseExposition(t, body)
	if one(t, samples, "phpfpm_up", nil) != 1 || one(t, samples, "phpfpm_opcache_up", nil) != 0 {
		t.Errorf("want phpfpm_up 1 and phpfpm_opcache_up 0:\n%s", body)
	}
	// Inside the document root, which open_basedir allows, it runs.
	if res := runFcgi(t, nil, "opcache", "status", "--backend", fpm.Addr(), "--dir", fpm.Root()); res.code != 0 {
		t.Errorf("inside open_basedir: exit %d", res.code)
	}

	if res := runFcgi(t, nil, "opcache", "status", "--backend", "unix:"+filepath.Join(dir, "none.sock"), "--dir", dir); res.code != 3 {
		t.Errorf("no pool: exit %d, want 3", res.code)
	}
	if res := runFcgi(t, nil, "opcache", "status"); res.code != 2 {
		t.Errorf("no --backend: exit %d, want 2", res.code)
	}
	if res := runFcgi(t, nil, "opcache", "flush", "--backend", fpm.Addr()); res.code != 2 {
		t.Errorf("opcache flush: exit %d, want 2", res.code)
	}
}

// TestOpcacheDisabled: a pool with opcache.enable=0 is exit status 1 for
// status and reset, as the exit table says, with a message naming the
// setting, not exit 0 with "enabled: false" or an empty reason.
func TestOpcacheDisabled(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 1, Pool: "php_admin_value[opcache.enable] = 0\n"})
	dir := t.TempDir()
	for _, sub := range []string{"status", "reset"} {
		res := runFcgi(t, nil, "opcache", sub, "--backend", fpm.Addr(), "--dir", dir)
		if res.code != exitFail || !strings.Contains(res.stderr, "disabled in this pool (opcache.enable=0)") {
			t.Errorf("opcache %s: exit %d, stderr %q; want 1 and OPcache disabled, opcache.enable=0", sub, res.code, res.stderr)
		}
	}
}

package fcgicaddy_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/peer"
)

// adapt runs caddy adapt on a Caddyfile and returns the JSON config.
func adapt(t *testing.T, caddyfile string) (string, error) {
	t.Helper()
	dir := peer.TempDir(t)
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "adapt", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = caddyEnv(dir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", &adaptError{err, errb.String()}
	}
	// file_server hides the Caddyfile, by its path.
	return strings.ReplaceAll(out.String(), conf, "CADDYFILE"), nil
}

type adaptError struct {
	err    error
	stderr string
}

func (e *adaptError) Error() string { return e.err.Error() + ": " + e.stderr }

// phpSite is a site using every php_fastcgi sub-option, some of
// reverse_proxy's, a user matcher, and directives around it that php_fcgikit
// must be ordered among without an "order" line.
const phpSite = `{
	admin off
}
http://example.com {
	root * /srv/app/public
	encode
	file_server
	respond /health 200
	DIRECTIVE @app unix//run/php/a.sock unix//run/php/b.sock {
		root /srv/app/public
		split .php .phtml
		index app.php
		env APP_ENV prod
		env ROOT {http.vars.root}
		resolve_root_symlink
		dial_timeout 2s
		read_timeout 30s
		write_timeout 20s
		capture_stderr
		lb_policy round_robin
		health_uri /ping.php
		header_up X-Real-IP {remote_host}
	}
	@app not path /static/*
}
`

// TestPHPFcgikitExpandsAsPHPFastCGI: php_fcgikit adapts to exactly the
// routes php_fastcgi adapts to (redirect, try_files rewrite, reverse_proxy
// to *.php), with the fcgikit transport in place of fastcgi, and needs no
// order line; its own options go to the transport.
func TestPHPFcgikitExpandsAsPHPFastCGI(t *testing.T) {
	for _, variant := range []string{"", "\ttry_files {path} {path}/index.php app.php\n", "\tindex off\n"} {
		site := strings.Replace(phpSite, "\t\tlb_policy", "\t"+variant+"\t\tlb_policy", 1)
		stock, err := adapt(t, strings.Replace(site, "DIRECTIVE", "php_fastcgi", 1))
		if err != nil {
			t.Fatal(err)
		}
		fk, err := adapt(t, strings.Replace(site, "DIRECTIVE", "php_fcgikit", 1))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(stock, `"protocol":"fastcgi"`); n != 1 {
			t.Fatalf("php_fastcgi adapts with %d fastcgi transports, want 1:\n%s", n, stock)
		}
		want := strings.Replace(stock, `"protocol":"fastcgi"`, `"protocol":"fcgikit"`, 1)
		if fk != want {
			t.Errorf("variant %q: php_fcgikit adapts to\n%s\nwant (php_fastcgi's, transport renamed)\n%s", variant, fk, want)
		}
	}

	fk, err := adapt(t, `{
	admin off
}
http://example.com {
	php_fcgikit unix//run/php/a.sock {
		max_conns 8
		max_idle_conns 4
		keepalive_timeout 1m
		multiplex auto
		body_memory 512KiB
		max_total_memory 32MiB
		max_body 100MB
		temp_dir /var/tmp
		flush_interval -1
	}
}
`)
	if err != nil {
		t.Fatal(err)
	}
	tr := transportOf(t, fk)
	want := map[string]any{
		"protocol": "fcgikit", "max_conns": 8.0, "max_idle_conns": 4.0, "keepalive_timeout": 60e9,
		"multiplex": "auto", "body_memory": 512.0 * 1024, "max_total_memory": 32.0 * 1024 * 1024, "max_body": 100e6, "temp_dir": "/var/tmp",
		"split_path": []any{".php"},
	}
	for k, v := range want {
		if got, _ := json.Marshal(tr[k]); string(got) != mustJSON(v) {
			t.Errorf("transport %s = %s, want %s (transport %v)", k, got, mustJSON(v), tr)
		}
	}
	if !strings.Contains(fk, `"flush_interval":-1`) {
		t.Errorf("reverse_proxy's own flush_interval is lost:\n%s", fk)
	}

	for _, bad := range []string{"max_conns x", "multiplex sometimes", "max_body 0", "body_memory", "max_total_memory x", "no_such_option 1"} {
		_, err := adapt(t, "http://example.com {\n\treverse_proxy unix//a.sock {\n\t\ttransport fcgikit {\n\t\t\t"+bad+"\n\t\t}\n\t}\n}\n")
		if err == nil {
			t.Errorf("transport fcgikit { %s }: adapted, want an error", bad)
		}
	}
}

// TestTransportBlock: the transport as reverse_proxy's transport, with the
// subdirectives of Caddy's fastcgi transport and its own.
func TestTransportBlock(t *testing.T) {
	out, err := adapt(t, `http://example.com {
	reverse_proxy unix//run/php.sock {
		transport fcgikit {
			root /srv
			split .php
			env A b
			resolve_root_symlink
			dial_timeout 1s
			read_timeout 2s
			write_timeout 3s
			capture_stderr
			max_conns 5
			multiplex off
			max_body off
		}
	}
}
`)
	if err != nil {
		t.Fatal(err)
	}
	tr := transportOf(t, out)
	want := `{"capture_stderr":true,"dial_timeout":1000000000,"env":{"A":"b"},"max_body":-1,"max_conns":5,"multiplex":"off","protocol":"fcgikit","read_timeout":2000000000,"resolve_root_symlink":true,"root":"/srv","split_path":[".php"],"write_timeout":3000000000}`
	if got := mustJSON(tr); got != want {
		t.Errorf("transport:\n%s\nwant\n%s", got, want)
	}
}

// TestReadmeCaddyfiles: every caddyfile block of the repository's README
// adapts, and uses php_fcgikit or the fcgikit transport.
func TestReadmeCaddyfiles(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur *strings.Builder
	for line := range strings.SplitSeq(string(readme), "\n") {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```caddyfile":
			cur = new(strings.Builder)
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if len(blocks) == 0 {
		t.Fatal("README.md has no caddyfile block")
	}
	for i, b := range blocks {
		out, err := adapt(t, b)
		if err != nil {
			t.Errorf("README caddyfile block %d: %v\n%s", i+1, err, b)
			continue
		}
		if !strings.Contains(out, `"protocol":"fcgikit"`) {
			t.Errorf("README caddyfile block %d does not use the fcgikit transport:\n%s", i+1, b)
		}
	}
}

// transportOf returns the one fcgikit transport of an adapted config.
func transportOf(t *testing.T, config string) map[string]any {
	t.Helper()
	var found []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["protocol"] == "fcgikit" {
				found = append(found, v)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	var root any
	if err := json.Unmarshal([]byte(config), &root); err != nil {
		t.Fatal(err)
	}
	walk(root)
	if len(found) != 1 {
		t.Fatalf("%d fcgikit transports in\n%s", len(found), config)
	}
	return found[0]
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

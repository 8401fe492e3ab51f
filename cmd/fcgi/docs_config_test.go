package main

// The configuration blocks of docs/command.md that are not fcgi command
// lines (TestDocCommands checks those), run by the programs they configure.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/peer"
)

// TestDocPrometheusYAML: every Prometheus configuration of docs/command.md
// is one Prometheus takes. Scrape configurations pass `promtool check
// config` and alerting rules `promtool check rules`, and every metric and
// label the rules name is one the command exports, so that an alert copied
// from the docs can fire.
func TestDocPrometheusYAML(t *testing.T) {
	promtool := peer.Require(t, "promtool", "prometheus")
	src, err := os.ReadFile("../../docs/command.md")
	if err != nil {
		t.Fatal(err)
	}
	var exported strings.Builder
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			b, _ := os.ReadFile(f)
			exported.Write(b)
		}
	}
	dir := t.TempDir()
	var configs, rules int
	for i, part := range strings.Split(string(src), "```yaml\n")[1:] {
		block, _, _ := strings.Cut(part, "\n```")
		block += "\n"
		var kind string
		switch {
		case strings.HasPrefix(block, "scrape_configs:"):
			kind = "config"
			configs++
		case strings.HasPrefix(block, "groups:"):
			kind = "rules"
			rules++
			for _, m := range regexp.MustCompile(`\b((?:phpfpm|fcgikit)_[a-z_]+)\b`).FindAllStringSubmatch(block, -1) {
				// A name is written whole, or after its prefix's constant.
				short := strings.TrimPrefix(strings.TrimPrefix(m[1], "phpfpm_"), "fcgikit_")
				if !strings.Contains(exported.String(), `"`+m[1]) && !strings.Contains(exported.String(), `"`+short+`"`) {
					t.Errorf("docs/command.md's rules name %s, which the command does not export", m[1])
				}
			}
			for _, m := range regexp.MustCompile(`\$labels\.([a-z_]+)|\{([a-z_]+)=`).FindAllStringSubmatch(block, -1) {
				label := m[1] + m[2]
				if !strings.Contains(exported.String(), `"`+label+`"`) {
					t.Errorf("docs/command.md's rules use the label %s, which no metric of the command has", label)
				}
			}
		default:
			continue // Kubernetes manifests: their fcgi command lines are TestDocCommands'
		}
		file := filepath.Join(dir, kind+strings.Repeat("_", i)+".yml")
		if err := os.WriteFile(file, []byte(block), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(promtool, "check", kind, file).CombinedOutput()
		if err != nil {
			t.Errorf("promtool check %s of docs/command.md's block:\n%s\n%v\n%s", kind, block, err, out)
		}
	}
	if configs == 0 || rules == 0 {
		t.Fatalf("docs/command.md: %d scrape configurations and %d rule files found; the test no longer finds them", configs, rules)
	}
}

// TestDocStatusListenIni: the pool settings docs/command.md gives for a
// status listener work in PHP-FPM: with them, `fcgi status` reads the
// pool's status through the listener. The block's listen line is the
// test's own socket; its status listener a free port.
func TestDocStatusListenIni(t *testing.T) {
	src, err := os.ReadFile("../../docs/command.md")
	if err != nil {
		t.Fatal(err)
	}
	_, part, ok := strings.Cut(string(src), "```ini\n")
	if !ok {
		t.Fatal("docs/command.md has no ini block")
	}
	block, _, _ := strings.Cut(part, "\n```")
	port := peer.FreePort(t)
	var pool []string
	for _, line := range strings.Split(block, "\n") {
		switch {
		case strings.HasPrefix(line, "[") || strings.HasPrefix(line, "listen ="):
			// The section and the socket are the test pool's.
		case strings.HasPrefix(line, "pm.status_listen"):
			if !strings.Contains(line, "127.0.0.1:9001") {
				t.Fatalf("the status listener line changed: %q", line)
			}
			pool = append(pool, strings.Replace(line, "127.0.0.1:9001", "127.0.0.1:"+strconv.Itoa(port), 1))
		default:
			pool = append(pool, line)
		}
	}
	peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 1, Pool: strings.Join(pool, "\n")})
	// The master opens every listener before it starts the workers
	// StartPHPFPM waits for.
	addr := "127.0.0.1:" + strconv.Itoa(port)
	res := runFcgi(t, nil, "status", addr)
	if res.code != 0 || !strings.Contains(res.stdout, "pool:") {
		t.Fatalf("fcgi status through the docs' status listener: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

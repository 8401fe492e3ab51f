package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

// statusFields returns the names of a "name: value" listing, in order:
// PHP-FPM's plain status page, or fcgi status's text output.
func statusFields(t *testing.T, text string) (names []string, values map[string]string) {
	t.Helper()
	values = make(map[string]string)
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("line %q: no colon", line)
		}
		names = append(names, name)
		values[name] = strings.TrimSpace(value)
	}
	return names, values
}

// TestStatusText: fcgi status prints PHP-FPM's fields in the order
// PHP-FPM's own status page prints them, the start time as a time and
// the time since as a duration.
func TestStatusText(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	page := runFcgi(t, nil, "call", fpm.Addr(), "/status")
	if page.code != 0 {
		t.Fatalf("fcgi call /status: exit %d", page.code)
	}
	want, fpmValues := statusFields(t, page.stdout)
	if len(want) < 14 || want[0] != "pool" {
		t.Fatalf("PHP-FPM's status page lists %q", want)
	}
	fpmStart, err := time.Parse("02/Jan/2006:15:04:05 -0700", fpmValues["start time"])
	if err != nil {
		t.Fatalf("PHP-FPM's start time: %v", err)
	}

	before := time.Now()
	res := runFcgi(t, nil, "status", fpm.Addr())
	if res.code != 0 {
		t.Fatalf("exit %d", res.code)
	}
	got, values := statusFields(t, res.stdout)
	if !slices.Equal(got, want) {
		t.Errorf("fields\n got %q\nwant %q (PHP-FPM's order)", got, want)
	}
	if strings.Contains(res.stdout, "e+") {
		t.Errorf("a number in exponent notation:\n%s", res.stdout)
	}
	start, err := time.Parse(time.RFC3339, values["start time"])
	if err != nil {
		t.Errorf("start time: %v", err)
	} else if !start.Equal(fpmStart) || before.Sub(start) > time.Minute {
		t.Errorf("start time %v, want PHP-FPM's %v, shortly before %v", start, fpmStart, before)
	}
	since, err := time.ParseDuration(values["start since"])
	if err != nil || !strings.HasSuffix(values["start since"], "s") {
		t.Errorf("start since: %v", err)
	} else if since < 0 || since > time.Minute || since%time.Second != 0 {
		t.Errorf("start since %v, want whole seconds under a minute", since)
	}
	for _, name := range []string{"accepted conn", "idle processes", "max children reached"} {
		if !regexp.MustCompile(`^\d+$`).MatchString(values[name]) {
			t.Errorf("%s: %q, want an integer", name, values[name])
		}
	}
	if values["pool"] != "www" || values["process manager"] != "static" {
		t.Errorf("pool %q, process manager %q", values["pool"], values["process manager"])
	}
}

// omFamily is one metric family of an OpenMetrics exposition.
type omFamily struct {
	name, typ, unit string
	help            bool
	samples         []string // metric names of the samples
}

// parseOpenMetrics checks the structure OpenMetrics 1.0 requires that
// promtool's parser lets through (HELP before TYPE, families not split,
// sample names made of the family name and its type's suffix) and
// returns the families in order.
func parseOpenMetrics(t *testing.T, text string) []*omFamily {
	t.Helper()
	if !strings.HasSuffix(text, "\n# EOF\n") {
		t.Errorf("does not end with # EOF:\n%s", text)
	}
	var fams []*omFamily
	seen := map[string]bool{}
	var cur *omFamily
	meta := regexp.MustCompile(`^# (HELP|TYPE|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$`)
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? \S+$`)
	for line := range strings.Lines(strings.TrimSuffix(text, "# EOF\n")) {
		line = strings.TrimSuffix(line, "\n")
		if m := meta.FindStringSubmatch(line); m != nil {
			if cur == nil || cur.name != m[2] {
				if seen[m[2]] {
					t.Errorf("family %s split", m[2])
				}
				seen[m[2]] = true
				cur = &omFamily{name: m[2]}
				fams = append(fams, cur)
			}
			switch m[1] {
			case "HELP":
				if cur.typ != "" || cur.help {
					t.Errorf("%s: HELP after TYPE or twice", cur.name)
				}
				cur.help = true
			case "TYPE":
				cur.typ = m[3]
			case "UNIT":
				cur.unit = m[3]
			}
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil || cur == nil {
			t.Errorf("line %q: neither metadata nor a sample of the family above", line)
			continue
		}
		cur.samples = append(cur.samples, m[1])
	}
	for _, f := range fams {
		want := f.name
		switch f.typ {
		case "counter":
			want += "_total"
			if strings.HasSuffix(f.name, "_total") {
				t.Errorf("counter family %s: the name ends in _total, its samples must add it", f.name)
			}
		case "gauge":
		default:
			t.Errorf("%s: type %q, want counter or gauge", f.name, f.typ)
		}
		if !f.help {
			t.Errorf("%s: no HELP", f.name)
		}
		if f.unit != "" && !strings.HasSuffix(f.name, "_"+f.unit) {
			t.Errorf("%s: unit %s is not the name's suffix", f.name, f.unit)
		}
		if len(f.samples) == 0 {
			t.Errorf("%s: no sample", f.name)
		}
		for _, s := range f.samples {
			if s != want {
				t.Errorf("family %s (%s): sample %s, want %s", f.name, f.typ, s, want)
			}
		}
	}
	return fams
}

// promtool runs promtool with args and stdin and returns its output and
// exit status.
func promtool(t *testing.T, bin, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("promtool %s: %v", strings.Join(args, " "), err)
		return "", 0
	}
}

// TestStatusMetrics: --format openmetrics is OpenMetrics that
// Prometheus's own parser accepts (counters' samples end in _total, HELP
// before TYPE, gauges typed as gauges, # EOF at the end), and --format
// prometheus is the text format node_exporter's textfile collector reads,
// with no complaint from promtool check metrics.
func TestStatusMetrics(t *testing.T) {
	bin := peer.Require(t, "promtool", "prometheus")
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})

	res := runFcgi(t, nil, "status", "--format", "openmetrics", fpm.Addr())
	if res.code != 0 {
		t.Fatalf("openmetrics: exit %d", res.code)
	}
	fams := parseOpenMetrics(t, res.stdout)
	types := map[string]string{}
	for _, f := range fams {
		types[f.name] = f.typ
	}
	for name, typ := range map[string]string{
		"phpfpm_start_time_seconds":   "gauge",
		"phpfpm_accepted_connections": "counter",
		"phpfpm_listen_queue":         "gauge",
		"phpfpm_max_listen_queue":     "gauge",
		"phpfpm_idle_processes":       "gauge",
		"phpfpm_max_active_processes": "gauge",
		"phpfpm_max_children_reached": "counter",
		"phpfpm_slow_requests":        "counter",
	} {
		if types[name] != typ {
			t.Errorf("%s: type %q, want %s", name, types[name], typ)
		}
	}
	if !strings.Contains(res.stdout, `phpfpm_idle_processes{pool="www"} `) {
		t.Errorf("no pool label:\n%s", res.stdout)
	}
	// Prometheus's OpenMetrics parser, as promtool's backfill uses it;
	// the backfill takes only samples with timestamps, so each sample
	// gets one.
	var stamped strings.Builder
	ts := fmt.Sprint(time.Now().Unix())
	sc := bufio.NewScanner(strings.NewReader(res.stdout))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			line += " " + ts
		}
		stamped.WriteString(line + "\n")
	}
	dir := t.TempDir()
	om := filepath.Join(dir, "fpm.om")
	if err := os.WriteFile(om, []byte(stamped.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := promtool(t, bin, "", "tsdb", "create-blocks-from", "openmetrics", om, filepath.Join(dir, "blocks")); code != 0 {
		t.Errorf("promtool's OpenMetrics parser: exit %d\n%s", code, out)
	}

	res = runFcgi(t, nil, "status", "--format", "prometheus", fpm.Addr())
	if res.code != 0 {
		t.Fatalf("prometheus: exit %d", res.code)
	}
	if out, code := promtool(t, bin, res.stdout, "check", "metrics"); code != 0 || out != "" {
		t.Errorf("promtool check metrics: exit %d\n%s", code, out)
	}
	for _, s := range []string{
		"# TYPE phpfpm_accepted_connections_total counter\n",
		"# TYPE phpfpm_listen_queue gauge\n",
		"# TYPE phpfpm_start_time_seconds gauge\n",
	} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("no %q in\n%s", s, res.stdout)
		}
	}

	// The same checker refuses PHP-FPM's own ?openmetrics page, whose
	// counters lack _total.
	page := runFcgi(t, nil, "call", fpm.Addr(), "/status?openmetrics")
	if out, code := promtool(t, bin, page.stdout, "check", "metrics"); code == 0 || !strings.Contains(out, `should have "_total" suffix`) {
		t.Errorf("promtool check metrics passes PHP-FPM's page: exit %d\n%s", code, out)
	}
}

// TestStatusListenQueueTCP: on a TCP listener PHP-FPM counts its listen
// queue, and --max-listen-queue gives no warning.
func TestStatusListenQueueTCP(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{TCP: true, MaxChildren: 1})
	res := runFcgi(t, nil, "status", "--max-listen-queue", "10", fpm.Addr())
	if res.code != 0 || res.stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0 and nothing on stderr", res.code, res.stderr)
	}
}

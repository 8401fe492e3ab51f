package fcgicaddy_test

import (
	"bytes"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// xcaddyPrefix starts README.md's from-checkout xcaddy line, which is run in
// this module's directory.
const xcaddyPrefix = "cd caddy && xcaddy build "

// TestXcaddyBuild runs README.md's from-checkout xcaddy line as a user
// would, with xcaddy v0.4.5 (which .ci/run installs), in this module's
// directory, only with its output sent to a temporary directory instead of
// caddy/caddy; then checks that the binary has the transport and adapts a
// Caddyfile that uses php_fcgikit. It skips if xcaddy is not installed, and
// fails then when CI=true.
//
// The go command must not look this checkout's two modules up (they are not
// published, and a published version would not be the checkout): the
// binary's build info must show both replaced by the checkout.
func TestXcaddyBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("xcaddy build skipped in -short mode")
	}
	xcaddy := findXcaddy(t)
	args := readmeXcaddyArgs(t)

	dir := t.TempDir()
	bin := filepath.Join(dir, "caddy")
	args = append(args, "--output", bin)
	cmd := exec.Command(xcaddy, args...)
	// xcaddy reads these; a developer's own settings must not change the
	// build. CGO_ENABLED=1 would also miss TestMain's build cache.
	cmd.Env = withoutEnv(os.Environ(), "CADDY_VERSION", "CGO_ENABLED", "XCADDY_")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("xcaddy %s: %v\n%s", strings.Join(args, " "), err, tail(out.String(), 8000))
	}
	t.Logf("xcaddy build took %v", time.Since(start).Round(time.Second))
	checkReplaced(t, bin)

	list, err := exec.Command(bin, "list-modules").CombinedOutput()
	if err != nil {
		t.Fatalf("caddy list-modules: %v\n%s", err, list)
	}
	if !regexp.MustCompile(`(?m)^http\.reverse_proxy\.transport\.fcgikit$`).Match(list) {
		t.Errorf("caddy list-modules of the xcaddy build has no http.reverse_proxy.transport.fcgikit:\n%s", list)
	}

	conf := filepath.Join(dir, "Caddyfile")
	site := "http://example.com {\n\troot * /srv/app\n\tphp_fcgikit unix//run/php.sock {\n\t\tmax_conns 4\n\t}\n\tfile_server\n}\n"
	if err := os.WriteFile(conf, []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	adapt := exec.Command(bin, "adapt", "--config", conf, "--adapter", "caddyfile")
	adapt.Env = caddyEnv(dir)
	var stdout, stderr bytes.Buffer
	adapt.Stdout, adapt.Stderr = &stdout, &stderr
	if err := adapt.Run(); err != nil {
		t.Fatalf("caddy adapt of the xcaddy build: %v\n%s", err, stderr.String())
	}
	tr := transportOf(t, stdout.String())
	if tr["max_conns"] != 4.0 {
		t.Errorf("adapted transport %v, want max_conns 4", mustJSON(tr))
	}
}

// findXcaddy returns the path of xcaddy, looked up in PATH and then in
// $(go env GOPATH)/bin, where go install puts it.
func findXcaddy(t *testing.T) string {
	t.Helper()
	if path, err := exec.LookPath("xcaddy"); err == nil {
		return path
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			path := filepath.Join(d, "bin", "xcaddy")
			if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
				return path
			}
		}
	}
	const msg = "xcaddy not installed (go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5)"
	switch ci := os.Getenv("CI"); ci {
	case "true":
		t.Fatal(msg)
	case "", "false":
		t.Skip(msg)
	default:
		t.Fatalf("environment variable CI=%q: want unset, \"\", \"false\" or \"true\"", ci)
	}
	return ""
}

// readmeXcaddyArgs returns the arguments after "xcaddy" of the one line of
// README.md that starts with xcaddyPrefix.
func readmeXcaddyArgs(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for line := range strings.SplitSeq(string(readme), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), xcaddyPrefix) {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	if len(lines) != 1 {
		t.Fatalf("README.md has %d lines starting with %q, want 1: %q", len(lines), xcaddyPrefix, lines)
	}
	args := strings.Fields(strings.TrimPrefix(lines[0], "cd caddy && xcaddy "))
	for _, a := range args {
		if strings.ContainsAny(a, `'"$\;|&<>`) {
			t.Fatalf("README.md's xcaddy line %q: argument %q needs a shell; keep the line plain words", lines[0], a)
		}
	}
	// The Caddy version of the line is the one this module requires.
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/caddyserver/caddy/v2 (v\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/caddyserver/caddy/v2")
	}
	if len(args) < 2 || args[0] != "build" || args[1] != string(m[1]) {
		t.Fatalf("README.md's xcaddy line %q: want it to build Caddy %s, the version go.mod requires", lines[0], m[1])
	}
	return args
}

// checkReplaced checks that the binary's build info has both of this
// checkout's modules, each replaced by its directory: proof that the go
// command built them from the checkout and not from a version it looked up.
func checkReplaced(t *testing.T, bin string) {
	t.Helper()
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	caddyDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"github.com/fcgikit/fcgi":       filepath.Dir(caddyDir),
		"github.com/fcgikit/fcgi/caddy": caddyDir,
	}
	for _, m := range info.Deps {
		dir, ok := want[m.Path]
		if !ok {
			continue
		}
		delete(want, m.Path)
		if m.Replace == nil || m.Replace.Path != dir {
			t.Errorf("xcaddy build has %s %s => %v, want => %s", m.Path, m.Version, m.Replace, dir)
		}
	}
	for path := range want {
		t.Errorf("xcaddy build has no module %s", path)
	}
}

// withoutEnv returns env without the variables named by names, or, for a
// name ending in "_", starting with it.
func withoutEnv(env []string, names ...string) []string {
	var kept []string
next:
	for _, kv := range env {
		key, _, _ := strings.Cut(kv, "=")
		for _, n := range names {
			if key == n || strings.HasSuffix(n, "_") && strings.HasPrefix(key, n) {
				continue next
			}
		}
		kept = append(kept, kv)
	}
	return kept
}

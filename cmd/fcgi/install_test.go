package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeInstall runs the install line of README.md and docs/command.md
// as a user would, from the repository's root, and then the installed
// command's --version: it must name the commit the checkout is at, which is
// what a bug report needs.
func TestReadmeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("go install skipped in -short mode")
	}
	const line = "go install ./cmd/fcgi"
	for _, doc := range []string{"../../README.md", "../../docs/command.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for l := range strings.SplitSeq(string(b), "\n") {
			if strings.TrimSpace(l) == line {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s has no line %q: keep this test's line the one the docs give", doc, line)
		}
	}
	gobin := t.TempDir()
	cmd := exec.Command("go", strings.Fields(line)[1:]...)
	cmd.Dir = "../.."
	// GOBIN stands for the user's $(go env GOPATH)/bin, which the test must
	// not write to.
	cmd.Env = append(os.Environ(), "GOBIN="+gobin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	out, err := exec.Command(filepath.Join(gobin, "fcgi"), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("installed fcgi --version: %v\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	if !strings.HasPrefix(got, "fcgi ") || !strings.Contains(got, " go1.") {
		t.Fatalf("installed fcgi --version = %q, want \"fcgi VERSION [REVISION] [TIME] goX\"", got)
	}
	if flags, _ := exec.Command("go", "env", "GOFLAGS").Output(); strings.Contains(string(flags), "-buildvcs=false") {
		// As on this project's machines: the go command then stamps no
		// revision, for the user as for this test.
		t.Logf("GOFLAGS=%s: the revision is not checked", strings.TrimSpace(string(flags)))
		return
	}
	head, err := exec.Command("git", "-C", "../..", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Logf("not a git checkout (%v): the revision is not checked", err)
		return
	}
	if rev := strings.TrimSpace(string(head))[:12]; !strings.Contains(got, " "+rev) {
		t.Errorf("installed fcgi --version = %q, want the checkout's revision %s", got, rev)
	}
}

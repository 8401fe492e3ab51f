package main

import (
	"strings"
	"testing"
)

// A flag mistake is answered in two lines, the mistake and where to read
// more, whatever the subcommand; the help itself is for --help.
func TestFlagErrorOneLine(t *testing.T) {
	for _, c := range commands {
		if c.hidden {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			res := runFcgi(t, nil, c.name, "--no-such-flag")
			lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n")
			want := "Run 'fcgi " + c.name + " --help' for usage."
			if res.code != exitUsage || len(lines) != 2 || !strings.Contains(lines[0], "no-such-flag") || lines[1] != want {
				t.Fatalf("exit %d, stderr %q; want exit %d, the mistake and %q", res.code, res.stderr, exitUsage, want)
			}
			res = runFcgi(t, nil, c.name, "--help")
			if res.code != exitOK || !strings.Contains(res.stderr, "Flags:") || !strings.Contains(res.stderr, "-log-format") {
				t.Fatalf("--help: exit %d, stderr %q; want the whole help", res.code, res.stderr)
			}
		})
	}
}

// fcgi version and fcgi --version say the same: which build this is.
func TestVersion(t *testing.T) {
	v := runFcgi(t, nil, "version")
	vv := runFcgi(t, nil, "--version")
	if v.code != exitOK || !strings.HasPrefix(v.stdout, "fcgi ") || !strings.Contains(v.stdout, "go1.") || vv.stdout != v.stdout {
		t.Fatalf("version: exit %d %q; --version %q", v.code, v.stdout, vv.stdout)
	}
}

package main

import (
	"context"
	"flag"
	"fmt"
	"runtime/debug"
	"strings"
)

var versionCmd = &command{
	name:    "version",
	summary: "print the version of this build",
	usage: `
Usage: fcgi version     (or fcgi --version)

Version prints the module version of this build of fcgi, the commit it
was built from (with "+modified" when the checkout had changes), and the
Go version: what a bug report needs.
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		return func(_ context.Context, args []string) error {
			if len(args) != 0 {
				return usageError(e, fs, "unexpected argument %q", args[0])
			}
			fmt.Fprintln(e.stdout, versionLine())
			return nil
		}
	},
}

// versionLine describes the build from its embedded build information:
// "fcgi (devel) 0123456789ab+modified 2026-12-03T10:00:00Z go1.25.0".
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "fcgi (no build information)"
	}
	parts := []string{"fcgi", bi.Main.Version}
	var rev, when, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if modified == "true" {
			rev += "+modified"
		}
		parts = append(parts, rev)
	}
	if when != "" {
		parts = append(parts, when)
	}
	return strings.Join(append(parts, bi.GoVersion), " ")
}

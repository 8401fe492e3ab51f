package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Health probes of PHP-FPM tell three states apart, since a probe that
// cannot is how a loaded pool gets restarted in the middle of a spike:
//
//   - dead: nothing accepts on the socket (exit 3);
//   - busy: the kernel accepted the connection but no worker answered in
//     time, because every worker is taken and the probe waits in the
//     listen queue (exit 5, or 0 with --busy-ok);
//   - alive: a worker answered (exit 0, or 1 if the answer is wrong or a
//     --max-listen-queue / --min-idle threshold is crossed).
//
// A Kubernetes liveness probe should use --busy-ok (busy is alive); a
// readiness probe should not (a busy pool should get no new traffic).

var pingCmd = &command{
	name:    "ping",
	summary: "health-check PHP-FPM (ping.path) for Docker and Kubernetes",
	usage: `
Usage: fcgi ping [flags] ADDR

Ping requests PHP-FPM's ping page (the pool's ping.path, default /ping)
over FastCGI and checks the answer (ping.response, default "pong"). It
works with any application that answers --path with 200 and --expect.

It tells dead from busy: a socket nobody accepts on is dead (exit 3); a
connection accepted but not answered within --timeout means every worker
is busy and the probe is queued (exit 5) - with --busy-ok that counts as
alive, so a liveness probe does not restart a pool for being loaded. An
HTTP server on the port also accepts and may say nothing, so before
calling a pool busy ping sends bytes an HTTP server answers at once (and
FastCGI ignores), waiting at most half a second: an HTTP server is exit
4, with --busy-ok too.

ADDR is host:port, unix:PATH, or a socket path containing a slash
(./php.sock).

Examples:

	fcgi ping unix:/run/php/php8.2-fpm.sock
	fcgi ping --busy-ok --timeout 2s 127.0.0.1:9000

Dockerfile:

	HEALTHCHECK --interval=10s --timeout=3s CMD ["fcgi", "ping", "--busy-ok", "127.0.0.1:9000"]

Kubernetes:

	livenessProbe:
	  exec: {command: ["fcgi", "ping", "--busy-ok", "--timeout", "2s", "127.0.0.1:9000"]}
	readinessProbe:
	  exec: {command: ["fcgi", "status", "--max-listen-queue", "10", "127.0.0.1:9000"]}

Exit status: 0 alive (or busy with --busy-ok), 1 wrong answer, 2 bad
command line or address, 3 dead (unreachable), 4 protocol error or an
HTTP server, 5 busy (connected, no answer in time).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		path := fs.String("path", "/ping", "ping `path` (PHP-FPM's ping.path)")
		expect := fs.String("expect", "pong", "text the answer must contain")
		timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
		busyOK := fs.Bool("busy-ok", false, "count a busy pool (connected, no answer in time) as alive")
		quiet := fs.Bool("q", false, "print nothing on success")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usageError(e, fs, "want exactly one ADDR")
			}
			c := newClient(e, args[0], *timeout)
			defer c.Close()
			cr, err := get(ctx, c, *path)
			if err != nil {
				if *busyOK && errors.Is(err, errBusy) {
					e.log.Warn("busy: no answer in time, counted as alive (--busy-ok)", "addr", args[0])
					return nil
				}
				return err
			}
			if cr.status != 200 || !bytes.Contains(cr.body, []byte(*expect)) {
				msg := fmt.Sprintf("unexpected answer: status %d, body %q", cr.status, truncate(cr.body, 80))
				if cr.status == http.StatusNotFound {
					// PHP-FPM runs a path that is not its ping path as
					// a script, which is not there.
					msg += fmt.Sprintf(": does the pool set ping.path = %s?", *path)
				}
				return &exitError{code: exitFail, err: errors.New(msg)}
			}
			if !*quiet {
				fmt.Fprintln(e.stdout, strings.TrimSpace(string(cr.body)))
			}
			return nil
		}
	},
}

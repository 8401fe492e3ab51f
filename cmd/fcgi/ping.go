package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
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
				return exitf(exitFail, "unexpected answer: status %d, body %q", cr.status, truncate(cr.body, 80))
			}
			if !*quiet {
				fmt.Fprintln(e.stdout, strings.TrimSpace(string(cr.body)))
			}
			return nil
		}
	},
}

var statusCmd = &command{
	name:    "status",
	summary: "read PHP-FPM's pool status (pm.status_path), with health thresholds",
	usage: `
Usage: fcgi status [flags] ADDR

Status reads PHP-FPM's status page (the pool's pm.status_path, default
/status) over FastCGI and prints it as text, JSON or OpenMetrics (for
Prometheus's textfile collector or a sidecar).

Thresholds turn it into a readiness check that tells busy from dead:
--max-listen-queue N fails when more than N connections wait for a worker,
--min-idle N fails when fewer than N workers are idle. Without them any
answer is healthy. Dead and busy are told apart as by fcgi ping.

Examples:

	fcgi status unix:/run/php/php8.2-fpm.sock
	fcgi status --format openmetrics 127.0.0.1:9000 > /var/lib/node_exporter/fpm.prom
	fcgi status --max-listen-queue 10 --min-idle 1 127.0.0.1:9000

Exit status: 0 healthy, 1 a threshold crossed or not a status page,
3 dead (unreachable), 4 protocol error, 5 busy (no answer in time).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		path := fs.String("path", "/status", "status `path` (PHP-FPM's pm.status_path)")
		format := fs.String("format", "text", "output `format`: text, json or openmetrics")
		maxQueue := fs.Int("max-listen-queue", -1, "fail when more than `N` connections wait for a worker (-1: no check)")
		minIdle := fs.Int("min-idle", -1, "fail when fewer than `N` workers are idle (-1: no check)")
		timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usageError(e, fs, "want exactly one ADDR")
			}
			switch *format {
			case "text", "json", "openmetrics":
			default:
				return usageError(e, fs, "--format %q: want text, json or openmetrics", *format)
			}
			c := newClient(e, args[0], *timeout)
			defer c.Close()
			cr, err := get(ctx, c, *path+"?json")
			if err != nil {
				return err
			}
			if cr.status != 200 {
				return exitf(exitFail, "status page answered %d: %q", cr.status, truncate(cr.body, 80))
			}
			var st map[string]any
			if err := json.Unmarshal(cr.body, &st); err != nil {
				return exitf(exitFail, "not a PHP-FPM status page (want JSON from %s?json): %v", *path, err)
			}
			switch *format {
			case "json":
				e.stdout.Write(cr.body)
				fmt.Fprintln(e.stdout)
			case "openmetrics":
				om, err := get(ctx, c, *path+"?openmetrics")
				if err != nil {
					return err
				}
				e.stdout.Write(om.body)
			default:
				keys := make([]string, 0, len(st))
				for k := range st {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					fmt.Fprintf(e.stdout, "%-22s %v\n", k+":", st[k])
				}
			}
			var problems []string
			if q, ok := st["listen queue"].(float64); ok && *maxQueue >= 0 && int(q) > *maxQueue {
				problems = append(problems, fmt.Sprintf("listen queue %d > %d", int(q), *maxQueue))
			}
			if idle, ok := st["idle processes"].(float64); ok && *minIdle >= 0 && int(idle) < *minIdle {
				problems = append(problems, fmt.Sprintf("idle processes %d < %d", int(idle), *minIdle))
			}
			if len(problems) > 0 {
				return exitf(exitFail, "unhealthy: %s", strings.Join(problems, ", "))
			}
			return nil
		}
	},
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"
)

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

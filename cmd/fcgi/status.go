package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fcgikit/fcgi"
)

var statusCmd = &command{
	name:    "status",
	summary: "read PHP-FPM's pool status (pm.status_path), with health thresholds",
	usage: `
Usage: fcgi status [flags] ADDR

Status reads PHP-FPM's status page (the pool's pm.status_path, default
/status) over FastCGI and prints its fields in PHP-FPM's order: as text
(the start time in RFC 3339, the time since as a duration), as PHP-FPM's
JSON, as OpenMetrics 1.0 (for a scraper or a sidecar), or in Prometheus's
text format (for node_exporter's textfile collector, which reads only
that). The metrics carry the pool's name as the label pool.

Thresholds turn it into a readiness check that tells busy from dead:
--max-listen-queue N fails when more than N connections wait for a worker,
--min-idle N fails when fewer than N workers are idle. Without them any
answer is healthy. Dead and busy are told apart as by fcgi ping. PHP-FPM
counts the listen queue only of a pool that listens on TCP: on a unix
socket it is always 0, and --max-listen-queue cannot fail.

Examples:

	fcgi status unix:/run/php/php8.2-fpm.sock
	fcgi status --format prometheus 127.0.0.1:9000 > /var/lib/node_exporter/fpm.prom
	fcgi status --format openmetrics 127.0.0.1:9000
	fcgi status --max-listen-queue 10 --min-idle 1 127.0.0.1:9000

Exit status: 0 healthy, 1 a threshold crossed or not a status page,
3 dead (unreachable), 4 protocol error, 5 busy (no answer in time).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		path := fs.String("path", "/status", "status `path` (PHP-FPM's pm.status_path)")
		format := fs.String("format", "text", "output `format`: text, json, openmetrics or prometheus")
		maxQueue := fs.Int("max-listen-queue", -1, "fail when more than `N` connections wait for a worker (-1: no check)")
		minIdle := fs.Int("min-idle", -1, "fail when fewer than `N` workers are idle (-1: no check)")
		timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usageError(e, fs, "want exactly one ADDR")
			}
			switch *format {
			case "text", "json", "openmetrics", "prometheus":
			default:
				return usageError(e, fs, "--format %q: want text, json, openmetrics or prometheus", *format)
			}
			c := newClient(e, args[0], *timeout)
			defer c.Close()
			st, body, err := readStatus(ctx, c, *path, false)
			var ce *fetchError
			var ns *notStatusError
			switch {
			case errors.As(err, &ce):
				return clientError(ce.err)
			case errors.As(err, &ns):
				return &exitError{code: exitFail, err: ns}
			case err != nil:
				return err
			}
			switch *format {
			case "json":
				e.stdout.Write(body)
				fmt.Fprintln(e.stdout)
			case "openmetrics":
				st.writeMetrics(e.stdout, true)
			case "prometheus":
				st.writeMetrics(e.stdout, false)
			default:
				st.writeText(e.stdout)
			}
			// PHP-FPM counts the queue only of a TCP listener; for a unix
			// socket it reports a queue of 0 in a backlog of 0, always.
			if n, ok := st.int("listen queue len"); ok && n == 0 && *maxQueue >= 0 {
				e.log.Warn("PHP-FPM counts no listen queue for this pool (listen queue len 0: it listens on a unix socket), so --max-listen-queue cannot fail; use --min-idle, or give the pool a TCP listen")
			}
			var problems []string
			if q, ok := st.int("listen queue"); ok && *maxQueue >= 0 && q > int64(*maxQueue) {
				problems = append(problems, fmt.Sprintf("listen queue %d > %d", q, *maxQueue))
			}
			if idle, ok := st.int("idle processes"); ok && *minIdle >= 0 && idle < int64(*minIdle) {
				problems = append(problems, fmt.Sprintf("idle processes %d < %d", idle, *minIdle))
			}
			if len(problems) > 0 {
				return exitf(exitFail, "unhealthy: %s", strings.Join(problems, ", "))
			}
			return nil
		}
	},
}

// A notStatusError is an answer that is not PHP-FPM's status page: an
// HTTP error status, or a body that is not its JSON.
type notStatusError struct {
	status int    // the HTTP status; 200 for a body that is not the page
	msg    string // what fcgi status prints
}

func (e *notStatusError) Error() string { return e.msg }

// readStatus reads PHP-FPM's status page at path through c as JSON, with
// the list of workers when full is true, and returns it parsed and as
// PHP-FPM sent it. fcgi status and fcgi exporter read the page with it.
// The client's errors are *fetchError, an answer that is not the page a
// *notStatusError.
func readStatus(ctx context.Context, c *fcgi.Client, path string, full bool) (poolStatus, []byte, error) {
	query := "?json"
	if full {
		query += "&full"
	}
	cr, err := fetch(ctx, c, &requestParams{target: path + query, body: -1})
	if err != nil {
		return nil, nil, err
	}
	if cr.status != 200 {
		msg := fmt.Sprintf("status page answered %d: %q", cr.status, truncate(cr.body, 80))
		if cr.status == http.StatusNotFound {
			// PHP-FPM runs a path that is not its status path as a
			// script, which is not there.
			msg += fmt.Sprintf(": does the pool set pm.status_path = %s?", path)
		}
		return nil, nil, &notStatusError{cr.status, msg}
	}
	st, err := parseStatus(cr.body)
	if err != nil {
		return nil, nil, &notStatusError{200, fmt.Sprintf("not a PHP-FPM status page (want JSON from %s?json): %v", path, err)}
	}
	return st, cr.body, nil
}

// A statusField is one field of PHP-FPM's status page, its value as
// PHP-FPM's JSON has it.
type statusField struct {
	name  string
	value json.RawMessage
}

// poolStatus is PHP-FPM's status page, its fields in the order PHP-FPM
// sends them, which is the order of its plain-text page.
type poolStatus []statusField

// parseStatus reads the JSON status page (pm.status_path?json), keeping
// the order of the fields, which a map would lose.
func parseStatus(body []byte) (poolStatus, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	var st poolStatus
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		st = append(st, statusField{name: tok.(string), value: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, ok := st.int("idle processes"); !ok {
		return nil, errors.New(`no "idle processes" count`)
	}
	return st, nil
}

func (st poolStatus) raw(name string) (json.RawMessage, bool) {
	for _, f := range st {
		if f.name == name {
			return f.value, true
		}
	}
	return nil, false
}

// int returns the field name as an integer, if it is one.
func (st poolStatus) int(name string) (int64, bool) {
	v, ok := st.raw(name)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// text returns the field's value as a person reads it: a string
// unquoted, the start time (seconds since the Unix epoch) in RFC 3339,
// the time since the start (seconds) as a duration, anything else as
// PHP-FPM wrote it.
func (st poolStatus) text(f statusField) string {
	var s string
	if json.Unmarshal(f.value, &s) == nil {
		return s
	}
	if n, ok := st.int(f.name); ok {
		switch f.name {
		case "start time":
			return time.Unix(n, 0).Format(time.RFC3339)
		case "start since":
			return (time.Duration(n) * time.Second).String()
		}
	}
	return string(f.value)
}

func (st poolStatus) writeText(w io.Writer) {
	for _, f := range st {
		fmt.Fprintf(w, "%-21s %s\n", f.name+":", st.text(f))
	}
}

// A statusMetric is a numeric field of PHP-FPM's status page as a metric.
type statusMetric struct {
	field string // the field's name on the status page
	name  string // the metric family's name; a counter's samples add _total
	typ   string // "counter" or "gauge"
	unit  string // the OpenMetrics unit, also the name's suffix; "" for none
	help  string
}

// statusMetrics are in PHP-FPM's order. The names are those of PHP-FPM's
// own ?openmetrics page where that page is valid: PHP-FPM types the
// high-water marks as counters and gives its counters no _total suffix,
// which Prometheus's tools reject, and it has no start time.
var statusMetrics = []statusMetric{
	{"start time", "phpfpm_start_time_seconds", "gauge", "seconds", "When the PHP-FPM master started, in seconds since the Unix epoch."},
	{"start since", "phpfpm_start_since_seconds", "gauge", "seconds", "Seconds since the PHP-FPM master started."},
	{"accepted conn", "phpfpm_accepted_connections", "counter", "", "Requests the pool has accepted."},
	{"listen queue", "phpfpm_listen_queue", "gauge", "", "Connections waiting for a free worker."},
	{"max listen queue", "phpfpm_max_listen_queue", "gauge", "", "The most connections that have waited for a worker at once since the start."},
	{"listen queue len", "phpfpm_listen_queue_length", "gauge", "", "The size of the socket's queue of pending connections."},
	{"idle processes", "phpfpm_idle_processes", "gauge", "", "Workers waiting for a request."},
	{"active processes", "phpfpm_active_processes", "gauge", "", "Workers serving a request."},
	{"total processes", "phpfpm_total_processes", "gauge", "", "Workers, idle and active."},
	{"max active processes", "phpfpm_max_active_processes", "gauge", "", "The most workers that have been active at once since the start."},
	{"max children reached", "phpfpm_max_children_reached", "counter", "", "Times the process manager has wanted more workers than pm.max_children allows (pm dynamic and ondemand)."},
	{"slow requests", "phpfpm_slow_requests", "counter", "", "Requests that have run longer than request_slowlog_timeout."},
}

// writeMetrics writes the numeric fields as metrics: OpenMetrics 1.0 when
// openMetrics is true, else Prometheus's text format 0.0.4. They differ
// in a counter's family name (OpenMetrics names the family without the
// _total its samples carry, the text format names the samples), in
// UNIT lines and in the closing # EOF, which only OpenMetrics has.
func (st poolStatus) writeMetrics(w io.Writer, openMetrics bool) {
	labels := ""
	if v, ok := st.raw("pool"); ok {
		var pool string
		if json.Unmarshal(v, &pool) == nil {
			labels = `{pool="` + escapeLabel(pool) + `"}`
		}
	}
	for _, m := range statusMetrics {
		v, ok := st.raw(m.field)
		if !ok {
			continue
		}
		if _, err := strconv.ParseFloat(string(v), 64); err != nil {
			continue
		}
		sample := m.name
		if m.typ == "counter" {
			sample += "_total"
		}
		family := sample
		if openMetrics {
			family = m.name
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", family, m.help, family, m.typ)
		if openMetrics && m.unit != "" {
			fmt.Fprintf(w, "# UNIT %s %s\n", family, m.unit)
		}
		fmt.Fprintf(w, "%s%s %s\n", sample, labels, v)
	}
	if openMetrics {
		fmt.Fprintln(w, "# EOF")
	}
}

// escapeLabel escapes a label value as both formats require.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/fcgikit/fcgi/internal/wire"
)

var valuesCmd = &command{
	name:    "values",
	summary: "ask an application for its limits (FCGI_GET_VALUES)",
	usage: `
Usage: fcgi values [flags] ADDR [NAME...]

Values sends one FCGI_GET_VALUES management record (§4.1) on a connection
of its own and prints the variables the application answers with, one
NAME=VALUE line each. With no NAME it asks for FCGI_MAX_CONNS,
FCGI_MAX_REQS and FCGI_MPXS_CONNS.

ADDR is host:port, unix:PATH, or a socket path containing a slash
(./php.sock).

An application may close the connection after answering (PHP-FPM does);
that is not an error. One that does not answer within --timeout is.

Examples:

	fcgi values unix:/run/php/php8.2-fpm.sock
	fcgi values --json 127.0.0.1:9000
	fcgi values 127.0.0.1:9000 FCGI_MPXS_CONNS

Exit status: 0 answered, 2 bad command line or address, 3 unreachable,
4 answer broke the protocol or came from an HTTP server, 5 connected but
no answer in time (PHP-FPM answers from a worker: a busy pool).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
		asJSON := fs.Bool("json", false, "print a JSON object")
		return func(ctx context.Context, args []string) error {
			if len(args) < 1 {
				return usageError(e, fs, "missing ADDR")
			}
			names := args[1:]
			if len(names) == 0 {
				names = []string{wire.ValueMaxConns, wire.ValueMaxReqs, wire.ValueMpxsConns}
			}
			kv, err := getValues(ctx, e, args[0], names, *timeout)
			if err != nil {
				return err
			}
			if *asJSON {
				m := make(map[string]string, len(kv))
				for _, p := range kv {
					m[p[0]] = p[1]
				}
				return printJSON(e.stdout, m)
			}
			for _, p := range kv {
				fmt.Fprintf(e.stdout, "%s=%s\n", p[0], p[1])
			}
			return nil
		}
	},
}

// getValues asks with fcgi.Client.GetValues, on a connection of its own,
// and returns the answer in the order of names, then any variable the
// application added unasked, by name.
func getValues(ctx context.Context, e *env, addr string, names []string, timeout time.Duration) ([][2]string, error) {
	c := newClient(e, addr, timeout)
	defer c.Close()
	c.ProbeTimeout = timeout
	vals, err := c.GetValues(ctx, c.Addr, names...)
	if err != nil {
		// A connection accepted but not answered is busy, as for
		// ping: PHP-FPM answers FCGI_GET_VALUES from a worker, which a
		// saturated pool has none of; no connection in time is
		// unreachable.
		return nil, clientError(err)
	}
	var kv [][2]string
	for _, n := range names {
		if v, ok := vals[n]; ok {
			kv = append(kv, [2]string{n, v})
			delete(vals, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(vals)) {
		kv = append(kv, [2]string{n, vals[n]})
	}
	return kv, nil
}

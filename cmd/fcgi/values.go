package main

import (
	"context"
	"flag"
	"fmt"
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

ADDR is host:port, unix:/path or /path.

An application may close the connection after answering (PHP-FPM does);
that is not an error. One that does not answer within --timeout is.

Examples:

	fcgi values unix:/run/php/php8.2-fpm.sock
	fcgi values --json 127.0.0.1:9000
	fcgi values 127.0.0.1:9000 FCGI_MPXS_CONNS

Exit status: 0 answered, 3 unreachable or no answer in time,
4 answer broke the protocol.
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
			kv, err := getValues(ctx, args[0], names, *timeout)
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

// getValues sends FCGI_GET_VALUES for names on a fresh connection and
// returns the pairs of the first GET_VALUES_RESULT.
func getValues(ctx context.Context, addr string, names []string, timeout time.Duration) ([][2]string, error) {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := dialRaw(ctx, addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()

	var q []byte
	for _, n := range names {
		q = wire.AppendPair(q, n, "")
	}
	if len(q) > wire.MaxContent {
		return nil, fmt.Errorf("too many names for one record")
	}
	c.nc.SetDeadline(deadline)
	if err := c.w.WriteRecord(wire.TypeGetValues, wire.NullRequestID, q); err != nil {
		return nil, err
	}
	if err := c.w.Flush(); err != nil {
		return nil, exitf(exitUnreachable, "sending GET_VALUES: %v", err)
	}
	for {
		rec, err := c.r.Next()
		if err != nil {
			return nil, readError(err, "waiting for GET_VALUES_RESULT")
		}
		switch {
		case rec.Type == wire.TypeGetValuesResult && rec.RequestID == wire.NullRequestID:
			var kv [][2]string
			err := wire.ForEachPair(rec.Content, func(n, v []byte) bool {
				kv = append(kv, [2]string{string(n), string(v)})
				return true
			})
			if err != nil {
				return nil, exitf(exitProtocol, "GET_VALUES_RESULT: %v", err)
			}
			return kv, nil
		case rec.Type == wire.TypeUnknownType:
			return nil, exitf(exitProtocol, "the application does not know GET_VALUES (UNKNOWN_TYPE)")
		}
		// Anything else is ignored, as a web server would.
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/wire"
)

// The peers of these tests, each as a user meets it: a FastCGI
// application, an HTTP server on the port, an application that accepts
// and never answers, one that refuses every request.

// pingHandler answers /ping with pong, /missing with 404, anything else
// with ok.
var pingHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ping":
		w.Write([]byte("pong\n"))
	case "/missing":
		http.NotFound(w, r)
	default:
		w.Write([]byte("ok\n"))
	}
})

// startHTTPServer runs a net/http server on loopback and returns its
// host:port. Like most HTTP servers it says nothing until it has read a
// request line, which FastCGI's bytes need not hold.
func startHTTPServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return l.Addr().String()
}

// startEagerHTTPServer answers every connection at once with a 400, as
// nginx does to bytes that cannot begin a request, and returns its
// host:port.
func startEagerHTTPServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				nc.Read(make([]byte, 4096))
				io.WriteString(nc, "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

// startSilentServer accepts connections and reads them, never answering:
// a pool whose every worker is busy, seen from the listen queue.
func startSilentServer(t *testing.T) string {
	t.Helper()
	return rawServer(t, func(nc net.Conn) { io.Copy(io.Discard, nc) })
}

// startRefusingServer answers FCGI_GET_VALUES with nothing and every
// request with END_REQUEST OVERLOADED.
func startRefusingServer(t *testing.T) string {
	t.Helper()
	return rawServer(t, func(nc net.Conn) {
		r, w := wire.NewReader(nc), wire.NewWriter(nc)
		defer r.Release()
		for {
			rec, err := r.Next()
			if err != nil {
				return
			}
			switch {
			case rec.Type == wire.TypeGetValues:
				w.WriteRecord(wire.TypeGetValuesResult, wire.NullRequestID, nil)
			case rec.Type == wire.TypeStdin && len(rec.Content) == 0:
				w.WriteEndRequest(rec.RequestID, 0, wire.StatusOverloaded)
			default:
				continue
			}
			if w.Flush() != nil {
				return
			}
		}
	})
}

// exitTableRows returns the statuses of the exit table of
// docs/command.md, in order.
func exitTableRows(t *testing.T) []int {
	t.Helper()
	src, err := os.ReadFile("../../docs/command.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(src), "### Exit status\n")
	if !ok {
		t.Fatal(`docs/command.md has no "### Exit status" section`)
	}
	table, _, _ = strings.Cut(table, "\n\n#")
	var rows []int
	for _, m := range regexp.MustCompile(`(?m)^\| (\d+) \|`).FindAllStringSubmatch(table, -1) {
		n, _ := strconv.Atoi(m[1])
		rows = append(rows, n)
	}
	return rows
}

// wantExit runs the command and checks its exit status and that stderr
// holds each of want.
func wantExit(t *testing.T, code int, args []string, want ...string) result {
	t.Helper()
	res := runFcgi(t, nil, args...)
	if res.code != code {
		t.Errorf("fcgi %s: exit %d, want %d", strings.Join(args, " "), res.code, code)
	}
	for _, w := range want {
		if !strings.Contains(res.stderr, w) {
			t.Errorf("fcgi %s: stderr %q does not say %q", strings.Join(args, " "), res.stderr, w)
		}
	}
	return res
}

// addrCommands are the subcommands that take an address, each as a
// command line whose ADDR is the placeholder "ADDR".
var addrCommands = [][]string{
	{"call", "ADDR", "/"},
	{"ping", "ADDR"},
	{"status", "ADDR"},
	{"values", "ADDR"},
	{"lint", "ADDR"},
	{"bench", "-n", "2", "-c", "1", "ADDR"},
}

// withAddr returns args with "ADDR" replaced by addr and extra flags
// added after the subcommand's name.
func withAddr(args []string, addr string, extra ...string) []string {
	out := append([]string{args[0]}, extra...)
	for _, a := range args[1:] {
		if a == "ADDR" {
			a = addr
		}
		out = append(out, a)
	}
	return out
}

// TestExitStatusTable runs, for each row of the exit table in
// docs/command.md, the cases the row names, as a user would; a row
// without a test, or a test without a row, fails.
func TestExitStatusTable(t *testing.T) {
	rowTests := map[int]func(t *testing.T){
		exitOK: func(t *testing.T) {
			addr := startServer(t, pingHandler)
			wantExit(t, exitOK, []string{"ping", addr})
			wantExit(t, exitOK, []string{"bench", "-n", "20", "-c", "2", addr})
		},
		exitFail: func(t *testing.T) {
			addr := startServer(t, pingHandler)
			wantExit(t, exitFail, []string{"ping", "--expect", "nope", addr}, "unexpected answer")
			res := wantExit(t, exitFail, []string{"bench", "-n", "20", "-c", "2", "--path", "/missing", addr},
				"every response had an HTTP status other than 2xx or 3xx (HTTP 404: 20)")
			if !strings.Contains(res.stdout, "0 succeeded, 20 failed") || !strings.Contains(res.stdout, "WARNING:") {
				t.Errorf("the report of 20 × 404 does not say they failed:\n%s", res.stdout)
			}
		},
		exitUsage: func(t *testing.T) {
			wantExit(t, exitUsage, []string{"ping", "--no-such-flag", "127.0.0.1:9000"})
			for _, bad := range []string{"localhost", "http://127.0.0.1:9000", "127.0.0.1:99999"} {
				for _, args := range addrCommands {
					wantExit(t, exitUsage, withAddr(args, bad), fmt.Sprintf("address %q", bad), "--help")
				}
			}
		},
		exitUnreachable: func(t *testing.T) {
			none := "unix:" + filepath.Join(t.TempDir(), "none.sock")
			for _, args := range addrCommands {
				wantExit(t, exitUnreachable, withAddr(args, none), "no such file or directory")
			}
			// Something listened once, and no more.
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			refused := l.Addr().String()
			l.Close()
			wantExit(t, exitUnreachable, []string{"ping", refused}, "connection refused")
		},
		exitProtocol: func(t *testing.T) {
			for _, addr := range []string{startHTTPServer(t), startEagerHTTPServer(t)} {
				for _, args := range addrCommands {
					wantExit(t, exitProtocol, withAddr(args, addr, "--timeout", "2s"), "this looks like an HTTP server, not a FastCGI application")
				}
				wantExit(t, exitProtocol, []string{"ping", "--busy-ok", "--timeout", "1s", addr}, "this looks like an HTTP server")
			}
			wantExit(t, exitProtocol, []string{"bench", "-n", "5", "-c", "1", startRefusingServer(t)},
				"5 of 5 requests broke the FastCGI protocol or were refused (OVERLOADED: 5)")
		},
		exitBusy: func(t *testing.T) {
			addr := startSilentServer(t)
			for _, args := range [][]string{{"ping"}, {"status"}, {"values"}, {"call", "ADDR", "/"}} {
				if len(args) == 1 {
					args = append(args, "ADDR")
				}
				wantExit(t, exitBusy, withAddr(args, addr, "--timeout", "300ms"), "busy or stuck")
			}
			wantExit(t, exitOK, []string{"ping", "--busy-ok", "--timeout", "300ms", addr})
			res := wantExit(t, exitBusy, []string{"bench", "-n", "3", "-c", "1", "--timeout", "300ms", addr},
				"every request timed out (--timeout 300ms)")
			if !strings.Contains(res.stdout, "timeout: 3") {
				t.Errorf("the report does not count the timeouts:\n%s", res.stdout)
			}
			if !strings.Contains(res.stdout, "Statuses:     none: no response came") {
				t.Errorf("the report's Statuses line does not say that no response came:\n%s", res.stdout)
			}
		},
		128 + int(syscall.SIGINT): func(t *testing.T) {
			r := interruptBench(t, syscall.SIGINT, "-c", "2")
			if r.code != 130 {
				t.Errorf("bench after SIGINT: exit %d, want 130", r.code)
			}
			r = interruptBench(t, syscall.SIGTERM, "-c", "2")
			if r.code != 143 {
				t.Errorf("bench after SIGTERM: exit %d, want 143", r.code)
			}
		},
	}
	rows := exitTableRows(t)
	if len(rows) == 0 {
		t.Fatal("docs/command.md: the exit table has no rows")
	}
	for _, code := range rows {
		test, ok := rowTests[code]
		if !ok {
			t.Errorf("docs/command.md documents exit %d; TestExitStatusTable has no test for it", code)
			continue
		}
		t.Run(strconv.Itoa(code), test)
	}
	for code := range rowTests {
		if !slices.Contains(rows, code) {
			t.Errorf("exit %d is tested but not in the exit table of docs/command.md", code)
		}
	}
}

// interrupted is what one interrupted bench run gave.
type interrupted struct {
	result
	took time.Duration // from the signal to the exit
}

// interruptBench runs bench with args against an application whose
// requests never end, sends sig once every connection has a request in
// flight, and returns what the command did.
func interruptBench(t *testing.T, sig syscall.Signal, args ...string) interrupted {
	t.Helper()
	var inflight atomic.Int64
	arrived := make(chan struct{}, 64)
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		defer inflight.Add(-1)
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	}))
	conns := 2
	for i, a := range args {
		if a == "-c" {
			conns, _ = strconv.Atoi(args[i+1])
		}
	}
	mpx := 1
	for i, a := range args {
		if a == "--mpx" {
			mpx, _ = strconv.Atoi(args[i+1])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fcgiBin, append([]string{"bench", "--duration", "60s", "--timeout", "60s", addr}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for range conns * mpx {
		select {
		case <-arrived:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the application saw %d requests in flight, want %d", inflight.Load(), conns*mpx)
		}
	}
	cmd.Process.Signal(sig)
	sent := time.Now()
	err := cmd.Wait()
	r := interrupted{result: result{stdout: out.String(), stderr: errb.String()}, took: time.Since(sent)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("fcgi bench %s, %v: exit %d after %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), sig, r.code, r.took, r.stdout, r.stderr)
	return r
}

// TestBenchInterrupt: Ctrl-C stops the requests in flight at once, in
// every mode, and the partial report says it was interrupted and how many
// requests it cut; the exit status is 130.
func TestBenchInterrupt(t *testing.T) {
	for _, mode := range [][]string{{"-c", "2"}, {"-c", "2", "--mpx", "3"}, {"-c", "2", "--no-keep-conn"}} {
		t.Run(strings.Join(mode, ""), func(t *testing.T) {
			r := interruptBench(t, syscall.SIGINT, mode...)
			if r.code != 130 {
				t.Errorf("exit %d, want 130", r.code)
			}
			// The requests wait 30 s and --timeout is 60 s: only cutting
			// them ends the run this soon.
			if r.took > 5*time.Second {
				t.Errorf("bench took %v to stop after SIGINT", r.took)
			}
			inflight := 2
			if len(mode) > 2 && mode[2] == "--mpx" {
				inflight = 6
			}
			want := fmt.Sprintf("INTERRUPTED:  partial report; %d requests in flight were cut and are not counted", inflight)
			if !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "0 succeeded, 0 failed") {
				t.Errorf("report does not say %q and count nothing as failed:\n%s", want, r.stdout)
			}
			if !strings.Contains(r.stderr, "fcgi bench: interrupted (SIGINT) after") {
				t.Errorf("stderr %q does not say the run was interrupted", r.stderr)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		r := interruptBench(t, syscall.SIGINT, "-c", "3", "--json")
		var res benchResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("--json output: %v", err)
		}
		if r.code != 130 || !res.Interrupted || res.Cut != 3 || res.Failed != 0 {
			t.Errorf("exit %d, interrupted %v, cut %d, failed %d; want 130, true, 3, 0", r.code, res.Interrupted, res.Cut, res.Failed)
		}
	})
}

// TestBenchWorkerWarning: with more connections than the application
// serves at once (FCGI_MAX_CONNS, from FCGI_GET_VALUES), bench warns that
// latency measures the queue; with as many, it does not.
func TestBenchWorkerWarning(t *testing.T) {
	const warning = "more connections than the application serves at once"
	addr := startFcgiServer(t, &fcgi.Server{Handler: pingHandler, MaxConns: 2}, filepath.Join(t.TempDir(), "app.sock"))
	res := wantExit(t, exitOK, []string{"bench", "-n", "20", "-c", "4", addr}, warning, "connections=4", "FCGI_MAX_CONNS=2")
	if !strings.Contains(res.stdout, "Application:  FCGI_MAX_CONNS=2") {
		t.Errorf("report does not show the application's limits:\n%s", res.stdout)
	}
	r, _ := benchJSON(t, addr, "-n", "20", "-c", "2")
	if r.MaxConns != 2 {
		t.Errorf("--json fcgi_max_conns %d, want 2", r.MaxConns)
	}
	if res := runFcgi(t, nil, "bench", "-n", "20", "-c", "2", addr); strings.Contains(res.stderr, warning) {
		t.Errorf("-c 2 with FCGI_MAX_CONNS=2 warned: %s", res.stderr)
	}
	// In-flight requests with --mpx count against FCGI_MAX_REQS; past
	// it, fcgikit's server refuses requests with OVERLOADED, exit 4.
	addr = startFcgiServer(t, &fcgi.Server{Handler: pingHandler, MaxRequests: 4}, filepath.Join(t.TempDir(), "mpx.sock"))
	res = runFcgi(t, nil, "bench", "-n", "20", "-c", "2", "--mpx", "4", addr)
	if !strings.Contains(res.stderr, "more requests in flight than the application serves at once") || !strings.Contains(res.stderr, "in_flight=8 FCGI_MAX_REQS=4") {
		t.Errorf("--mpx 4 -c 2 with FCGI_MAX_REQS=4: no warning in %q", res.stderr)
	}
}

// TestParseAddr: one rule tells unix socket paths from TCP addresses, and
// refuses what is neither.
func TestParseAddr(t *testing.T) {
	for _, tt := range []struct{ in, network, address string }{
		{"php/run/php.sock", "unix", "php/run/php.sock"},
		{"./php/run/php.sock", "unix", "./php/run/php.sock"},
		{"/abs/x.sock", "unix", "/abs/x.sock"},
		{"unix:/x.sock", "unix", "/x.sock"},
		{"unix:php.sock", "unix", "php.sock"},
		{"127.0.0.1:9000", "tcp", "127.0.0.1:9000"},
		{"localhost:9000", "tcp", "localhost:9000"},
		{"[::1]:9000", "tcp", "[::1]:9000"},
		{":9000", "tcp", ":9000"},
	} {
		network, address, err := parseAddr(tt.in)
		if err != nil || network != tt.network || address != tt.address {
			t.Errorf("parseAddr(%q) = %q, %q, %v; want %q, %q", tt.in, network, address, err, tt.network, tt.address)
		}
	}
	for _, bad := range []string{"localhost", "php.sock", "http://127.0.0.1:9000", "127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:http", "unix:", "::1"} {
		if _, _, err := parseAddr(bad); err == nil {
			t.Errorf("parseAddr(%q) accepted it", bad)
		}
	}
}

// TestRelativeSocketPath: a relative socket path, with or without "./",
// reaches the socket from the current directory, for every subcommand.
func TestRelativeSocketPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "php", "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	startFcgiServer(t, &fcgi.Server{Handler: pingHandler}, filepath.Join(dir, "php", "run", "php.sock"))
	for _, addr := range []string{"php/run/php.sock", "./php/run/php.sock"} {
		for _, args := range [][]string{{"ping", addr}, {"call", addr, "/"}, {"values", addr}, {"bench", "-n", "3", "-c", "1", addr}} {
			cmd := exec.Command(fcgiBin, args...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("fcgi %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
			}
		}
	}
}

// TestDialErrorSaidOnce: a socket that does not exist is reported in one
// line that names the address once, by every subcommand.
func TestDialErrorSaidOnce(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "x.sock")
	for _, args := range addrCommands {
		for _, addr := range []string{"unix:" + sock, sock} {
			res := runFcgi(t, nil, withAddr(args, addr)...)
			want := fmt.Sprintf("fcgi %s: dial unix %s: connect: no such file or directory\n", args[0], sock)
			if res.stderr != want || res.code != exitUnreachable {
				t.Errorf("fcgi %s: exit %d, stderr\n%q\nwant exit 3 and\n%q", args[0], res.code, res.stderr, want)
			}
		}
	}
}

// TestHTTPServerMessage: the exact message for an HTTP server, from the
// probe (net/http says nothing first) and from the first bytes read (an
// eager server).
func TestHTTPServerMessage(t *testing.T) {
	for _, addr := range []string{startHTTPServer(t), startEagerHTTPServer(t)} {
		res := runFcgi(t, nil, "ping", "--timeout", "1s", addr)
		want := `this looks like an HTTP server, not a FastCGI application: it answered "HTTP/1.1 400 Bad Request"` + "\n"
		if res.code != exitProtocol || !strings.HasPrefix(res.stderr, "fcgi ping: ") || !strings.HasSuffix(res.stderr, want) ||
			strings.Count(res.stderr, addr) != 1 || strings.Count(res.stderr, "\n") != 1 {
			t.Errorf("exit %d, stderr %q; want exit 4 and one line naming %s once and ending %q", res.code, res.stderr, addr, want)
		}
	}
}

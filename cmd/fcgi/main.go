package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Exit statuses shared by every subcommand; doc.go lists them for users.
const (
	exitOK          = 0 // the job was done
	exitFail        = 1 // the job ran and found a problem (lint FAIL, ping unhealthy, HTTP error with --fail)
	exitUsage       = 2 // bad command line
	exitUnreachable = 3 // the FastCGI application could not be reached, or closed the connection without answering
	exitProtocol    = 4 // the application answered but broke the FastCGI protocol
	exitBusy        = 5 // connected, but no answer in time: busy (every worker taken) or stuck
)

// exitError carries an exit status up to main with the message to print.
// A nil err prints nothing.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func exitf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// errUsage marks a command-line error already explained to the user.
var errUsage = errors.New("usage")

// A command is one subcommand: its flags are declared by setup, which
// returns the function that runs it with the positional arguments.
type command struct {
	name    string
	summary string
	// usage is the text printed by --help: synopsis, description,
	// examples. Flags are listed after it.
	usage  string
	hidden bool
	// serves marks a command that runs until it is stopped (gateway,
	// exporter, wrap, spawn): a signal is how it ends, and its status
	// is its own. A command that does one job and ends is cut short by
	// one instead, and exits with the signal's status.
	serves bool
	setup  func(fs *flag.FlagSet, e *env) func(ctx context.Context, args []string) error
}

// commands is the command table, in the order the help lists them.
var commands = []*command{
	callCmd,
	pingCmd,
	statusCmd,
	exporterCmd,
	opcacheCmd,
	gatewayCmd,
	valuesCmd,
	lintCmd,
	benchCmd,
	wrapCmd,
	spawnCmd,
	versionCmd,
	demoAppCmd,
	execSystemdCmd,
}

// env is what a subcommand needs from the process: its streams and the
// logger configured by --log-format and --log-level.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger

	logFormat string
	logLevel  slog.Level
}

func main() {
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	// SIGTERM and SIGINT cancel ctx, with a *signalCause as its cause:
	// every subcommand treats that as a request to stop gracefully. A
	// second signal kills the process.
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-sigs
		signal.Stop(sigs) // restore default handling, so a second signal kills
		cancel(&signalCause{sig.(syscall.Signal)})
	}()
	os.Exit(run(ctx, e, os.Args[1:]))
}

// signalCause is the cause of the cancellation of main's context: the
// signal that asked the command to stop.
type signalCause struct{ sig syscall.Signal }

func (s *signalCause) Error() string {
	switch s.sig {
	case syscall.SIGINT:
		return "interrupted (SIGINT)"
	case syscall.SIGTERM:
		return "interrupted (SIGTERM)"
	}
	return "interrupted (" + s.sig.String() + ")"
}

// exitCode is the shell's status for a process the signal ended, 128 plus
// its number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
func (s *signalCause) exitCode() int { return 128 + int(s.sig) }

// interruption returns the signal that cancelled ctx, or nil.
func interruption(ctx context.Context) *signalCause {
	var s *signalCause
	if errors.As(context.Cause(ctx), &s) {
		return s
	}
	return nil
}

// run runs the command line args and returns the exit status.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			if c := lookupCommand(args[1]); c != nil {
				return run(ctx, e, []string{c.name, "--help"})
			}
		}
		printTopUsage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = []string{"version"}
	}
	c := lookupCommand(args[0])
	if c == nil {
		fmt.Fprintf(e.stderr, "fcgi: unknown command %q; run 'fcgi help' for the list\n", args[0])
		return exitUsage
	}
	fs := flag.NewFlagSet("fcgi "+c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	// The flag package prints the mistake and then calls Usage, for a
	// mistake as for --help: the whole help is printed below only when
	// it was asked for.
	fs.Usage = func() {}
	fs.StringVar(&e.logFormat, "log-format", "text", "log format: `text` or json")
	fs.TextVar(&e.logLevel, "log-level", slog.LevelInfo, "least severe log `level`: debug, info, warn or error")
	runCmd := c.setup(fs, e)
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(e.stderr, strings.TrimLeft(c.usage, "\n"))
			fmt.Fprintln(e.stderr, "\nFlags:")
			fs.PrintDefaults()
			return exitOK
		}
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", fs.Name())
		return exitUsage
	}
	var h slog.Handler
	opts := &slog.HandlerOptions{Level: e.logLevel}
	switch e.logFormat {
	case "text":
		h = slog.NewTextHandler(e.stderr, opts)
	case "json":
		h = slog.NewJSONHandler(e.stderr, opts)
	default:
		fmt.Fprintf(e.stderr, "fcgi %s: --log-format %q: want text or json\n", c.name, e.logFormat)
		return exitUsage
	}
	e.log = slog.New(h)

	err = runCmd(ctx, pos)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errUsage) {
		return exitUsage
	}
	code := exitFail
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	// A job cut short failed because of the signal, whatever the error
	// its cancellation caused ("context canceled", or no answer in
	// time); bench has said so already, with its partial report.
	if sc := interruption(ctx); sc != nil && !c.serves && code != sc.exitCode() {
		code, err = sc.exitCode(), sc
	} else if ee != nil && ee.err == nil {
		return code
	}
	// The library's errors begin with its package name, "fcgi: ", which
	// the command's own prefix already says.
	fmt.Fprintf(e.stderr, "fcgi %s: %s\n", c.name, strings.TrimPrefix(err.Error(), "fcgi: "))
	if code == exitUsage {
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", fs.Name())
	}
	return code
}

func lookupCommand(name string) *command {
	i := slices.IndexFunc(commands, func(c *command) bool { return c.name == name })
	if i < 0 {
		return nil
	}
	return commands[i]
}

func printTopUsage(w io.Writer) {
	fmt.Fprint(w, "fcgi is a toolkit for FastCGI: talk to, test, load and run FastCGI applications.\n\nUsage:\n\n\tfcgi <command> [flags] [arguments]\n\nCommands:\n\n")
	for _, c := range commands {
		if !c.hidden {
			fmt.Fprintf(w, "\t%-8s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprint(w, "\nRun 'fcgi <command> --help' for a command's flags and examples.\n")
}

// usageError reports a command-line mistake and returns errUsage.
func usageError(e *env, fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(e.stderr, "%s: %s\nRun '%s --help' for usage.\n", fs.Name(), fmt.Sprintf(format, args...), fs.Name())
	return errUsage
}

// parseInterspersed parses fs's flags wherever they appear among the
// positional arguments ("fcgi lint ADDR --path /x"), as curl and most GNU
// tools allow. Everything after a "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// An addrError is an address argument that is not a FastCGI address: a
// mistake on the command line (exit 2), not an application that is down.
type addrError struct {
	addr string
	why  string
}

func (e *addrError) Error() string { return fmt.Sprintf("address %q: %s", e.addr, e.why) }

// parseAddr turns an address as users write it into a network and an
// address for net.Dial. Every subcommand reads its addresses with it, by
// one rule:
//
//   - "unix:PATH" is the unix socket PATH;
//   - an address containing a slash is a unix socket path, absolute or
//     relative: "/run/php/php.sock", "./php.sock", "php/run/php.sock";
//   - anything else is TCP "host:port", with a port from 1 to 65535.
//
// A URL ("http://127.0.0.1:9000") is refused rather than taken for a path.
func parseAddr(addr string) (network, address string, err error) {
	return parseAddrPort(addr, 1)
}

// parseListenAddr is parseAddr's rule for an address to listen on: port 0
// (any free port) is allowed as well, and so, as for parseAddr, is an
// empty host (":9000", every interface).
func parseListenAddr(addr string) (network, address string, err error) {
	return parseAddrPort(addr, 0)
}

// listenFlag checks the value of a --listen flag by parseListenAddr's
// rule, so that a malformed address is a usage error before anything
// starts.
func listenFlag(e *env, fs *flag.FlagSet, addr string) error {
	if _, _, err := parseListenAddr(addr); err != nil {
		return usageError(e, fs, "--listen: %v", err)
	}
	return nil
}

// parseAddrPort is parseAddr with the lowest TCP port it accepts.
func parseAddrPort(addr string, minPort uint64) (network, address string, err error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if p == "" {
			return "", "", &addrError{addr, "no socket path after unix:"}
		}
		return "unix", p, nil
	}
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		return "", "", &addrError{addr, fmt.Sprintf("a URL, not a FastCGI address (FastCGI has no %s://; for TCP write host:port, such as %s)", scheme, strings.TrimSuffix(rest, "/"))}
	}
	if strings.Contains(addr, "/") {
		return "unix", addr, nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil && !strings.Contains(addr, ":") {
		return "", "", &addrError{addr, fmt.Sprintf("no port: want host:port (%s:9000), unix:/path, or a socket path containing a slash (./%s)", addr, addr)}
	}
	if err != nil {
		return "", "", &addrError{addr, "want host:port, unix:/path, or a socket path containing a slash (./app.sock)"}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n < minPort {
		return "", "", &addrError{addr, fmt.Sprintf("port %q is not a number from %d to 65535", port, minPort)}
	}
	return "tcp", addr, nil
}

// fcgiAddr converts an address as users write it to the form of
// fcgi.Listen and fcgi.Client: "unix:/path" or "host:port". An address
// parseAddr refuses is returned as it is, for the caller's dial or listen
// to fail on.
func fcgiAddr(addr string) string {
	if network, address, err := parseAddr(addr); err == nil && network == "unix" {
		return "unix:" + address
	}
	return addr
}

// dial connects to a FastCGI application. A malformed address is a usage
// error; a failure to connect is net.Dial's error, which names the
// address once.
func dial(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	network, address, err := parseAddr(addr)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, &exitError{code: exitUnreachable, err: err}
	}
	return c, nil
}

// printJSON writes v to w as indented JSON, for --json outputs.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// onHangup calls reload on each SIGHUP until ctx ends. The long-running
// subcommands use it, so that SIGHUP (systemd's ExecReload, kill -HUP)
// reloads what can be reloaded rather than killing the process, as it
// would by default. Calls to reload do not overlap. Once ctx has ended
// the process is on its way out: SIGHUP is still caught, and dropped, so
// that it cannot kill the process before it has stopped what it
// supervises (ignoring it instead would pass SIG_IGN on to the processes
// it still starts).
func onHangup(ctx context.Context, reload func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		for range ch {
			if ctx.Err() == nil {
				reload()
			}
		}
	}()
}

// openURL is the URL a user can open for a listener: a wildcard listener
// reports its address as [::] or 0.0.0.0, which browsers and curl cannot
// reach on every system, so the URL names the loopback address instead.
func openURL(scheme string, a net.Addr, path string) string {
	host := a.String()
	if t, ok := a.(*net.TCPAddr); ok && t.IP.IsUnspecified() {
		host = net.JoinHostPort("127.0.0.1", strconv.Itoa(t.Port))
	}
	return scheme + "://" + host + path
}

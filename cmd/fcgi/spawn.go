package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/cmd/fcgi/internal/pgroup"
	"github.com/fcgikit/fcgi/cmd/fcgi/internal/reap"
)

var spawnCmd = &command{
	name:    "spawn",
	serves:  true,
	summary: "bind a socket and run FastCGI application processes on it (spawn-fcgi)",
	usage: `
Usage: fcgi spawn --listen ADDR [flags] -- PROG [ARGS...]

Spawn binds the listening socket ADDR and starts -n copies of PROG that
all accept on it, as spawn-fcgi does, but stays in the foreground and
supervises them: a process that exits is restarted after a back-off that
doubles from --min-backoff up to --max-backoff (and resets once a process
has run for a minute). SIGTERM or SIGINT is forwarded to every process;
spawn waits up to --grace for them to exit, then kills them. A second
SIGTERM or SIGINT kills them at once.

Each process runs in a process group of its own, and whatever it started
goes with it: when it exits, or is killed at the end of the grace period,
every process left in its group is killed (SIGKILL), so no orphan holds
the socket; a kill also reaches its descendants outside the group (the
scripts of an fcgi wrap, each in a group of its own). SIGTERM goes to
the process alone, which is in charge of stopping its children.

SIGHUP restarts the processes one at a time (a rolling restart, to load
a new build): each gets SIGTERM, up to --grace to finish its requests,
and is replaced at once; the next one follows when its replacement has
run for a second. A replacement that exits sooner, or cannot start,
stops the roll and leaves the other processes as they were. Spawn keeps
the socket open all along, so no connection is refused: connections made
meanwhile wait in its backlog.

The socket is passed as file descriptor 0 (FCGI_LISTENSOCK_FILENO), which
is what libfcgi, PHP's php-cgi, Go's net/http/fcgi and fcgikit's Serve(nil)
expect; with --systemd it is passed as fd 3 with LISTEN_FDS=1 and
LISTEN_PID set to each process's PID, as systemd socket activation does.

The processes share spawn's standard output and error.

A unix socket is created with mode --socket-mode (default 0660, as
PHP-FPM's listen.mode) and owned by --socket-user and --socket-group
(default: --user and --group's, as with spawn-fcgi, else spawn's own),
so that a web server running as another user can connect: connecting
takes write permission. For nginx on Debian, whose workers run as
www-data: --socket-group www-data.

Spawn itself keeps its privileges (it must, to restart processes);
with --user and --group the processes run as that user and group, with
the user's supplementary groups (those of 'id USER', as initgroups(3)
gives them) and none of spawn's. --group defaults to the user's primary
group; a numeric --user with no account needs --group. With --chdir the
processes start in that directory, and a relative PROG with a slash is
taken from there, as spawn-fcgi -d does.

--pid-file gets spawn's own PID, the process to send SIGTERM or SIGHUP,
once the socket is bound; it is removed when spawn exits (unless
SIGKILL ends it).

spawn-fcgi's letters work as short names: -s PATH (--listen
unix:PATH, a relative path too), -F (-n), -M (--socket-mode),
-U (--socket-user), -G (--socket-group), -u (--user), -g (--group),
-P (--pid-file), -d (--chdir).

Examples:

	fcgi spawn --listen unix:/run/app.sock -n 4 -- /usr/local/bin/app
	fcgi spawn --listen 127.0.0.1:9000 -- php-cgi
	fcgi spawn --listen unix:/run/app.sock --systemd -- ./server --flag
	fcgi spawn -s /run/app.sock -U www-data -G www-data -M 0660 \
		-u app -g app -P /run/app.pid -d /srv/app -- ./app

Exit status: 0 after SIGTERM and a clean stop, 1 if the socket could not
be bound, PROG could not be started at all, or a second signal cut the
grace short.
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		sp := &spawner{}
		var listen string
		fs.StringVar(&listen, "listen", "", "listen `address`: unix:/path or host:port (required)")
		fs.Func("s", "unix socket `path`: --listen unix:PATH (spawn-fcgi -s)", func(path string) error {
			// A path, relative or not, as spawn-fcgi takes it.
			if !strings.HasPrefix(path, "unix:") {
				path = "unix:" + path
			}
			listen = path
			return nil
		})
		sp.n = 1
		fs.Var((*procCount)(&sp.n), "n", "`number` of processes")
		fs.Var((*procCount)(&sp.n), "F", "short for -n (spawn-fcgi -F), a `number`")
		var lc fcgi.ListenConfig
		fs.Var((*octalMode)(&lc.SocketMode), "socket-mode", "unix socket permission `bits`, octal (default 0660, as PHP-FPM's listen.mode)")
		fs.Var((*octalMode)(&lc.SocketMode), "M", "short for --socket-mode (spawn-fcgi -M), octal `bits`")
		fs.StringVar(&lc.SocketOwner, "socket-user", "", "`user` (name or uid) owning the unix socket (default: --user, else spawn's)")
		fs.StringVar(&lc.SocketOwner, "U", "", "short for --socket-user (spawn-fcgi -U)")
		fs.StringVar(&lc.SocketGroup, "socket-group", "", "`group` (name or gid) of the unix socket (default: --group or --user's, else spawn's)")
		fs.StringVar(&lc.SocketGroup, "G", "", "short for --socket-group (spawn-fcgi -G)")
		var runUser, runGroup string
		fs.StringVar(&runUser, "user", "", "run the processes as this `user` (name or uid), with its groups")
		fs.StringVar(&runUser, "u", "", "short for --user (spawn-fcgi -u)")
		fs.StringVar(&runGroup, "group", "", "run the processes with this primary `group` (name or gid; default: --user's)")
		fs.StringVar(&runGroup, "g", "", "short for --group (spawn-fcgi -g)")
		var pidFile string
		fs.StringVar(&pidFile, "pid-file", "", "write spawn's PID to this `file`, removed at exit")
		fs.StringVar(&pidFile, "P", "", "short for --pid-file (spawn-fcgi -P)")
		fs.StringVar(&sp.dir, "chdir", "", "start the processes in this `directory`")
		fs.StringVar(&sp.dir, "d", "", "short for --chdir (spawn-fcgi -d)")
		fs.BoolVar(&sp.systemd, "systemd", false, "pass the socket as fd 3 with LISTEN_FDS/LISTEN_PID instead of fd 0")
		fs.DurationVar(&sp.grace, "grace", 10*time.Second, "on SIGTERM, how long processes may take to exit")
		fs.DurationVar(&sp.minBackoff, "min-backoff", 100*time.Millisecond, "first restart delay")
		fs.DurationVar(&sp.maxBackoff, "max-backoff", 10*time.Second, "longest restart delay")
		return func(ctx context.Context, args []string) error {
			if listen == "" {
				return usageError(e, fs, "--listen is required")
			}
			if err := listenFlag(e, fs, listen); err != nil {
				return err
			}
			if len(args) == 0 {
				return usageError(e, fs, "missing PROG (put it after --)")
			}
			if sp.n < 1 {
				return usageError(e, fs, "-n must be at least 1")
			}
			addr := fcgiAddr(listen)
			if !strings.HasPrefix(addr, "unix:") && (lc.SocketMode != 0 || lc.SocketOwner != "" || lc.SocketGroup != "") {
				return usageError(e, fs, "--socket-mode, --socket-user and --socket-group are for unix sockets, not %s", listen)
			}
			var err error
			if sp.cred, err = credential(runUser, runGroup); err != nil {
				return err
			}
			if sp.cred != nil && strings.HasPrefix(addr, "unix:") {
				// As spawn-fcgi: the socket belongs to the user the
				// processes run as, unless -U or -G say otherwise.
				if lc.SocketOwner == "" && runUser != "" {
					lc.SocketOwner = strconv.FormatUint(uint64(sp.cred.Uid), 10)
				}
				if lc.SocketGroup == "" {
					lc.SocketGroup = strconv.FormatUint(uint64(sp.cred.Gid), 10)
				}
			}
			if sp.dir != "" {
				if fi, err := os.Stat(sp.dir); err != nil {
					return fmt.Errorf("--chdir: %w", err)
				} else if !fi.IsDir() {
					return fmt.Errorf("--chdir %s: not a directory", sp.dir)
				}
			}
			prog := args[0]
			if sp.dir != "" && strings.Contains(prog, "/") && !filepath.IsAbs(prog) {
				// As spawn-fcgi -d: the processes start there.
				prog = filepath.Join(sp.dir, prog)
			}
			if prog, err = exec.LookPath(prog); err != nil {
				return err
			}
			// Absolute, so that the processes' working directory does
			// not change what it names.
			if prog, err = filepath.Abs(prog); err != nil {
				return err
			}
			sp.argv = append([]string{prog}, args[1:]...)
			sp.e = e
			l, err := lc.Listen(ctx, addr)
			if err != nil {
				return err
			}
			defer l.Close()
			if pidFile != "" {
				remove, err := writePIDFile(pidFile)
				if err != nil {
					return err
				}
				defer remove()
			}
			fl, ok := l.(interface{ File() (*os.File, error) })
			if !ok {
				return fmt.Errorf("listener %T has no file descriptor", l)
			}
			if sp.sock, err = fl.File(); err != nil {
				return err
			}
			defer sp.sock.Close()
			if sp.systemd {
				if sp.self, err = os.Executable(); err != nil {
					return err
				}
			}
			e.log.Info("spawn listening", "addr", l.Addr().String(), "n", sp.n, "prog", prog)
			sp.restart = make([]chan chan error, sp.n)
			sp.done = make([]chan struct{}, sp.n)
			for i := range sp.restart {
				sp.restart[i] = make(chan chan error)
				sp.done[i] = make(chan struct{})
			}
			// The orphans of the processes come here, to be reaped, even
			// where spawn is not PID 1.
			defer reap.Adopt()()
			onHangup(ctx, func() { sp.rollingRestart(ctx) })
			hurry, stopSignals := secondSignal(func() {
				e.log.Info("stopping: SIGTERM sent to every process", "grace", sp.grace)
			})
			defer stopSignals()
			sp.hurry = hurry
			var wg sync.WaitGroup
			errs := make([]error, sp.n)
			for i := range sp.n {
				// One supervisor per slot; it ends when ctx is cancelled
				// and its process has exited.
				wg.Go(func() { errs[i] = sp.supervise(ctx, i) })
			}
			wg.Wait()
			select {
			case <-sp.hurry:
				errs = append(errs, errors.New("stopped by a second signal: processes killed"))
			default:
			}
			return errors.Join(errs...)
		}
	},
}

type spawner struct {
	n          int
	systemd    bool
	grace      time.Duration
	minBackoff time.Duration
	maxBackoff time.Duration
	argv       []string
	dir        string              // working directory of the processes, "" for spawn's
	cred       *syscall.Credential // user and groups of the processes, nil for spawn's
	self       string              // this executable, for --systemd
	sock       *os.File
	e          *env

	// restart[i] asks slot i to replace its process; the slot answers on
	// the channel it receives, once the replacement has run for
	// restartSettle (nil) or failed to (why). done[i] is closed when
	// slot i's supervisor has returned.
	restart []chan chan error
	done    []chan struct{}
	// hurry is closed by a second SIGTERM or SIGINT: the grace ends.
	hurry <-chan struct{}
}

// restartSettle is how long a replacement must run before a rolling
// restart moves on: started is not yet serving, and a build that cannot
// start must not take every slot down in turn.
const restartSettle = time.Second

// rollingRestart replaces the processes slot by slot, each once the one
// before has run for restartSettle, so that with -n 2 or more some process
// is always accepting. A replacement that fails stops the roll, leaving
// the other slots as they were.
func (sp *spawner) rollingRestart(ctx context.Context) {
	log := sp.e.log
	log.Info("SIGHUP: restarting the processes one by one")
	for i := range sp.restart {
		ack := make(chan error, 1)
		select {
		case sp.restart[i] <- ack:
		case <-sp.done[i]:
			log.Warn("SIGHUP: slot not running; skipped", "slot", i)
			continue
		case <-ctx.Done():
			return
		}
		select {
		case err := <-ack:
			if err != nil {
				log.Error("SIGHUP: rolling restart stopped; the other processes are left as they were", "slot", i, "err", err)
				return
			}
		case <-ctx.Done():
			return
		}
	}
	log.Info("SIGHUP: all processes restarted")
}

// resetAfter is how long a process must run for its slot's back-off to
// start again from --min-backoff.
const resetAfter = time.Minute

// supervise keeps one process running in slot i until ctx is cancelled.
func (sp *spawner) supervise(ctx context.Context, i int) error {
	defer close(sp.done[i])
	log := sp.e.log.With("slot", i)
	backoff := sp.minBackoff
	var ack chan error // a restart asked for: how its replacement fares
	for n := 0; ; n++ {
		cmd := sp.command()
		t0 := time.Now()
		if err := reap.Start(cmd); err != nil {
			if n == 0 {
				return fmt.Errorf("starting %s: %w", sp.argv[0], err)
			}
			log.Error("restart failed", "err", err)
			if ack != nil {
				ack <- fmt.Errorf("starting the replacement: %w", err)
				ack = nil
			}
		} else {
			log.Info("started", "pid", cmd.Process.Pid)
			next, err := sp.wait(ctx, cmd, log, sp.restart[i], ack)
			ack = nil // wait has answered it
			if ctx.Err() != nil {
				return nil
			}
			if next != nil {
				// Replaced on request: at once, and the back-off
				// starts afresh.
				ack, backoff = next, sp.minBackoff
				continue
			}
			log.Warn("process exited", "pid", cmd.Process.Pid, "status", exitStatus(err), "ran", time.Since(t0).Round(time.Millisecond))
		}
		if time.Since(t0) > resetAfter {
			backoff = sp.minBackoff
		}
		log.Info("restarting", "after", backoff)
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, sp.maxBackoff)
		case ack = <-sp.restart[i]:
			// A restart asked for while waiting: start now.
		case <-ctx.Done():
			return nil
		}
	}
}

func (sp *spawner) command() *exec.Cmd {
	var cmd *exec.Cmd
	if sp.systemd {
		// LISTEN_PID must be the application's own PID, unknown before
		// it starts: a hidden subcommand sets it and then execs PROG,
		// which keeps the PID.
		cmd = exec.Command(sp.self, append([]string{"exec-systemd", "--"}, sp.argv...)...)
		cmd.ExtraFiles = []*os.File{sp.sock}
		cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=fcgi")
		cmd.Stdin = nil
	} else {
		cmd = exec.Command(sp.argv[0], sp.argv[1:]...)
		cmd.Stdin = sp.sock
	}
	cmd.Stdout, cmd.Stderr = sp.e.stdout, sp.e.stderr
	cmd.Dir = sp.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Set in the child before exec (setgroups, setgid, setuid).
		Credential: sp.cred,
		// A group of its own, so that killing -pgid reaches everything
		// the process starts, once it is gone too (unless that calls
		// setsid, as daemons do, or leads a group, as fcgi wrap's
		// scripts do: pgroup kills those while the process runs).
		Setpgid: true,
	}
	// If spawn dies without forwarding a signal, the kernel tells the
	// process. (Go sets it after the credentials, whose change would clear
	// it.)
	pgroup.DieWithParent(cmd.SysProcAttr, syscall.SIGTERM)
	return cmd
}

// wait waits for cmd to exit, then kills what it left in its process
// group. When ctx is cancelled first, or a restart is asked for on
// restart, it sends SIGTERM to cmd, and SIGKILL to its whole group after
// the grace period; it returns the new restart's answer channel in that
// case. ack, when not nil, is answered once cmd has run for
// restartSettle, or has exited before.
func (sp *spawner) wait(ctx context.Context, cmd *exec.Cmd, log *slog.Logger, restart <-chan chan error, ack chan error) (chan error, error) {
	g := pgroup.New(cmd.Process.Pid)
	done := make(chan error, 1)
	// Owned by wait: reaps cmd and kills its leftovers (which would
	// otherwise go on accepting on the socket). Ends when cmd exits.
	go func() {
		err := cmd.Wait()
		reap.Done(cmd)
		g.Kill(true)
		done <- err
	}()
	var settled <-chan time.Time
	restartReq := restart
	if ack != nil {
		t := time.NewTimer(restartSettle)
		defer t.Stop()
		settled = t.C
		restartReq = nil // one restart at a time
	}
	var next chan error
wait:
	for {
		select {
		case err := <-done:
			if ack != nil {
				ack <- fmt.Errorf("the replacement exited within %v: %s", restartSettle, exitStatus(err))
			}
			return nil, err
		case <-settled:
			ack <- nil
			ack, settled, restartReq = nil, nil, restart
		case <-ctx.Done():
			break wait
		case next = <-restartReq:
			log.Info("restarting on SIGHUP", "pid", cmd.Process.Pid)
			break wait
		}
	}
	if ack != nil {
		ack <- ctx.Err()
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		log.Info("stopped", "pid", cmd.Process.Pid, "status", exitStatus(err))
		return next, err
	case <-time.After(sp.grace):
		log.Warn("grace period over: killing", "pid", cmd.Process.Pid)
	case <-sp.hurry:
		log.Warn("second signal: killing", "pid", cmd.Process.Pid)
	}
	g.Kill(false)
	return next, <-done
}

// credential returns the user and groups to run the processes as, for
// --user and --group, nil when neither is given. As spawn-fcgi does (with
// initgroups(3)), the supplementary groups are the user's own, those of
// 'id USER', with group as the primary group; spawn's own are dropped.
func credential(userArg, groupArg string) (*syscall.Credential, error) {
	if userArg == "" && groupArg == "" {
		return nil, nil
	}
	var gid, primary int64 = -1, -1
	if groupArg != "" {
		g, err := lookupGroup(groupArg)
		if err != nil {
			return nil, fmt.Errorf("--group: %w", err)
		}
		gid = g
	}
	if userArg == "" {
		// The group alone: spawn's user, that group, no other.
		return &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	var u *user.User
	var err error
	if n, perr := strconv.ParseUint(userArg, 10, 32); perr == nil {
		if u, err = user.LookupId(userArg); err != nil {
			// A bare uid: nothing to take the group from.
			if gid < 0 {
				return nil, fmt.Errorf("--user %s has no account (%v): give --group", userArg, err)
			}
			return &syscall.Credential{Uid: uint32(n), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}, nil
		}
	} else if u, err = user.Lookup(userArg); err != nil {
		return nil, fmt.Errorf("--user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("--user %s: uid %q: %w", userArg, u.Uid, err)
	}
	if primary, err = strconv.ParseInt(u.Gid, 10, 64); err != nil {
		return nil, fmt.Errorf("--user %s: gid %q: %w", userArg, u.Gid, err)
	}
	if gid < 0 {
		gid = primary
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("--user %s: its groups: %w", userArg, err)
	}
	groups := []uint32{uint32(gid)}
	for _, s := range ids {
		g, err := strconv.ParseInt(s, 10, 64)
		// The passwd primary group is in ids; initgroups(user, gid)
		// gives it only when it is gid.
		if err != nil || g == gid || g == primary {
			continue
		}
		groups = append(groups, uint32(g))
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, nil
}

// lookupGroup returns the gid a group name or number stands for.
func lookupGroup(s string) (int64, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return int64(n), nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(g.Gid, 10, 64)
}

// writePIDFile writes this process's PID to path, whole or not at all
// (through a rename), and returns the function that removes it, unless
// another process has put its own PID there since. A path that exists
// and is not a regular file is refused, as spawn-fcgi refuses it.
func writePIDFile(path string) (remove func(), err error) {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("--pid-file %s: exists and is not a regular file", path)
	}
	content := strconv.Itoa(os.Getpid()) + "\n"
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, fmt.Errorf("--pid-file: %w", err)
	}
	_, err = tmp.WriteString(content)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("--pid-file: %w", err)
	}
	return func() {
		if b, err := os.ReadFile(path); err == nil && string(b) == content {
			os.Remove(path)
		}
	}, nil
}

// octalMode is a flag.Value for a file mode written in octal, as chmod
// takes it: "0660" or "660".
// procCount is -n's value. spawn-fcgi's -n is a switch (stay in the
// foreground), which spawn-fcgi users type out of habit: its error says so.
type procCount int

func (n *procCount) String() string {
	if n == nil {
		return ""
	}
	return strconv.Itoa(int(*n))
}

func (n *procCount) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("want a number of processes (spawn-fcgi's -n, no fork, is what spawn always does: leave it out)")
	}
	*n = procCount(v)
	return nil
}

type octalMode os.FileMode

func (m *octalMode) String() string {
	if m == nil || *m == 0 {
		return ""
	}
	return fmt.Sprintf("%#o", uint32(*m))
}

func (m *octalMode) Set(s string) error {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("want octal permission bits, 0 to 0777")
	}
	*m = octalMode(n)
	return nil
}

func exitStatus(err error) string {
	if err == nil {
		return "0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal().String()
		}
		return strconv.Itoa(ee.ExitCode())
	}
	return err.Error()
}

var execSystemdCmd = &command{
	name:    "exec-systemd",
	summary: "set LISTEN_PID to this process and exec PROG (used by spawn --systemd)",
	hidden:  true,
	usage: `
Usage: fcgi exec-systemd -- PROG [ARGS...]

Exec-systemd sets LISTEN_PID to its own PID and replaces itself with PROG,
which therefore sees LISTEN_PID equal to its PID, as under systemd.
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return usageError(e, fs, "missing PROG")
			}
			env := append(os.Environ(), "LISTEN_PID="+strconv.Itoa(os.Getpid()))
			return syscall.Exec(args[0], args, env)
		}
	},
}

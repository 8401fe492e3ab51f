package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), &statusError{resp.StatusCode}
	}
	return string(b), err
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "HTTP status " + strconv.Itoa(e.code) }

// getPID asks the demo app behind url for its PID, retrying for a few
// seconds while the app (re)starts.
func getPID(t *testing.T, url string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, err := httpGet(url + "/pid")
		if err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(body))
			if err != nil {
				t.Fatalf("/pid: %q", body)
			}
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /pid: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSpawnNginx: spawn runs the demo app (fcgikit's Serve on fd 0) behind
// nginx; an app killed with SIGKILL is restarted; SIGTERM stops spawn and
// its app.
func TestSpawnNginx(t *testing.T) {
	peer.Require(t, "nginx", "nginx")
	var newPID int
	t.Cleanup(func() {
		// Registered first, so it runs after spawn's own cleanup
		// (SIGTERM and wait): the restarted app must be gone too.
		if newPID != 0 && processAlive(newPID) {
			t.Errorf("app %d outlived spawn", newPID)
		}
	})
	sock := filepath.Join(t.TempDir(), "app.sock")
	startFcgi(t, "spawn", "--listen", "unix:"+sock, "--min-backoff", "50ms", "--", fcgiBin, "demo-app")
	waitDial(t, sock)
	n := peer.StartNginx(t, peer.NginxConfig{FastCGI: "unix:" + sock})

	pid := getPID(t, n.URL())
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if newPID = getPID(t, n.URL()); newPID != pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("app not restarted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	body, err := httpGet(n.URL() + "/env")
	if err != nil || !strings.Contains(body, "SCRIPT_FILENAME=") {
		t.Errorf("GET /env: %v\n%s", err, body)
	}
}

// TestSpawnSystemd: with --systemd the app gets the socket as fd 3 with
// LISTEN_PID equal to its own PID, and -n 2 starts two processes.
func TestSpawnSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	spawn, _ := startFcgi(t, "spawn", "--listen", "unix:"+sock, "-n", "2", "--systemd", "--", fcgiBin, "demo-app")
	waitDial(t, sock)
	res := runFcgi(t, nil, "values", "unix:"+sock)
	if res.code != 0 || !strings.Contains(res.stdout, "FCGI_MPXS_CONNS=1") {
		t.Fatalf("values through the systemd-style socket: exit %d", res.code)
	}
	waitChildren(t, spawn.Process.Pid, 2)
}

// waitChildren waits until ppid has n live children and returns them.
func waitChildren(t *testing.T, ppid, n int) []int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		kids := childrenOf(ppid)
		if len(kids) == n {
			return kids
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has children %v, want %d", ppid, kids, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitOutput waits until out holds s.
func waitOutput(t *testing.T, out *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output:\n%s", s, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// childrenOf lists the live children of ppid.
func childrenOf(ppid int) []int {
	var kids []int
	for _, pid := range allPIDs() {
		if st := procStat(pid); len(st) > 1 && st[0] != "Z" && st[1] == strconv.Itoa(ppid) {
			kids = append(kids, pid)
		}
	}
	return kids
}

// TestSpawnRollingRestart: SIGHUP replaces every process, one at a time,
// while requests keep being answered.
func TestSpawnRollingRestart(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	spawn, out := startFcgi(t, "spawn", "--listen", "unix:"+sock, "-n", "2", "--", fcgiBin, "demo-app")
	waitDial(t, sock)
	old := waitChildren(t, spawn.Process.Pid, 2)

	c := &fcgi.Client{Addr: "unix:" + sock}
	defer c.Close()
	stop := make(chan struct{})
	var failures, answered atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := c.Do(context.Background(), &fcgi.Request{Params: map[string]string{"REQUEST_METHOD": "GET", "REQUEST_URI": "/pid", "SCRIPT_NAME": "/pid"}})
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err != nil {
				failures.Add(1)
				t.Logf("during the restart: %v", err)
			} else {
				answered.Add(1)
			}
		}
	})
	time.Sleep(50 * time.Millisecond)
	spawn.Process.Signal(syscall.SIGHUP)
	waitOutput(t, out, "all processes restarted")
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	kids := childrenOf(spawn.Process.Pid)
	if len(kids) != 2 || slices.Contains(kids, old[0]) || slices.Contains(kids, old[1]) {
		t.Fatalf("children %v after SIGHUP, were %v", kids, old)
	}
	if failures.Load() != 0 || answered.Load() == 0 {
		t.Fatalf("%d requests failed, %d answered during the rolling restart", failures.Load(), answered.Load())
	}
}

// TestSpawnRollingRestartStopsOnBadBuild: a replacement that exits at once
// (a broken build) stops the rolling restart; the other process is left
// running, untouched.
func TestSpawnRollingRestartStopsOnBadBuild(t *testing.T) {
	dir := t.TempDir()
	sock, broken := filepath.Join(dir, "app.sock"), filepath.Join(dir, "broken")
	script := "if [ -e " + broken + " ]; then exit 3; fi; exec " + fcgiBin + " demo-app"
	spawn, out := startFcgi(t, "spawn", "--listen", "unix:"+sock, "-n", "2", "--min-backoff", "50ms", "--", "/bin/sh", "-c", script)
	waitDial(t, sock)
	before := waitChildren(t, spawn.Process.Pid, 2)
	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	spawn.Process.Signal(syscall.SIGHUP)
	waitOutput(t, out, "rolling restart stopped")
	kids := childrenOf(spawn.Process.Pid)
	survivors := 0
	for _, pid := range before {
		if slices.Contains(kids, pid) {
			survivors++
		}
	}
	if survivors != 1 {
		t.Fatalf("children %v after the failed roll, were %v: want exactly one of the old ones left running", kids, before)
	}
	if strings.Contains(out.String(), "all processes restarted") {
		t.Fatal("the roll reported success")
	}
}

// TestSpawnHangupDuringShutdown: a SIGHUP while spawn waits --grace for
// its processes after SIGTERM does not kill spawn, which goes on to stop
// them (SIGKILL at the end of the grace).
func TestSpawnHangupDuringShutdown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	spawn, out := startFcgi(t, "spawn", "--listen", "unix:"+sock, "-n", "1", "--grace", "1s", "--",
		"/bin/sh", "-c", "trap '' TERM; while :; do sleep 0.05; done")
	kids := waitChildren(t, spawn.Process.Pid, 1)
	// Runs before startFcgi's cleanup, which waits for the output pipe
	// an orphan would hold open: a failure must not hang the test.
	t.Cleanup(func() {
		for _, pid := range kids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	spawn.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	spawn.Process.Signal(syscall.SIGHUP)
	waitOutput(t, out, "grace period over: killing")
	for _, pid := range append(kids, spawn.Process.Pid) {
		for i := 0; processAlive(pid) && i < 250; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if processAlive(pid) {
			t.Errorf("process %d outlived spawn's shutdown", pid)
		}
	}
}

// TestSpawnKillsProcessGroup: a process's children go with it, even one
// that ignores SIGTERM: at the end of the grace on shutdown, when the
// process stops on SIGTERM within the grace, when a rolling restart
// replaces the process, and when the process exits by itself (its orphans
// would otherwise keep accepting on the socket).
func TestSpawnKillsProcessGroup(t *testing.T) {
	for _, tc := range []struct {
		name      string
		exitFirst bool // the first process exits at once, leaving its child
		stops     bool // the process exits on SIGTERM, leaving its child
		act       func(t *testing.T, spawn *os.Process, out *syncBuffer)
		alive     int // grandchildren that must still run: the last ones
	}{
		{name: "shutdown", act: func(t *testing.T, spawn *os.Process, out *syncBuffer) {
			spawn.Signal(syscall.SIGTERM)
			waitOutput(t, out, "grace period over: killing")
			waitGone(t, spawn.Pid)
		}},
		{name: "graceful stop", stops: true, act: func(t *testing.T, spawn *os.Process, out *syncBuffer) {
			spawn.Signal(syscall.SIGTERM)
			waitOutput(t, out, "stopped")
			waitGone(t, spawn.Pid)
		}},
		{name: "rolling restart", alive: 1, act: func(t *testing.T, spawn *os.Process, out *syncBuffer) {
			spawn.Signal(syscall.SIGHUP)
			waitOutput(t, out, "all processes restarted")
		}},
		{name: "exit", exitFirst: true, alive: 1, act: func(t *testing.T, spawn *os.Process, out *syncBuffer) {
			waitOutput(t, out, "process exited")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sock, pidfile := filepath.Join(dir, "app.sock"), filepath.Join(dir, "pids")
			script := "first=; [ -e " + pidfile + " ] || first=1\n" +
				"trap '' TERM\nsleep 1000 &\necho $! >> " + pidfile + "\n"
			if tc.exitFirst {
				script += "[ -n \"$first\" ] && exit 3\n"
			}
			if tc.stops {
				script += "trap 'exit 0' TERM\n"
			}
			script += "wait\n"
			spawn, out := startFcgi(t, "spawn", "--listen", "unix:"+sock, "--grace", "1s", "--min-backoff", "50ms", "--", "/bin/sh", "-c", script)
			// Runs before startFcgi's cleanup, which waits for the
			// output pipe an orphan holds open: a failure must not
			// hang the test, nor leave a process behind.
			t.Cleanup(func() {
				for _, pid := range grandchildren(pidfile) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			waitGrandchildren(t, pidfile, 1)
			tc.act(t, spawn.Process, out)
			pids := waitGrandchildren(t, pidfile, 1+tc.alive)
			dead, alive := pids[:len(pids)-tc.alive], pids[len(pids)-tc.alive:]
			waitGone(t, dead...)
			for _, pid := range alive {
				if !processAlive(pid) {
					t.Errorf("grandchild %d of the running process is gone", pid)
				}
			}
		})
	}
}

// grandchildren reads the PIDs the test's processes recorded in pidfile.
func grandchildren(pidfile string) []int {
	b, _ := os.ReadFile(pidfile)
	var pids []int
	for line := range strings.Lines(string(b)) {
		if pid, err := strconv.Atoi(strings.TrimSuffix(line, "\n")); err == nil && strings.HasSuffix(line, "\n") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGrandchildren waits until pidfile holds n PIDs and returns them.
func waitGrandchildren(t *testing.T, pidfile string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := grandchildren(pidfile)
		if len(pids) >= n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d grandchildren recorded, want %d", len(pids), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSpawnSecondSignal: a second SIGTERM during the grace ends it at
// once: spawn kills its processes' groups, children's children and all,
// before it exits, rather than die and leave them.
func TestSpawnSecondSignal(t *testing.T) {
	dir := t.TempDir()
	sock, pidfile := filepath.Join(dir, "app.sock"), filepath.Join(dir, "pids")
	script := "trap '' TERM\nsleep 1000 &\necho $! >> " + pidfile + "\nwait\n"
	var kids []int
	spawn, out, done := startFcgiOrphans(t, func() []int { return append(kids, grandchildren(pidfile)...) },
		"spawn", "--listen", "unix:"+sock, "--grace", "5m", "--", "/bin/sh", "-c", script)
	kids = waitChildren(t, spawn.Process.Pid, 1)
	pids := waitGrandchildren(t, pidfile, 1)
	stopTwice(t, spawn, out, done)
	waitGone(t, append(pids, kids...)...)
}

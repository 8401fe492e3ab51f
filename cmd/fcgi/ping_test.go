package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

// TestPingStatusPHPFPM: alive, busy and dead are told apart; thresholds
// fail a readiness check only when asked.
func TestPingStatusPHPFPM(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	fpm.WriteFile("sleep.php", "<?php sleep(4); echo 'done';")

	res := runFcgi(t, nil, "ping", fpm.Addr())
	if res.code != 0 || res.stdout != "pong\n" {
		t.Fatalf("alive: exit %d, %q", res.code, res.stdout)
	}
	res = runFcgi(t, nil, "ping", "--expect", "pang", fpm.Addr())
	if res.code != exitFail {
		t.Errorf("wrong answer: exit %d, want 1", res.code)
	}
	// A path the pool does not serve, as with ping.path or
	// pm.status_path unset, is PHP-FPM's 404 "File not found.": the
	// message names the setting to check.
	res = runFcgi(t, nil, "ping", "--path", "/unset", fpm.Addr())
	if res.code != exitFail || !strings.Contains(res.stderr, "ping.path = /unset") {
		t.Errorf("ping of a path the pool does not serve: exit %d, stderr %q; want 1 naming ping.path", res.code, res.stderr)
	}
	res = runFcgi(t, nil, "status", "--path", "/unset", fpm.Addr())
	if res.code != exitFail || !strings.Contains(res.stderr, "pm.status_path = /unset") {
		t.Errorf("status of a path the pool does not serve: exit %d, stderr %q; want 1 naming pm.status_path", res.code, res.stderr)
	}
	// PHP-FPM counts no listen queue on a unix socket: the threshold
	// could never fail, which the command says.
	res = runFcgi(t, nil, "status", "--max-listen-queue", "10", fpm.Addr())
	if res.code != 0 || !strings.Contains(res.stderr, "--max-listen-queue cannot fail") {
		t.Errorf("--max-listen-queue on a unix socket pool: exit %d, stderr %q; want 0 and a warning", res.code, res.stderr)
	}
	res = runFcgi(t, nil, "status", "--format", "json", fpm.Addr())
	if res.code != 0 || !strings.Contains(res.stdout, `"idle processes"`) {
		t.Errorf("status json: exit %d", res.code)
	}
	res = runFcgi(t, nil, "status", "--format", "openmetrics", fpm.Addr())
	if res.code != 0 || !strings.Contains(res.stdout, "phpfpm_") {
		t.Errorf("status openmetrics: exit %d", res.code)
	}
	// The status request itself takes the only worker: no idle one.
	res = runFcgi(t, nil, "status", "--min-idle", "1", fpm.Addr())
	if res.code != exitFail || !strings.Contains(res.stderr, "idle processes 0 < 1") {
		t.Errorf("--min-idle 1 with one worker: exit %d", res.code)
	}

	// Busy: the only worker sleeps, the probe waits in the listen queue.
	c, err := dialRaw(t.Context(), fpm.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rp := requestParams{target: "/sleep.php", root: fpm.Root(), body: -1}
	kv, _ := rp.pairs()
	c.WriteRequest(1, wire.RoleResponder, false, encodePairs(kv), nil)
	c.W.Flush()
	time.Sleep(200 * time.Millisecond)
	res = runFcgi(t, nil, "ping", "--timeout", "500ms", fpm.Addr())
	if res.code != exitBusy {
		t.Errorf("busy: exit %d, want 5", res.code)
	}
	res = runFcgi(t, nil, "ping", "--busy-ok", "--timeout", "500ms", fpm.Addr())
	if res.code != 0 {
		t.Errorf("busy with --busy-ok: exit %d, want 0", res.code)
	}
	res = runFcgi(t, nil, "status", "--timeout", "500ms", fpm.Addr())
	if res.code != exitBusy {
		t.Errorf("status while busy: exit %d, want 5", res.code)
	}
}

func TestPingDead(t *testing.T) {
	dir := t.TempDir()
	res := runFcgi(t, nil, "ping", "unix:"+filepath.Join(dir, "none.sock"))
	if res.code != exitUnreachable {
		t.Errorf("no socket: exit %d, want 3", res.code)
	}
	// A socket file whose server died: connection refused, also dead.
	sock := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	res = runFcgi(t, nil, "ping", "unix:"+sock)
	if res.code != exitUnreachable {
		t.Errorf("stale socket: exit %d, want 3", res.code)
	}
}

package main

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

func TestValuesFcgikit(t *testing.T) {
	addr := startServer(t, http.NotFoundHandler())
	res := runFcgi(t, nil, "values", addr)
	if res.code != 0 {
		t.Fatalf("exit %d", res.code)
	}
	want := "FCGI_MAX_CONNS=10000\nFCGI_MAX_REQS=10000\nFCGI_MPXS_CONNS=1\n"
	if res.stdout != want {
		t.Errorf("stdout = %q, want %q", res.stdout, want)
	}
	res = runFcgi(t, nil, "values", "--json", addr, "FCGI_MPXS_CONNS")
	if res.code != 0 || strings.Join(strings.Fields(res.stdout), "") != `{"FCGI_MPXS_CONNS":"1"}` {
		t.Errorf("--json: exit %d, stdout %q", res.code, res.stdout)
	}
}

// TestValuesPHPFPM: PHP-FPM answers only FCGI_MPXS_CONNS and closes the
// connection; both are fine.
func TestValuesPHPFPM(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	res := runFcgi(t, nil, "values", fpm.Addr())
	if res.code != 0 || !strings.Contains(res.stdout, "FCGI_MPXS_CONNS=0") {
		t.Fatalf("exit %d, stdout %q", res.code, res.stdout)
	}
}

// TestValuesNoAnswer: an application that accepts but never answers gives
// a timeout error and exit status 5, busy, after --timeout, not before:
// PHP-FPM answers FCGI_GET_VALUES from a worker, so a saturated pool is
// just this, and is not dead.
func TestValuesNoAnswer(t *testing.T) {
	// Accepts, reads nothing, answers nothing.
	sock := rawServer(t, func(nc net.Conn) { io.Copy(io.Discard, nc) })
	start := time.Now()
	res := runFcgi(t, nil, "values", "--timeout", "300ms", sock)
	if res.code != exitBusy || !strings.Contains(res.stderr, "no answer in time") || !strings.Contains(res.stderr, "busy") {
		t.Errorf("exit %d, stderr %q; want exit 5 and a timeout error saying busy", res.code, res.stderr)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 10*time.Second {
		t.Errorf("took %v with --timeout 300ms", el)
	}
}

func TestValuesUnreachable(t *testing.T) {
	res := runFcgi(t, nil, "values", "unix:"+filepath.Join(t.TempDir(), "none.sock"))
	if res.code != exitUnreachable {
		t.Errorf("exit %d, want 3", res.code)
	}
	res = runFcgi(t, nil, "values")
	if res.code != exitUsage {
		t.Errorf("no ADDR: exit %d, want 2", res.code)
	}
}

// TestValuesUnknownType: an application that answers GET_VALUES with
// UNKNOWN_TYPE is told at once, exit 4, not after --timeout.
func TestValuesUnknownType(t *testing.T) {
	sock := rawServer(t, func(nc net.Conn) {
		r, w := wire.NewReader(nc), wire.NewWriter(nc)
		defer r.Release()
		for {
			rec, err := r.Next()
			if err != nil {
				return
			}
			w.WriteUnknownType(rec.Type)
			w.Flush()
		}
	})
	res := runFcgi(t, nil, "values", "--timeout", "30s", sock)
	if res.code != exitProtocol || !strings.Contains(res.stderr, "UNKNOWN_TYPE") {
		t.Errorf("exit %d, stderr %q; want 4", res.code, res.stderr)
	}
}

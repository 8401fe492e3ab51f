package fcgi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
)

// Scaffolding shared by the tests that put a real web server or client
// (interop_*_test.go) in front of the server.

// interopApp is a fcgikit Server on a real listener with counters of its
// connections, for tests that put a real web server in front of it.
type interopApp struct {
	srv  *fcgi.Server
	addr string // in internal/peer's format: "host:port" or "unix:/path"

	accepted atomic.Int64 // connections that reached StateNew
	closed   atomic.Int64 // connections that reached StateClosed
	warnings atomic.Int64 // WARN and ERROR lines in the server's log

	// slowStarted receives when a /slow handler starts; cancelled, when
	// its context ends.
	slowStarted chan struct{}
	cancelled   chan slowResult
	// sseRelease lets the /sse/ handler send its second event.
	sseRelease chan struct{}
}

type slowResult struct {
	at    time.Time
	cause error
}

// countingWriter copies the server's log into t.Log and counts the lines
// at level WARN or above.
type countingWriter struct {
	t *testing.T
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	s := string(p)
	if strings.Contains(s, "level=WARN") || strings.Contains(s, "level=ERROR") {
		w.n.Add(1)
	}
	w.t.Log(strings.TrimRight(s, "\n"))
	return len(p), nil
}

// startInteropApp serves the interop handlers on network ("tcp" or
// "unix"). The server is closed when t ends.
func startInteropApp(t *testing.T, network string) *interopApp {
	t.Helper()
	app := &interopApp{
		slowStarted: make(chan struct{}, 1),
		cancelled:   make(chan slowResult, 1),
		sseRelease:  make(chan struct{}),
	}
	var (
		l   net.Listener
		err error
	)
	if network == "unix" {
		path := filepath.Join(peer.TempDir(t), "app.sock")
		l, err = net.Listen("unix", path)
		app.addr = "unix:" + path
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			app.addr = l.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	app.srv = &fcgi.Server{
		Handler:  app.handler(),
		ErrorLog: slog.New(slog.NewTextHandler(countingWriter{t, &app.warnings}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ConnState: func(_ net.Conn, st fcgi.ConnState) {
			switch st {
			case fcgi.StateNew:
				app.accepted.Add(1)
			case fcgi.StateClosed:
				app.closed.Add(1)
			}
		},
	}
	done := make(chan error, 1)
	go func() { done <- app.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := app.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
			app.srv.Close()
		}
		if err := <-done; !errors.Is(err, fcgi.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return app
}

// fidelity is what /info reports about the request it got.
type fidelity struct {
	Method, RequestURI, Path, RawQuery, Host, RemoteAddr string
	Custom                                               string
	Query                                                map[string][]string
	Env                                                  map[string]string
}

func (app *interopApp) handler() http.Handler {
	mux := http.NewServeMux()
	// Everything not matched below echoes its path and query.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path+"|"+r.URL.RawQuery)
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		// Behind nginx the body must be read before the first write.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})
	mux.HandleFunc("/ignore", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "not read")
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		app.slowStarted <- struct{}{}
		select {
		case <-r.Context().Done():
			app.cancelled <- slowResult{time.Now(), context.Cause(r.Context())}
		case <-time.After(10 * time.Second):
			io.WriteString(w, "never cancelled")
		}
	})
	mux.HandleFunc("/info/", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(fidelity{
			Method:     r.Method,
			RequestURI: r.RequestURI,
			Path:       r.URL.Path,
			RawQuery:   r.URL.RawQuery,
			Host:       r.Host,
			RemoteAddr: r.RemoteAddr,
			Custom:     r.Header.Get("X-Custom"),
			Query:      r.URL.Query(),
			Env:        fcgi.ProcessEnv(r),
		})
	})
	mux.HandleFunc("/sse/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-app.sseRelease:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: second\n\n")
	})
	// /cgi/ reports what cgi-fcgi sent, in headers and body.
	mux.HandleFunc("/cgi/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Script", fcgi.ProcessEnv(r)["SCRIPT_FILENAME"])
		h.Set("X-Custom", r.Header.Get("X-Custom"))
		h.Set("X-Remote", r.RemoteAddr)
		h.Set("X-Host", r.Host)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "%s %s length=%d body=%q", r.Method, r.RequestURI, r.ContentLength, body)
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		panic("interop test panic")
	})
	return mux
}

package fcgi_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

// FuzzServerSlots splits arbitrary bytes over up to four connections to a
// Server with a small MaxRequests, ends each of them in a way plan picks
// (FIN, reset, half-close, or left open until the others are done) and
// checks the accounting invariant afterwards: no request in flight, no
// connection open, every goroutine gone, and MaxRequests fresh requests
// served at once. A slot that any input leaks would show here, where
// FuzzServerConn looks only at what the server writes.
func FuzzServerSlots(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add(s, uint64(i)*0x9e3779b97f4a7c15)
	}
	// Half-open requests on connections that end at once.
	half := records(func(w *wire.Writer) {
		w.WriteBeginRequest(1, wire.RoleResponder, wire.FlagKeepConn)
		w.WriteBeginRequest(2, wire.RoleFilter, wire.FlagKeepConn)
		w.WriteRecord(wire.TypeParams, 2, fcgitest.Pairs("REQUEST_URI", "/f", "FCGI_DATA_LENGTH", "5"))
		w.WriteBeginRequest(3, wire.RoleAuthorizer, 0)
	})
	for _, plan := range []uint64{0, 1, 2, 0x1111, 0x2222, 0x3333, 0x0123} {
		f.Add(half, plan)
	}
	f.Fuzz(func(t *testing.T, data []byte, plan uint64) {
		const maxRequests = 3
		baseline := runtime.NumGoroutine()
		srv := &fcgi.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/block" {
					<-r.Context().Done()
					return
				}
				io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
				io.WriteString(w, r.URL.Path)
			}),
			Authorizer:    http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
			Filter:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
			MaxRequests:   maxRequests,
			MaxBodyBuffer: 4096,
			ErrorLog:      slog.New(slog.DiscardHandler),
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		defer func() {
			srv.Close()
			<-served
		}()
		addr := l.Addr().String()

		// plan's low 2 bits: how many connections (1-4); then 4 bits
		// per connection: 2 for where its share of data ends, 2 for how
		// it ends.
		n := int(plan&3) + 1
		plan >>= 2
		var wg sync.WaitGroup
		var left []net.Conn
		rest := data
		for i := range n {
			share := rest
			if i < n-1 {
				k := len(rest) * int(plan&3) / 4
				share, rest = rest[:k], rest[k:]
			}
			how := (plan >> 2) & 3
			plan >>= 4
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			// Whatever the server writes is read and dropped, so that
			// it never waits on us.
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(io.Discard, nc)
			}()
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write(share)
			switch how {
			case 0:
				nc.Close()
			case 1:
				nc.(*net.TCPConn).SetLinger(0)
				nc.Close()
			case 2:
				nc.(*net.TCPConn).CloseWrite()
				left = append(left, nc)
			default:
				left = append(left, nc)
			}
		}
		// Let the server take in what it was sent before the rest go.
		time.Sleep(time.Millisecond)
		for _, nc := range left {
			nc.Close()
		}
		wg.Wait()

		deadline := time.Now().Add(5 * time.Second)
		for {
			st := srv.Stats()
			if st.InFlight == 0 && st.Conns == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("5 s after every connection ended: %+v", st)
			}
			time.Sleep(time.Millisecond)
		}
		// The server still serves MaxRequests requests at once.
		fresh := make([]*fcgitest.Conn, maxRequests)
		for i := range fresh {
			fresh[i] = fcgitest.Dial(t, "tcp", addr)
			fresh[i].Get(1, false, "/fresh")
		}
		for i, c := range fresh {
			if r := c.ReadResponse(1); r.End.ProtocolStatus != wire.StatusRequestComplete {
				t.Fatalf("fresh request %d: protocol status %v (%+v)", i, r.End.ProtocolStatus, srv.Stats())
			}
			c.NC.Close()
		}
		srv.Close()
		<-served
		served <- nil // for the deferred receive
		for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > baseline && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > baseline {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the server closed, %d before:\n%s", g, baseline, buf[:runtime.Stack(buf, true)])
		}
	})
}

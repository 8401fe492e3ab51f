package fcgi_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

// pipeListener is a net.Listener that hands out one connection, then
// blocks until it is closed.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener(c net.Conn) *pipeListener {
	l := &pipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
	l.conns <- c
	return l
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// records builds a byte stream with the wire Writer.
func records(f func(w *wire.Writer)) []byte {
	var b bytes.Buffer
	w := wire.NewWriter(&b)
	f(w)
	if err := w.Flush(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// fuzzGet writes a whole GET request on id.
func fuzzGet(w *wire.Writer, id uint16, keepConn bool, uri string) {
	var flags uint8
	if keepConn {
		flags = wire.FlagKeepConn
	}
	w.WriteBeginRequest(id, wire.RoleResponder, flags)
	w.WriteStream(wire.TypeParams, id, fcgitest.Pairs("REQUEST_METHOD", "GET", "REQUEST_URI", uri, "SERVER_PROTOCOL", "HTTP/1.1"))
	w.WriteRecord(wire.TypeParams, id, nil)
	w.WriteRecord(wire.TypeStdin, id, nil)
}

// fuzzSeeds are readable starting points for FuzzServerConn; more, found by
// the fuzzer, live in testdata/fuzz/FuzzServerConn.
func fuzzSeeds() [][]byte {
	post := func(w *wire.Writer, id uint16, body []byte) {
		w.WriteBeginRequest(id, wire.RoleResponder, wire.FlagKeepConn)
		w.WriteStream(wire.TypeParams, id, fcgitest.Pairs("REQUEST_METHOD", "POST", "REQUEST_URI", "/post",
			"CONTENT_LENGTH", strconv.Itoa(len(body))))
		w.WriteRecord(wire.TypeParams, id, nil)
		w.WriteStream(wire.TypeStdin, id, body)
		w.WriteRecord(wire.TypeStdin, id, nil)
	}
	getValues := fcgitest.Pairs(wire.ValueMaxConns, "", wire.ValueMaxReqs, "", wire.ValueMpxsConns, "")
	return [][]byte{
		// One request, connection closed after it.
		records(func(w *wire.Writer) { fuzzGet(w, 1, false, "/a?b=c") }),
		// Two requests on a kept connection; then ID 1 begun again before
		// its END_REQUEST, which closes the connection.
		records(func(w *wire.Writer) {
			fuzzGet(w, 1, true, "/one")
			fuzzGet(w, 2, true, "/two")
		}),
		records(func(w *wire.Writer) {
			fuzzGet(w, 1, true, "/one")
			fuzzGet(w, 1, true, "/again")
		}),
		// Multiplexed requests, interleaved, with bodies.
		records(func(w *wire.Writer) {
			w.WriteBeginRequest(1, wire.RoleResponder, wire.FlagKeepConn)
			w.WriteBeginRequest(2, wire.RoleResponder, wire.FlagKeepConn)
			w.WriteStream(wire.TypeParams, 2, fcgitest.Pairs("REQUEST_METHOD", "POST", "CONTENT_LENGTH", "3"))
			w.WriteStream(wire.TypeParams, 1, fcgitest.Pairs("REQUEST_URI", "/1"))
			w.WriteRecord(wire.TypeParams, 2, nil)
			w.WriteRecord(wire.TypeParams, 1, nil)
			w.WriteRecord(wire.TypeStdin, 2, []byte("abc"))
			w.WriteRecord(wire.TypeStdin, 1, nil)
			w.WriteRecord(wire.TypeStdin, 2, nil)
		}),
		records(func(w *wire.Writer) { post(w, 7, bytes.Repeat([]byte("x"), 70000)) }),
		// Aborts: before the handler starts, and while the body streams.
		records(func(w *wire.Writer) {
			w.WriteBeginRequest(1, wire.RoleResponder, wire.FlagKeepConn)
			w.WriteRecord(wire.TypeAbortRequest, 1, nil)
			fuzzGet(w, 1, true, "/after-abort")
		}),
		records(func(w *wire.Writer) {
			w.WriteBeginRequest(3, wire.RoleResponder, wire.FlagKeepConn)
			w.WriteStream(wire.TypeParams, 3, fcgitest.Pairs("REQUEST_METHOD", "POST", "CONTENT_LENGTH", "10"))
			w.WriteRecord(wire.TypeParams, 3, nil)
			w.WriteRecord(wire.TypeStdin, 3, []byte("12345"))
			w.WriteRecord(wire.TypeAbortRequest, 3, nil)
			w.WriteRecord(wire.TypeStdin, 3, []byte("67890"))
		}),
		// Management records: GET_VALUES, an unknown type, BEGIN on ID 0.
		records(func(w *wire.Writer) {
			w.WriteRecord(wire.TypeGetValues, 0, getValues)
			w.WriteRecord(wire.Type(42), 0, nil)
			w.WriteBeginRequest(0, wire.RoleResponder, 0)
			fuzzGet(w, 1, false, "/")
		}),
		// Unknown role, duplicate BEGIN, records for IDs never begun.
		records(func(w *wire.Writer) {
			w.WriteBeginRequest(1, wire.RoleFilter, wire.FlagKeepConn)
			w.WriteRecord(wire.TypeStdin, 9, []byte("stray"))
			w.WriteBeginRequest(2, wire.RoleResponder, wire.FlagKeepConn)
			w.WriteBeginRequest(2, wire.RoleResponder, wire.FlagKeepConn)
		}),
		// Bad version, in the middle of a good stream.
		append(records(func(w *wire.Writer) { fuzzGet(w, 1, true, "/v") }), 2, 1, 0, 1, 0, 8, 0, 0),
		// Huge declared lengths: a record that never arrives, a pair longer
		// than its stream, a CONTENT_LENGTH far beyond the body.
		{1, byte(wire.TypeStdin), 0, 1, 0xff, 0xff, 0xff, 0},
		records(func(w *wire.Writer) {
			w.WriteBeginRequest(1, wire.RoleResponder, 0)
			w.WriteRecord(wire.TypeParams, 1, []byte{0xff, 0xff, 0xff, 0xff, 0x7f, 'n'})
			w.WriteRecord(wire.TypeParams, 1, nil)
		}),
		records(func(w *wire.Writer) {
			w.WriteBeginRequest(1, wire.RoleResponder, 0)
			w.WriteStream(wire.TypeParams, 1, fcgitest.Pairs("REQUEST_METHOD", "PUT", "CONTENT_LENGTH", "9223372036854775807"))
			w.WriteRecord(wire.TypeParams, 1, nil)
			w.WriteRecord(wire.TypeStdin, 1, []byte("short"))
			w.WriteRecord(wire.TypeStdin, 1, nil)
		}),
	}
}

// FuzzServerConn writes arbitrary bytes into one server connection and
// checks what comes back: well-formed version-1 records, only STDOUT,
// STDERR and END_REQUEST for request IDs the input began, no more
// END_REQUESTs for an ID than BEGIN_REQUESTs, no STDOUT after the end of
// STDOUT, and only answers to management records on ID 0. Afterwards every
// goroutine the server started must end.
func FuzzServerConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		baseline := runtime.NumGoroutine()
		var handlers atomic.Int32
		var opened, closed atomic.Int32
		srv := &fcgi.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				handlers.Add(1)
				defer handlers.Add(-1)
				n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
				w.Header().Set("X-Body", strconv.Itoa(int(n)))
				io.WriteString(w, r.URL.Path)
			}),
			ErrorLog:      slog.New(slog.DiscardHandler),
			MaxBodyBuffer: 4096,
			ConnState: func(_ net.Conn, st fcgi.ConnState) {
				switch st {
				case fcgi.StateNew:
					opened.Add(1)
				case fcgi.StateClosed:
					closed.Add(1)
				}
			},
		}
		client, server := net.Pipe()
		served := make(chan error, 1)
		go func() { served <- srv.Serve(newPipeListener(server)) }()

		// Read all the server writes, concurrently: net.Pipe is
		// unbuffered, so the server's writes wait for this reader.
		var (
			mu       sync.Mutex
			out      []byte
			lastRead = time.Now()
		)
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			buf := make([]byte, 32<<10)
			for {
				n, err := client.Read(buf)
				mu.Lock()
				out = append(out, buf[:n]...)
				lastRead = time.Now()
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()

		// The server may stop reading (protocol error, back-pressure):
		// the deadline bounds the write.
		client.SetWriteDeadline(time.Now().Add(time.Second))
		client.Write(data)

		// Wait for the server to go quiet: it closed the connection, or
		// nothing came for a while and no handler runs, or nothing came
		// for longer (a handler waits for a body that will not come).
		quiet := func() bool {
			select {
			case <-readDone:
				return true
			default:
			}
			mu.Lock()
			defer mu.Unlock()
			idle := time.Since(lastRead)
			return idle > 10*time.Millisecond && handlers.Load() == 0 || idle > 50*time.Millisecond
		}
		for deadline := time.Now().Add(time.Second); !quiet() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		client.Close()
		<-readDone
		srv.Close()
		select {
		case err := <-served:
			if !errors.Is(err, fcgi.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
		deadline := time.Now().Add(5 * time.Second)
		for (closed.Load() != opened.Load() || runtime.NumGoroutine() > baseline) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if o, c := opened.Load(), closed.Load(); o != c {
			t.Fatalf("%d connections opened, %d closed", o, c)
		}
		if n := runtime.NumGoroutine(); n > baseline {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the connection closed, %d before:\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
		}
		mu.Lock()
		defer mu.Unlock()
		checkServerOutput(t, data, out)
	})
}

// checkServerOutput checks the server's output out against its input in.
func checkServerOutput(t *testing.T, in, out []byte) {
	// What the input began, as far as it parses.
	begins := make(map[uint16]int)
	mgmt := 0 // ID-0 records that deserve an answer
	r := wire.NewReader(bytes.NewReader(in))
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		switch {
		case rec.RequestID == 0:
			if rec.Type != wire.TypeGetValuesResult && rec.Type != wire.TypeUnknownType {
				mgmt++
			}
		case rec.Type == wire.TypeBeginRequest:
			begins[rec.RequestID]++
		}
	}

	ends := make(map[uint16]int)
	stdoutEnded := make(map[uint16]bool)
	answers := 0
	r = wire.NewReader(bytes.NewReader(out))
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err == io.ErrUnexpectedEOF {
			// The client closed while a write was under way.
			break
		}
		if err != nil {
			t.Fatalf("server output: %v\noutput: %q", err, out)
		}
		id := rec.RequestID
		if id == 0 {
			switch rec.Type {
			case wire.TypeGetValuesResult:
				if err := wire.ForEachPair(rec.Content, func(_, _ []byte) bool { return true }); err != nil {
					t.Fatalf("GET_VALUES_RESULT: %v", err)
				}
			case wire.TypeUnknownType:
				if _, err := wire.ParseUnknownType(rec.Content); err != nil {
					t.Fatalf("UNKNOWN_TYPE: %v", err)
				}
			default:
				t.Fatalf("management record %v", rec.Header)
			}
			if answers++; answers > mgmt {
				t.Fatalf("%d management answers to %d questions", answers, mgmt)
			}
			continue
		}
		if begins[id] == 0 {
			t.Fatalf("record %v for a request ID never begun", rec.Header)
		}
		switch rec.Type {
		case wire.TypeStdout:
			if stdoutEnded[id] {
				t.Fatalf("STDOUT after the end of STDOUT: %v", rec.Header)
			}
			if len(rec.Content) == 0 {
				stdoutEnded[id] = true
			}
		case wire.TypeStderr:
		case wire.TypeEndRequest:
			if _, err := wire.ParseEndRequest(rec.Content); err != nil {
				t.Fatalf("END_REQUEST: %v", err)
			}
			if ends[id]++; ends[id] > begins[id] {
				t.Fatalf("%d END_REQUESTs for ID %d, begun %d times", ends[id], id, begins[id])
			}
			stdoutEnded[id] = false
		default:
			t.Fatalf("record of type %v from the server: %v", rec.Type, rec.Header)
		}
	}
}

package fcgi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

// The life of one request slot, enumerated: a request is put in each state
// it can be in, and ended each way a request can end. After every cell
// the server must have given the slot and the connection back and must
// serve as many requests at once as its MaxRequests allows: a slot that is
// never given back wedges the server for good once MaxRequests of them
// have leaked.

// lifeState puts request 1 on c in one state; started reports whether
// reaching it starts a handler (the test then waits for it to run).
type lifeState struct {
	name    string
	started bool
	// input reports that all of the request's input has arrived, so a
	// read timeout leaves it alone.
	input bool
	// writing: the handler is blocked writing to a web server that does
	// not read; only the connection's end or a write timeout frees it.
	writing bool
	put     func(c *fcgitest.Conn)
}

var lifeStates = []lifeState{
	{name: "begin", put: func(c *fcgitest.Conn) {
		c.Begin(1, wire.RoleResponder, true).Flush()
	}},
	{name: "partial-params", put: func(c *fcgitest.Conn) {
		c.Begin(1, wire.RoleResponder, true).
			Record(wire.TypeParams, 1, fcgitest.Pairs("REQUEST_METHOD", "GET", "REQUEST_URI", "/block")).Flush()
	}},
	{name: "params-no-stdin", put: func(c *fcgitest.Conn) {
		// A GET without CONTENT_LENGTH: only STDIN says whether a body
		// comes, so the handler waits for it.
		c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "GET", "REQUEST_URI", "/block").Flush()
	}},
	{name: "partial-stdin", started: true, put: func(c *fcgitest.Conn) {
		c.Begin(1, wire.RoleResponder, true).
			Params(1, "REQUEST_METHOD", "POST", "REQUEST_URI", "/body", "CONTENT_LENGTH", "10").
			Record(wire.TypeStdin, 1, []byte("abc")).Flush()
	}},
	{name: "handler-running", started: true, input: true, put: func(c *fcgitest.Conn) {
		c.Get(1, true, "/block")
	}},
	{name: "handler-writing", started: true, input: true, writing: true, put: func(c *fcgitest.Conn) {
		c.Get(1, true, "/flood")
	}},
	{name: "filter-before-stdin", put: func(c *fcgitest.Conn) {
		c.Begin(1, wire.RoleFilter, true).
			Params(1, "REQUEST_METHOD", "GET", "REQUEST_URI", "/f", "FCGI_DATA_LENGTH", "10").Flush()
	}},
	{name: "filter-data-partial", started: true, put: func(c *fcgitest.Conn) {
		c.Begin(1, wire.RoleFilter, true).
			Params(1, "REQUEST_METHOD", "GET", "REQUEST_URI", "/f", "FCGI_DATA_LENGTH", "10").
			Stdin(1, nil).Record(wire.TypeData, 1, []byte("abc")).Flush()
	}},
	{name: "authorizer-partial-params", put: func(c *fcgitest.Conn) {
		c.Begin(1, wire.RoleAuthorizer, true).
			Record(wire.TypeParams, 1, fcgitest.Pairs("REQUEST_METHOD", "GET", "REQUEST_URI", "/a")).Flush()
	}},
	{name: "authorizer-running", started: true, input: true, put: func(c *fcgitest.Conn) {
		c.Begin(1, wire.RoleAuthorizer, true).Params(1, "REQUEST_METHOD", "GET", "REQUEST_URI", "/a").Flush()
	}},
}

// lifeEnding ends request 1 (and perhaps its connection) one way.
type lifeEnding struct {
	name string
	// configure sets the server's timeouts for the ending.
	configure func(srv *fcgi.Server)
	// self reports whether the ending frees the slot by itself, without
	// the handler being released or the web server closing.
	self func(st lifeState) bool
	// end ends the request; nil for shutdown, which the test runs.
	end func(t *testing.T, c *fcgitest.Conn, srv *fcgi.Server)
	// server reports that the ending stops the server.
	server bool
}

func always(lifeState) bool { return true }

var lifeEndings = []lifeEnding{
	{name: "fin", self: always, end: func(t *testing.T, c *fcgitest.Conn, _ *fcgi.Server) {
		c.NC.Close()
	}},
	{name: "rst", self: always, end: func(t *testing.T, c *fcgitest.Conn, _ *fcgi.Server) {
		c.NC.(*net.TCPConn).SetLinger(0)
		c.NC.Close()
	}},
	{name: "abort", self: func(st lifeState) bool {
		// The response bytes already written wait on the web server.
		return !st.writing
	}, end: func(t *testing.T, c *fcgitest.Conn, _ *fcgi.Server) {
		c.Record(wire.TypeAbortRequest, 1, nil)
		c.W.Flush()
	}},
	{name: "read-timeout",
		configure: func(srv *fcgi.Server) { srv.ReadTimeout = 200 * time.Millisecond },
		self:      func(st lifeState) bool { return !st.input },
		end:       func(t *testing.T, c *fcgitest.Conn, _ *fcgi.Server) {},
	},
	{name: "write-timeout",
		configure: func(srv *fcgi.Server) { srv.WriteTimeout = 200 * time.Millisecond },
		self:      always,
		end: func(t *testing.T, c *fcgitest.Conn, _ *fcgi.Server) {
			// A second request floods a web server that does not
			// read: its write times out and closes the connection
			// (which request 1 may have done already).
			fuzzGet(c.W, 2, true, "/flood")
			c.W.Flush()
		},
	},
	{name: "duplicate-begin", self: always, end: func(t *testing.T, c *fcgitest.Conn, _ *fcgi.Server) {
		c.Begin(1, wire.RoleResponder, true)
		c.W.Flush()
	}},
	{name: "malformed-record", self: always, end: func(t *testing.T, c *fcgitest.Conn, _ *fcgi.Server) {
		c.NC.Write([]byte{9, 9, 9, 9, 9, 9, 9, 9}) // version 9
	}},
	{name: "shutdown", server: true,
		// A request whose handler has not started has nothing to finish.
		self: func(st lifeState) bool { return !st.started },
	},
	{name: "close", server: true, self: always, end: func(t *testing.T, c *fcgitest.Conn, srv *fcgi.Server) {
		srv.Close()
	}},
}

// lifeHandlers are the handlers of the enumeration: each says it runs,
// then waits for its request's end or for release.
type lifeHandlers struct {
	running chan string
	release chan struct{}
	once    sync.Once
}

func newLifeHandlers() *lifeHandlers {
	return &lifeHandlers{running: make(chan string, 16), release: make(chan struct{})}
}

func (h *lifeHandlers) free() { h.once.Do(func() { close(h.release) }) }

func (h *lifeHandlers) wait(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-h.release:
	}
}

func (h *lifeHandlers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.running <- r.URL.Path
	switch r.URL.Path {
	case "/body":
		// A body that fails (timeout, abort, close) ends the handler.
		io.Copy(io.Discard, r.Body)
		return
	case "/flood":
		chunk := make([]byte, 64<<10)
		for {
			select {
			case <-h.release:
				return
			default:
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	case "/f":
		if d, ok := fcgi.FilterDataOf(r); ok {
			io.Copy(io.Discard, d)
		}
		return
	case "/ok":
		io.WriteString(w, "ok")
		return
	}
	h.wait(r)
}

func TestRequestSlotEveryStateEveryEnding(t *testing.T) {
	for _, st := range lifeStates {
		for _, end := range lifeEndings {
			t.Run(st.name+"/"+end.name, func(t *testing.T) {
				t.Parallel()
				testLifeCell(t, st, end)
			})
		}
	}
}

func testLifeCell(t *testing.T, st lifeState, end lifeEnding) {
	const maxRequests = 2
	h := newLifeHandlers()
	defer h.free()
	srv := &fcgi.Server{
		MaxRequests: maxRequests,
		Authorizer:  h,
		Filter:      h,
		ErrorLog:    quietLog,
	}
	if end.configure != nil {
		end.configure(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Handler = h
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Close()
		<-served
	}()
	addr := l.Addr().String()

	c := fcgitest.Dial(t, "tcp", addr)
	st.put(c)
	if st.started {
		select {
		case <-h.running:
		case <-time.After(10 * time.Second):
			t.Fatal("handler did not start")
		}
	}
	if !st.started {
		waitFor(t, func() bool { return srv.Stats().InFlight == 1 })
	}

	shutdown := make(chan error, 1)
	if end.name == "shutdown" {
		go func() { shutdown <- srv.Shutdown(context.Background()) }()
	} else {
		end.end(t, c, srv)
	}
	if end.self(st) {
		waitForMsg(t, "the request's slot to come back by itself", func() bool { return srv.Stats().InFlight == 0 })
	}
	// Whatever is left ends as the web server and the handler end it.
	h.free()
	c.NC.Close()
	waitForMsg(t, "every slot to come back", func() bool { return srv.Stats().InFlight == 0 })
	if end.server {
		if end.name == "shutdown" {
			select {
			case err := <-shutdown:
				if err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown did not return")
			}
		}
		waitForMsg(t, "every connection to close", func() bool { return srv.Stats().Conns == 0 })
		return
	}
	waitForMsg(t, "every connection to close", func() bool { return srv.Stats().Conns == 0 })

	// The server still serves as many requests at once as it allows.
	conns := make([]*fcgitest.Conn, maxRequests)
	for i := range conns {
		conns[i] = fcgitest.Dial(t, "tcp", addr)
		conns[i].Get(1, true, "/ok")
	}
	for i, fc := range conns {
		resp := fc.ReadResponse(1)
		if resp.End.ProtocolStatus != wire.StatusRequestComplete {
			t.Fatalf("fresh request %d after the ending: protocol status %v (stats %+v)", i, resp.End.ProtocolStatus, srv.Stats())
		}
		fc.NC.Close()
	}
	waitForMsg(t, "the fresh requests' slots to come back", func() bool {
		s := srv.Stats()
		return s.InFlight == 0 && s.Conns == 0
	})
}

// A web server that sends its next request the moment it reads the last
// one's END_REQUEST finds the slot free: it is given back before the
// END_REQUEST is written, as the request ID is.
func TestSlotFreeBeforeEndRequest(t *testing.T) {
	srv := &fcgi.Server{MaxRequests: 1, ErrorLog: quietLog}
	c := dial(t, "tcp", startServer(t, "tcp", srv, http.HandlerFunc(hello)))
	overloaded := 0
	const n = 500
	for range n {
		c.Get(1, true, "/")
		if r := c.ReadResponse(1); r.End.ProtocolStatus != wire.StatusRequestComplete {
			overloaded++
		}
	}
	if overloaded > 0 {
		t.Fatalf("%d of %d strictly sequential requests refused with MaxRequests 1", overloaded, n)
	}
}

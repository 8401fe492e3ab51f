package fcgi

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgikit/fcgi/internal/defaults"
)

// A Server serves FastCGI requests from web servers, passing each to an
// http.Handler. The zero value, with a Handler, is a valid configuration.
//
// A Server multiplexes: any number of requests may be in flight on one
// connection, each served on its own goroutine, and request IDs are reused as
// soon as their END_REQUEST is sent. The connection's reader never waits for
// a handler, so a slow handler does not delay other requests, aborts or
// management records on its connection (see MaxBodyBuffer for the one
// exception).
//
// Every limit and timeout follows one rule: zero means the default its field
// states, a negative value no limit.
//
// A Server must not be copied after first use.
type Server struct {
	// Handler is invoked for each request in the Responder role. Nil means
	// http.DefaultServeMux.
	Handler http.Handler

	// Authorizer, if not nil, is invoked for each request in the Authorizer
	// role; nil refuses them with FCGI_UNKNOWN_ROLE. See SetVariable for how
	// it allows or denies a request.
	Authorizer http.Handler

	// Filter, if not nil, is invoked for each request in the Filter role; nil
	// refuses them with FCGI_UNKNOWN_ROLE. See FilterDataOf for the file it
	// filters.
	Filter http.Handler

	// MaxConns is the most connections served at once, over all the
	// listeners being served; above it each listener holds the one
	// connection it has just accepted, unserved, and accepts no more, so new
	// connections wait in the kernel's backlog.
	// It is reported to web servers as FCGI_MAX_CONNS. Zero means 10000;
	// negative, no limit (and FCGI_MAX_CONNS is not reported).
	MaxConns int

	// MaxRequests is the most requests in flight at once, over all
	// connections, reported as FCGI_MAX_REQS; requests beyond it are refused
	// with FCGI_OVERLOADED. A request's slot is free before its END_REQUEST
	// leaves, so the web server's next request finds it free. Zero means
	// 10000; negative, no limit (and FCGI_MAX_REQS is not reported).
	MaxRequests int

	// MaxRequestsPerConn is the most requests in flight on one connection.
	// Requests beyond it are refused with FCGI_CANT_MPX_CONN when it is 1
	// (FCGI_MPXS_CONNS is then reported as 0) and with FCGI_OVERLOADED
	// otherwise. Zero means 1000; negative, no limit but the 65535 request
	// IDs.
	MaxRequestsPerConn int

	// MaxParamsBytes limits the size of one request's PARAMS stream (the CGI
	// variables, headers included), each HTTP_ variable counting 112 bytes
	// more, about what holding it as a header costs: the limit bounds the
	// memory a request holds, however its variables are cut. A request over
	// it is answered with status 431 without calling the handler. Zero means
	// 1 MiB, more than nginx, Apache or HAProxy can send; negative, no
	// limit.
	MaxParamsBytes int

	// MaxBodyBuffer is how many bytes of a request body (or of a Filter's
	// FCGI_DATA) the connection holds for a handler that has not read them.
	// When it is full, the connection stops reading until the handler reads
	// or returns, which on a multiplexed connection delays its other
	// requests: FastCGI has no flow control. Meanwhile no abort or close of
	// the web server's is seen, so the wait ends at the request's
	// ReadTimeout too, and its body then fails with ErrReadTimeout. Zero
	// means 1 MiB; negative, no limit. Beyond MaxBufferedBytes it is 64 KiB.
	MaxBodyBuffer int

	// MaxBufferedBytes bounds the request input the server holds over all
	// connections: the PARAMS of every request in flight (counted as
	// MaxParamsBytes counts them) and the buffers of the bodies and
	// FCGI_DATA that their handlers have not read yet. Without it a web
	// server that multiplexes could make the server hold MaxRequests times
	// MaxParamsBytes and MaxBodyBuffer. Beyond it, a request whose PARAMS
	// would not fit is refused with FCGI_OVERLOADED, as beyond MaxRequests,
	// and each body buffer holds 64 KiB at most instead of MaxBodyBuffer:
	// its connection then waits for that request's handler alone, as when
	// its buffer is full, never for other requests to give room back.
	// Stats.Buffered is what it holds now. Zero means 64 MiB; negative, no
	// limit.
	MaxBufferedBytes int

	// MaxRequestBodyBytes limits the size of a request body. A request whose
	// CONTENT_LENGTH is larger is answered with status 413 without calling
	// the handler; a body that comes without CONTENT_LENGTH fails, when read
	// past the limit, with an *http.MaxBytesError, as with
	// http.MaxBytesReader. Zero and negative mean no limit.
	MaxRequestBodyBytes int64

	// ReadTimeout bounds how long a request's PARAMS, STDIN and DATA streams
	// may take to arrive, counted from its BEGIN_REQUEST. A request whose
	// handler has not started by then gets status 408; a started one sees
	// its body fail with ErrReadTimeout. Web servers send a request at once,
	// so this ends only stalled or hostile peers. Zero means 1 minute;
	// negative, no limit.
	ReadTimeout time.Duration

	// WriteTimeout bounds each write to the web server, not the whole
	// response: a web server that stops reading for this long has its
	// connection closed, and the handlers writing to it see ErrConnClosed. A
	// write may get as little as half of it. Zero means 1 minute; negative,
	// no limit.
	WriteTimeout time.Duration

	// IdleTimeout is how long a kept connection with no request in flight
	// stays open. Zero means 2 minutes, longer than nginx's upstream
	// keepalive_timeout, so that nginx, which knows when it will reuse a
	// connection, is the one that closes it; negative, no limit.
	IdleTimeout time.Duration

	// WebServerAddrs lists the addresses TCP connections are accepted from;
	// others are closed at once (§3.2). Empty means those of the
	// FCGI_WEB_SERVER_ADDRS environment variable (see ParseWebServerAddrs),
	// and any address when it is not set. Unix sockets are not checked.
	WebServerAddrs []netip.Prefix

	// SocketMode is the permission bits (0777 at most) of a unix socket that
	// ListenAndServe creates, as PHP-FPM's listen.mode. Zero means 0660: the
	// owner and the group may connect (connecting takes write permission),
	// whatever the umask. See ListenConfig; Serve leaves the listener it is
	// given as it is.
	SocketMode os.FileMode

	// SocketOwner is the user owning that socket, as listen.owner: a name or
	// a numeric ID. Empty means the process's user. Changing it takes root.
	SocketOwner string

	// SocketGroup is the group of that socket, as listen.group: a name or a
	// numeric ID. Empty means the process's group. A web server whose workers
	// run as another user (nginx's as www-data on Debian) can connect once
	// this is their group, with the default mode.
	SocketGroup string

	// ErrorLog receives protocol errors, handler panics and accept errors.
	// Nil means slog.Default().
	ErrorLog *slog.Logger

	// BaseContext optionally returns the base context for requests on the
	// listener l; it must not return nil. Nil means context.Background().
	BaseContext func(l net.Listener) context.Context

	// ConnContext optionally derives the context of a new connection from the
	// base context; requests' contexts derive from it. It must not return
	// nil.
	ConnContext func(ctx context.Context, c net.Conn) context.Context

	// ConnState, if not nil, is called when a connection changes state. It is
	// called with the connection's lock held, so that calls for one
	// connection come in order: it must return quickly.
	ConnState func(net.Conn, ConnState)

	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[*conn]struct{}
	inShutdown atomic.Bool
	closing    chan struct{} // closed by Shutdown and Close
	connsDone  chan struct{} // closed when conns is empty during shutdown
	requests   atomic.Int64  // in flight, over all connections
	buffered   atomic.Int64  // bytes of request input held (MaxBufferedBytes)
	// connSlots bounds the connections served at once over every listener
	// (MaxConns): with the semaphore full, each Serve holds the one
	// connection it has just accepted and accepts no more, leaving the
	// others to the kernel's backlog. Made by the first Serve under mu,
	// then only sent to and received from.
	connSlots chan struct{}
	peersOnce sync.Once
	peers     []netip.Prefix
	peersErr  error
	stats     serverStats
}

// Stats are counters of a Server's activity since it started, for a program
// to export (with expvar, say). Reading them is cheap; the server keeps them
// whether or not anybody reads.
type Stats struct {
	Conns          int64 // connections open now
	ConnsAccepted  int64 // connections accepted
	ConnsRefused   int64 // connections closed because of WebServerAddrs
	InFlight       int64 // requests in flight now
	Requests       int64 // requests begun, refused ones included
	Aborted        int64 // requests aborted by ABORT_REQUEST or a closed connection
	Overloaded     int64 // requests refused by MaxRequests, MaxRequestsPerConn or MaxBufferedBytes
	Panics         int64 // handlers that panicked
	ProtocolErrors int64 // connections closed because the web server broke the protocol
	Timeouts       int64 // read, write and idle timeouts
	Buffered       int64 // bytes of request input held now, as MaxBufferedBytes counts them
}

type serverStats struct {
	connsAccepted, connsRefused, requests, aborted, overloaded, panics, protocolErrors, timeouts atomic.Int64
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	conns := int64(len(s.conns))
	s.mu.Unlock()
	st := &s.stats
	return Stats{
		Conns:          conns,
		ConnsAccepted:  st.connsAccepted.Load(),
		ConnsRefused:   st.connsRefused.Load(),
		InFlight:       s.requests.Load(),
		Requests:       st.requests.Load(),
		Aborted:        st.aborted.Load(),
		Overloaded:     st.overloaded.Load(),
		Panics:         st.panics.Load(),
		ProtocolErrors: st.protocolErrors.Load(),
		Timeouts:       st.timeouts.Load(),
		Buffered:       s.buffered.Load(),
	}
}

// ConnState is the state of a connection, reported to Server.ConnState.
type ConnState int

const (
	// StateNew is a connection just accepted. It moves to StateActive or
	// StateClosed.
	StateNew ConnState = iota
	// StateActive is a connection with at least one request in flight. On a
	// multiplexed connection it says nothing about how many. It moves to
	// StateIdle or StateClosed; a connection closing after its last request
	// stays active while it waits, briefly, for the web server to close its
	// end (see Server.Shutdown).
	StateActive
	// StateIdle is a connection kept open between requests (KEEP_CONN). It
	// moves to StateActive or StateClosed.
	StateIdle
	// StateClosed is a closed connection. It is terminal.
	StateClosed
)

var stateNames = [...]string{StateNew: "new", StateActive: "active", StateIdle: "idle", StateClosed: "closed"}

// String returns the state's name: new, active, idle or closed.
func (s ConnState) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "ConnState(" + strconv.Itoa(int(s)) + ")"
}

// durationOrDefault resolves a timeout by the rule of every Server, Client
// and Gateway field: zero means def, a negative value none, which it returns
// as 0.
func durationOrDefault(d, def time.Duration) time.Duration {
	switch {
	case d > 0:
		return d
	case d < 0:
		return 0
	}
	return def
}

// limitOrDefault resolves a limit by the same rule: zero means def, a
// negative value none, which it returns as math.MaxInt.
func limitOrDefault(v, def int) int {
	switch {
	case v > 0:
		return v
	case v < 0:
		return math.MaxInt
	}
	return def
}

func (s *Server) readTimeout() time.Duration {
	return durationOrDefault(s.ReadTimeout, defaults.ServerReadTimeout)
}
func (s *Server) writeTimeout() time.Duration {
	return durationOrDefault(s.WriteTimeout, defaults.ServerWriteTimeout)
}
func (s *Server) idleTimeout() time.Duration {
	return durationOrDefault(s.IdleTimeout, defaults.ServerIdleTimeout)
}
func (s *Server) maxConns() int { return limitOrDefault(s.MaxConns, defaults.ServerMaxConns) }
func (s *Server) maxRequests() int {
	return limitOrDefault(s.MaxRequests, defaults.ServerMaxRequests)
}
func (s *Server) maxRequestsPerConn() int {
	return limitOrDefault(s.MaxRequestsPerConn, defaults.ServerMaxRequestsPerConn)
}
func (s *Server) maxParamsBytes() int {
	return limitOrDefault(s.MaxParamsBytes, defaults.ServerMaxParamsBytes)
}
func (s *Server) maxBodyBuffer() int {
	return limitOrDefault(s.MaxBodyBuffer, defaults.ServerMaxBodyBuffer)
}

func (s *Server) logger() *slog.Logger {
	if s.ErrorLog != nil {
		return s.ErrorLog
	}
	return slog.Default()
}

func (s *Server) handler() http.Handler {
	if s.Handler != nil {
		return s.Handler
	}
	return http.DefaultServeMux
}

// Serve accepts connections on l and serves FastCGI requests on each, on its
// own goroutine. A nil l means the listening socket the process was started
// with: the one systemd passes by socket activation (LISTEN_FDS), or else
// file descriptor 0, as web servers and spawn-fcgi hand it over.
//
// Temporary accept errors are retried with a back-off, as net/http does.
// Serve always returns a non-nil error and closes l. When Shutdown or Close
// is called, Serve immediately returns ErrServerClosed: make sure the program
// does not exit then, and waits instead for Shutdown to return, or the
// requests still in flight are cut off.
func (s *Server) Serve(l net.Listener) error {
	if l == nil {
		var err error
		if l, err = inheritedListener(); err != nil {
			return err
		}
	}
	if _, err := s.allowedPeers(); err != nil {
		l.Close()
		return err
	}
	l = &onceCloseListener{Listener: l}
	defer l.Close()
	if !s.trackListener(&l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)

	base := context.Background()
	if s.BaseContext != nil {
		if base = s.BaseContext(l); base == nil {
			panic("fcgi: BaseContext returned a nil context")
		}
	}
	slots := s.slots()
	var delay time.Duration
	for {
		rw, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			if isTimeout(err) || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Warn("fcgi: accept error; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if !s.peerAllowed(rw) {
			s.stats.connsRefused.Add(1)
			s.logger().Warn("fcgi: connection refused: peer not in WebServerAddrs", "remote", rw.RemoteAddr().String())
			rw.Close()
			continue
		}
		// The slot is taken after Accept, not before: a listener waiting
		// in Accept holding one would keep it from the others' connections.
		// A connection accepted at the limit waits here, as it would have
		// in the kernel's backlog.
		select {
		case slots <- struct{}{}:
		case <-s.doneChan():
			rw.Close()
			return ErrServerClosed
		}
		s.stats.connsAccepted.Add(1)
		ctx := base
		if s.ConnContext != nil {
			if ctx = s.ConnContext(ctx, rw); ctx == nil {
				panic("fcgi: ConnContext returned a nil context")
			}
		}
		c := newConn(s, rw)
		if !s.trackConn(c, true) {
			rw.Close()
			<-slots
			return ErrServerClosed
		}
		s.setState(rw, StateNew)
		// The connection's goroutine owns c and ends when the connection
		// closes; it gives back the slot.
		go func() {
			defer func() { <-slots }()
			c.serve(ctx)
		}()
	}
}

// slots returns the semaphore of MaxConns, shared by every listener.
func (s *Server) slots() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.connSlots == nil {
		s.connSlots = make(chan struct{}, s.maxConns())
	}
	return s.connSlots
}

// doneChan returns a channel closed once the server shuts down. Waiting on it
// lets Serve stop while all connection slots are taken.
func (s *Server) doneChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdownCh()
}

// shutdownCh is closed by Shutdown and Close. s.mu must be held.
func (s *Server) shutdownCh() chan struct{} {
	if s.closing == nil {
		s.closing = make(chan struct{})
	}
	return s.closing
}

// isTemporary reports the accept errors that pass by themselves: too many
// open files, a connection aborted before it was accepted.
func isTemporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// ListenAndServe listens on addr and serves FastCGI on it. An address of the
// form "unix:/path" is a unix socket (a stale socket file left by an earlier
// run is removed first, one that another server still answers on is not),
// created with SocketMode, SocketOwner and SocketGroup; anything else is a
// TCP "host:port".
//
// ListenAndServe always returns a non-nil error. When Shutdown or Close is
// called, it immediately returns ErrServerClosed: make sure the program does
// not exit then, and waits instead for Shutdown to return.
func (s *Server) ListenAndServe(addr string) error {
	if s.inShutdown.Load() {
		return ErrServerClosed
	}
	lc := ListenConfig{SocketMode: s.SocketMode, SocketOwner: s.SocketOwner, SocketGroup: s.SocketGroup}
	l, err := lc.Listen(context.Background(), addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Shutdown stops the server gracefully: it closes the listeners, closes every
// idle kept connection, and waits for the requests in flight to finish and
// their connections to close. A request whose handler has not started (its
// PARAMS, or a GET's empty STDIN, still to come) has nothing to finish: it is
// ended at once with FCGI_OVERLOADED, which tells the web server it did not
// run. A connection is closed the way that loses nothing: our end first (FIN,
// after any response still being written), then what the web server still
// sends is read and dropped until it closes its end, for at most 250 ms (2 s
// while a request body the handler left unread may still be coming). If ctx
// ends first, Shutdown returns ctx.Err() and leaves the remaining connections
// running (call Close to end them). A Server cannot be used again after
// Shutdown.
//
// When Shutdown is called, Serve and ListenAndServe immediately return
// ErrServerClosed. Make sure the program doesn't exit and waits instead for
// Shutdown to return: a main that returns when ListenAndServe does ends the
// process, and with it every request still in flight (nginx answers them
// 502).
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	err := s.closeListenersLocked()
	s.closeShutdownChLocked()
	conns := s.connsLocked()
	done := s.connsDoneLocked()
	s.mu.Unlock()
	// Outside s.mu: a connection's lock is held while ConnState runs, and a
	// ConnState callback may well call Stats, which takes s.mu.
	for _, c := range conns {
		c.shutdown()
	}
	select {
	case <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the server at once: it closes the listeners and every
// connection. Handlers in flight see their requests' contexts cancelled with
// ErrConnClosed. Close does not wait for handlers to return.
func (s *Server) Close() error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	err := s.closeListenersLocked()
	s.closeShutdownChLocked()
	conns := s.connsLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.close(ErrConnClosed)
	}
	return err
}

// connsLocked returns the connections being served. New ones are refused once
// inShutdown is set, so the list is complete for Shutdown and Close.
func (s *Server) connsLocked() []*conn {
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

func (s *Server) closeShutdownChLocked() {
	ch := s.shutdownCh()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (s *Server) closeListenersLocked() error {
	var err error
	for l := range s.listeners {
		if cerr := (*l).Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// connsDoneLocked returns a channel closed once no connection is left.
func (s *Server) connsDoneLocked() <-chan struct{} {
	if s.connsDone == nil {
		s.connsDone = make(chan struct{})
	}
	if len(s.conns) == 0 {
		select {
		case <-s.connsDone:
		default:
			close(s.connsDone)
		}
	}
	return s.connsDone
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		if s.listeners == nil {
			s.listeners = make(map[*net.Listener]struct{})
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		if s.conns == nil {
			s.conns = make(map[*conn]struct{})
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	if s.inShutdown.Load() {
		s.connsDoneLocked()
	}
	return true
}

func (s *Server) setState(c net.Conn, st ConnState) {
	if s.ConnState != nil {
		s.ConnState(c, st)
	}
}

// Serve accepts connections on l and serves FastCGI requests on each with
// handler, as net/http/fcgi.Serve does. A nil l means the listening socket on
// file descriptor 0; a nil handler means http.DefaultServeMux. It uses a
// Server with default settings; use a Server for limits, logging and graceful
// shutdown.
func Serve(l net.Listener, handler http.Handler) error {
	srv := &Server{Handler: handler}
	return srv.Serve(l)
}

// onceCloseListener makes Close idempotent, since both Serve and Shutdown
// close the listener.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

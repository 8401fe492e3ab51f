// Package fcgi implements FastCGI 1.0 for Go: the application side (a server,
// and a drop-in replacement for net/http/fcgi) and the web-server side (a
// client and an HTTP gateway).
//
// # Serving behind nginx, Apache, lighttpd, HAProxy or Caddy
//
// A Go program serves FastCGI the way it serves HTTP: with an http.Handler.
// The package-level Serve does what net/http/fcgi.Serve does; a Server adds
// limits, timeouts, logging, statistics and graceful shutdown:
//
//	mux := http.NewServeMux()
//	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
//		fmt.Fprintln(w, "hello from FastCGI")
//	})
//	srv := &fcgi.Server{Handler: mux}
//	go srv.ListenAndServe("unix:/run/app/fcgi.sock")
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
//	defer stop()
//	<-ctx.Done()
//	// ListenAndServe returns ErrServerClosed as soon as Shutdown starts:
//	// the program waits for Shutdown itself, which returns once the
//	// requests in flight are done.
//	srv.Shutdown(context.Background())
//
// A unix socket made by ListenAndServe has mode 0660 and the process's user
// and group; nginx's workers (www-data on Debian) can connect only with
// SocketGroup (or SocketOwner) set for them, as PHP-FPM's listen.group,
// listen.owner and listen.mode. ListenConfig makes such a listener for Serve.
//
// The server speaks all of FastCGI 1.0: every record type, multiplexed
// connections, request IDs reused as soon as their END_REQUEST is sent (nginx
// sends ID 1 for every request on a kept connection), KEEP_CONN,
// FCGI_ABORT_REQUEST and the management records GET_VALUES and UNKNOWN_TYPE.
//
// # Roles, stderr and application status
//
// Server.Handler serves the Responder role. Server.Authorizer and
// Server.Filter, when set, serve the Authorizer role (lighttpd's "mode" =>
// "authorizer", Apache's mod_authnz_fcgi) and the Filter role; a role with no
// handler is refused with FCGI_UNKNOWN_ROLE. RoleOf tells a handler its
// request's role, SetVariable passes an authorizer's variables on,
// FilterDataOf gives a filter its FCGI_DATA stream, Stderr writes to the
// request's FCGI_STDERR (nginx logs it as "FastCGI sent in stderr") and
// SetAppStatus sets END_REQUEST's application status.
//
// # Talking to PHP-FPM and other FastCGI applications
//
// A Client sends requests to FastCGI applications as a web server does:
// Client.Do takes a Request (any role, params, body, FCGI_DATA) and returns a
// Response whose body streams. Connections are kept, pooled per backend and
// multiplexed when the application can; a cancelled context aborts the
// request, and every wait on the application is bounded by default, as
// nginx's are. A Gateway is an http.Handler that serves a FastCGI
// application, a PHP app behind PHP-FPM typically, the way nginx's
// fastcgi_pass does, buffering request bodies so that slow clients cannot
// occupy the application's workers.
//
// # Migrating from net/http/fcgi
//
// Change the import path: Serve, ProcessEnv, ErrRequestAborted and
// ErrConnClosed keep their names and meaning. What differs, on purpose:
//
//   - A handler's r.Context() is cancelled when the web server aborts the
//     request with FCGI_ABORT_REQUEST, when it closes the connection (that
//     is how nginx, Apache, lighttpd and Caddy abort), and when the handler
//     returns. context.Cause tells which: ErrRequestAborted, ErrConnClosed
//     or context.Canceled.
//   - After an abort the END_REQUEST is sent once, when the handler
//     returns; net/http/fcgi sends one at once and a second one later.
//   - A panicking handler is recovered and logged, as net/http does: the
//     web server gets a 500 if nothing was sent yet, or a broken response
//     otherwise. net/http/fcgi lets the panic end the process.
//   - The connection's reader never waits for a handler: a handler that is
//     slow to read its body does not stall other requests on the connection
//     until its body buffer (Server.MaxBodyBuffer, or 64 KiB once the
//     server holds Server.MaxBufferedBytes of input) is full.
//   - GET_VALUES is answered in one record with the names asked for,
//     FCGI_MAX_CONNS and FCGI_MAX_REQS included; unknown management records
//     get UNKNOWN_TYPE; a BEGIN_REQUEST with ID 0 is refused.
//   - Limits: PARAMS size, requests per connection and in all, connections,
//     the input buffered over all requests, and read, write and idle
//     timeouts, all with defaults (see Server).
//   - r.RequestURI is set, r.URL is in origin form as net/http's server
//     gives it, and r.RemoteAddr carries REMOTE_PORT when the web server
//     sends it (and only REMOTE_ADDR when it does not, never a made-up
//     port 0). A request with no body has http.NoBody; one whose body comes
//     without CONTENT_LENGTH has ContentLength -1.
//   - Flush before any Write sends the header, so server-sent events start
//     at once; responses that fit the buffer get a Content-Length and leave
//     in one write together with END_REQUEST. A HEAD response has no body
//     but the Content-Type and Content-Length a GET would get, as with
//     net/http; net/http/fcgi sends the body.
//   - Serve(nil, h) also accepts a socket passed by systemd socket
//     activation (LISTEN_FDS), and says clearly when file descriptor 0 is
//     not a listening socket (ErrNotListener). FCGI_WEB_SERVER_ADDRS is
//     honoured.
//
// # Concurrency
//
// Each connection has one goroutine reading records; each request's handler
// runs on its own goroutine. Responses of multiplexed requests are written
// whole records at a time under the connection's lock, so they never
// interleave inside a record.
//
// # Limits
//
// Every resource a peer can make fcgikit hold is bounded and comes back
// however the peer leaves: a Server's request slots ([Server.MaxRequests]), a
// Client's connections ([Client.MaxConnsPerBackend]), a Gateway's body
// buffers and backend connections ([Gateway.BodyReadTimeout],
// [Gateway.SendTimeout]). A limit that is reached recovers when the load goes
// away. A zero limit or timeout means the default its field states, a
// negative one none. docs/limits.md lists each resource with its bound, its
// default, and the test that ends it each way it can end.
package fcgi

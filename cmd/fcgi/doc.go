// Fcgi is a toolkit for FastCGI in one static binary. It talks to, checks,
// loads and runs FastCGI applications, doing the jobs of cgi-fcgi,
// fcgiwrap, spawn-fcgi and the shell scripts around them.
//
// Install it with
//
//	go install github.com/fcgikit/fcgi/cmd/fcgi@latest
//
// Usage:
//
//	fcgi <command> [flags] [arguments]
//
// The commands are:
//
//	call     send one request to an application and print the response (cgi-fcgi)
//	ping     health-check PHP-FPM (ping.path) for Docker and Kubernetes
//	status   read PHP-FPM's pool status (pm.status_path), with health thresholds
//	exporter Prometheus exporter for PHP-FPM pools (replaces php-fpm_exporter)
//	opcache  read or reset a PHP-FPM pool's OPcache (for deploy hooks)
//	gateway  serve HTTP from FastCGI applications; with no backend, a built-in demo
//	values   ask an application for its limits (FCGI_GET_VALUES)
//	lint     check a live application against the FastCGI spec and what web servers need
//	bench    load-test an application over FastCGI, without a web server
//	wrap     run CGI scripts for a web server over FastCGI (fcgiwrap)
//	spawn    bind a socket and run FastCGI application processes on it (spawn-fcgi)
//
// Run "fcgi <command> --help" for a command's flags and examples. Flags
// may come before or after the arguments; everything after "--" is an
// argument.
//
// # Addresses
//
// A FastCGI address is "unix:PATH" for a unix socket, any other address
// containing a slash is a unix socket path too ("/run/app.sock",
// "./php.sock", "php/run/php.sock"), and anything else is TCP "host:port".
// A URL, a host without a port or a port out of range is a bad command
// line (exit 2).
//
// # Library
//
// The commands are built on the package github.com/fcgikit/fcgi: call,
// ping, status, exporter and opcache send their requests with its Client, gateway is its
// Gateway with a pooled Client, and wrap and the gateway's demo
// application are its Server. values, lint, bench and call --raw speak
// FastCGI record by record instead, since what they check or print is
// exactly what goes over the wire.
//
// # Logs and signals
//
// Every command logs to stderr with log/slog; --log-format json switches
// from text to JSON, and --log-level sets the least severe level shown.
// SIGTERM and SIGINT stop a command gracefully: servers (wrap, spawn,
// gateway) stop accepting, let running work finish for a grace period and
// then end it; a second signal kills the command at once (wrap and spawn
// first kill the processes they run, children and all, and exit 1).
//
// # Exit status
//
//	0    the job was done
//	1    it ran and found a problem: a lint check failed, a health check or
//	     threshold failed, an HTTP error with call --fail, failed bench requests
//	     (a response whose status is not 2xx or 3xx counts as failed)
//	2    bad command line, such as a malformed address
//	3    the application could not be reached (nothing listening, connection
//	     refused, no connection in time) or closed the connection without
//	     answering
//	4    the application answered but broke the FastCGI protocol or refused the
//	     request (END_REQUEST with OVERLOADED, CANT_MPX_CONN, UNKNOWN_ROLE),
//	     or it is an HTTP server, not a FastCGI application
//	5    call, ping, status, values and opcache: connected but no answer in time - the
//	     application is busy (every worker taken) or stuck, not dead;
//	     bench: every request timed out
//	130  interrupted by Ctrl-C (143 by SIGTERM) before the job was done: call,
//	     ping, status, values, lint, opcache, bench (after its partial report)
package main

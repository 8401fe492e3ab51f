// Package fcgi implements FastCGI 1.0 for Go: the application side (a
// server, and a drop-in replacement for net/http/fcgi) and the web-server
// side (a client and an HTTP gateway).
package fcgi

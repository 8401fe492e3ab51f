package fcgi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/fcgikit/fcgi"
)

// fetchFCGI plays the web server: it sends one GET for uri to the FastCGI
// application at addr, as nginx would, and returns the status and body.
func fetchFCGI(addr, uri string, extra map[string]string) string {
	c := &fcgi.Client{Addr: addr}
	defer c.Close()
	params := map[string]string{
		"REQUEST_METHOD":  "GET",
		"REQUEST_URI":     uri,
		"SERVER_PROTOCOL": "HTTP/1.1",
		"HTTP_HOST":       "example.com",
	}
	for k, v := range extra {
		params[k] = v
	}
	resp, err := c.Do(context.Background(), &fcgi.Request{Params: params})
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, body)
}

// Serve is the drop-in for net/http/fcgi.Serve: any http.Handler serves
// FastCGI requests. Given a nil listener, it serves the socket a web
// server or spawn-fcgi handed over as file descriptor 0.
func ExampleServe() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s (via %s)", r.PathValue("name"), r.Host)
	})
	go fcgi.Serve(l, mux)

	fmt.Println(fetchFCGI(l.Addr().String(), "/hello/gopher", nil))
	// Output:
	// 200 hello, gopher (via example.com)
}

// A production server behind nginx: a unix socket, limits and timeouts
// left at their defaults, and a graceful shutdown, which a real program
// starts on SIGTERM. Serve returns ErrServerClosed as soon as Shutdown
// starts, so main waits for Shutdown itself to return:
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
//	defer stop()
//	go srv.Serve(l)
//	<-ctx.Done()
//	srv.Shutdown(context.Background()) // returns when in-flight requests are done
func ExampleServer_Shutdown() {
	dir, err := os.MkdirTemp("", "fcgi")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "app.sock")

	srv := &fcgi.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served")
	})}
	done := make(chan error, 1)
	l, err := fcgi.Listen("unix:" + sock)
	if err != nil {
		panic(err)
	}
	go func() { done <- srv.Serve(l) }()

	fmt.Println(fetchFCGI("unix:"+sock, "/", nil))
	// In-flight requests finish; idle kept connections close.
	if err := srv.Shutdown(context.Background()); err != nil {
		fmt.Println("shutdown:", err)
	}
	fmt.Println(errors.Is(<-done, fcgi.ErrServerClosed))
	// Output:
	// 200 served
	// true
}

// ProcessEnv gives a handler the FastCGI variables that have no place in an
// http.Request, such as those nginx's fastcgi_params adds.
func ExampleProcessEnv() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	go fcgi.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env := fcgi.ProcessEnv(r)
		fmt.Fprintf(w, "%s %s", env["DOCUMENT_ROOT"], env["REMOTE_USER"])
	}))

	fmt.Println(fetchFCGI(l.Addr().String(), "/", map[string]string{"DOCUMENT_ROOT": "/srv/www", "REMOTE_USER": "alice"}))
	// Output:
	// 200 /srv/www alice
}

package fcgi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	stdfcgi "net/http/fcgi"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/fcgikit/fcgi"
)

func ExampleClient_Do() {
	// A FastCGI application on loopback: here one written with the
	// standard library's net/http/fcgi.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go stdfcgi.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "hello, %s", r.URL.Query().Get("name"))
	}))

	c := &fcgi.Client{Addr: ln.Addr().String()}
	defer c.Close()
	resp, err := c.Do(context.Background(), &fcgi.Request{Params: map[string]string{
		"REQUEST_METHOD":  "GET",
		"REQUEST_URI":     "/?name=gopher",
		"QUERY_STRING":    "name=gopher",
		"SERVER_PROTOCOL": "HTTP/1.1",
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	fmt.Println(string(body))
	// Output:
	// 200 text/plain
	// hello, gopher
}

func ExampleGateway() {
	// The FastCGI application: net/http/fcgi again, standing in for
	// PHP-FPM. It shows the script the gateway's nginx-style routing chose.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go stdfcgi.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env := stdfcgi.ProcessEnv(r)
		fmt.Fprintf(w, "%s for %s", filepath.Base(env["SCRIPT_FILENAME"]), r.URL.Path)
	}))

	// A document root with a front controller.
	root, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	os.WriteFile(filepath.Join(root, "index.php"), []byte("<?php"), 0o644)
	os.WriteFile(filepath.Join(root, "api.php"), []byte("<?php"), 0o644)

	c := &fcgi.Client{Addr: ln.Addr().String()}
	defer c.Close()
	srv := httptest.NewServer(&fcgi.Gateway{Client: c, Root: root, FrontController: "/index.php"})
	defer srv.Close()

	for _, path := range []string{"/api.php/users/7", "/blog/hello"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// api.php for /api.php/users/7
	// index.php for /blog/hello
}

// Gateway.Filter renders files through a FastCGI application in the Filter
// role: here fcgikit's own Server, upper-casing each file it is sent.
func ExampleGateway_Filter() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	app := &fcgi.Server{Filter: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := fcgi.FilterDataOf(r)
		text, err := io.ReadAll(data)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "%s (%d bytes)", bytes.ToUpper(text), data.Length)
	})}
	go app.Serve(ln)
	defer app.Close()

	root, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello, filter"), 0o644)

	c := &fcgi.Client{Addr: ln.Addr().String()}
	defer c.Close()
	g := &fcgi.Gateway{Client: c, Root: root}
	srv := httptest.NewServer(g.Filter())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/hello.txt")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output: HELLO, FILTER (13 bytes)
}

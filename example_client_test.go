package fcgi_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	stdfcgi "net/http/fcgi"

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
	fmt.Println(resp.Status, resp.Header.Get("Content-Type"))
	fmt.Println(string(body))
	// Output:
	// 200 text/plain
	// hello, gopher
}

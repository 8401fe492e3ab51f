package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/peer"
	"github.com/fcgikit/fcgi/internal/wire"
)

// echoPHP prints what call and cgi-fcgi must agree on.
const echoPHP = `<?php
header("X-Echo: yes");
if (isset($_GET["code"])) http_response_code((int)$_GET["code"]);
echo $_SERVER["REQUEST_METHOD"], " ", $_SERVER["REQUEST_URI"], " ", $_SERVER["QUERY_STRING"], "\n";
echo file_get_contents("php://input"), "\n";
`

// TestCallVsCGIFCGI: for the same request, fcgi call --raw prints exactly
// what cgi-fcgi prints, against PHP-FPM and against fcgikit's server.
func TestCallVsCGIFCGI(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	script := fpm.WriteFile("echo.php", echoPHP)
	own := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", "yes")
		fmt.Fprintf(w, "%s %s %s %s\n", r.Method, r.RequestURI, fcgi.ProcessEnv(r)["SCRIPT_FILENAME"], b)
	}))
	body := "a=1&b=2"
	env := map[string]string{
		"REQUEST_METHOD":  "POST",
		"SERVER_PROTOCOL": "HTTP/1.1",
		"SCRIPT_NAME":     "/echo.php",
		"SCRIPT_FILENAME": script,
		"REQUEST_URI":     "/echo.php?x=1",
		"QUERY_STRING":    "x=1",
		"CONTENT_LENGTH":  fmt.Sprint(len(body)),
		"CONTENT_TYPE":    "application/x-www-form-urlencoded",
	}
	for name, addr := range map[string]string{"php-fpm": fpm.Addr(), "fcgikit": own} {
		t.Run(name, func(t *testing.T) {
			want, err := peer.CGIFCGI(t, addr, env, []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"call", "--raw", addr, "/echo.php?x=1", "-d", body}
			for k, v := range env {
				args = append(args, "-p", k+"="+v)
			}
			res := runFcgi(t, nil, args...)
			if res.code != 0 {
				t.Fatalf("exit %d", res.code)
			}
			if res.stdout != string(want) {
				t.Errorf("fcgi call --raw:\n%q\ncgi-fcgi:\n%q", res.stdout, want)
			}
			if !strings.Contains(res.stdout, "POST /echo.php?x=1 ") || !strings.Contains(res.stdout, body) {
				t.Errorf("the application did not see the request: %q", res.stdout)
			}
		})
	}
}

// TestCallOutput: -i prints a curl-like status line and headers; without
// it only the body; --fail turns 4xx into exit 1.
func TestCallOutput(t *testing.T) {
	fpm := peer.StartPHPFPM(t, peer.PHPFPMConfig{MaxChildren: 2})
	fpm.WriteFile("echo.php", echoPHP)
	root := "--root=" + fpm.Root()
	res := runFcgi(t, nil, "call", "-i", fpm.Addr(), "/echo.php?code=404", root)
	if res.code != 0 || !strings.HasPrefix(res.stdout, "HTTP/1.1 404 Not Found\r\n") ||
		!strings.Contains(res.stdout, "X-Echo: yes\r\n") || !strings.Contains(res.stdout, "\r\n\r\nGET /echo.php?code=404 code=404\n") {
		t.Errorf("exit %d, -i output %q", res.code, res.stdout)
	}
	res = runFcgi(t, []byte("from stdin"), "call", fpm.Addr(), "/echo.php", "-d", "-", root)
	if res.code != 0 || res.stdout != "POST /echo.php \nfrom stdin\n" {
		t.Errorf("exit %d, body %q", res.code, res.stdout)
	}
	res = runFcgi(t, nil, "call", "--fail", fpm.Addr(), "/echo.php?code=500", root)
	if res.code != exitFail {
		t.Errorf("--fail on 500: exit %d", res.code)
	}
}

// TestCallStderrAndRefusal: FCGI_STDERR goes to stderr, the body to
// stdout; an END_REQUEST with OVERLOADED is exit 4.
func TestCallStderrAndRefusal(t *testing.T) {
	sock := rawApp(t, func(w *wire.Writer, id uint16, params []byte) {
		if strings.Contains(string(params), "/busy") {
			w.WriteEndRequest(id, 0, wire.StatusOverloaded)
			return
		}
		w.WriteRecord(wire.TypeStderr, id, []byte("a warning\n"))
		w.WriteRecord(wire.TypeStdout, id, []byte("Content-Type: text/plain\n\nbody\n"))
		w.WriteRecord(wire.TypeStdout, id, nil)
		w.WriteEndRequest(id, 0, wire.StatusRequestComplete)
	})
	res := runFcgi(t, nil, "call", sock, "/x")
	if res.code != 0 || res.stdout != "body\n" || res.stderr != "a warning\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	res = runFcgi(t, nil, "call", sock, "/busy")
	if res.code != exitProtocol || !strings.Contains(res.stderr, "OVERLOADED") {
		t.Errorf("OVERLOADED: exit %d, stderr %q", res.code, res.stderr)
	}
}

// TestCallNoAnswer: connected but no answer within --timeout is busy,
// exit 5, with and without --raw; a connection closed without an answer
// is exit 3.
func TestCallNoAnswer(t *testing.T) {
	silent := rawServer(t, func(nc net.Conn) { io.Copy(io.Discard, nc) })
	for _, raw := range []bool{false, true} {
		args := []string{"call", "--timeout", "300ms", silent, "/x"}
		if raw {
			args = append(args, "--raw")
		}
		res := runFcgi(t, nil, args...)
		if res.code != exitBusy || !strings.Contains(res.stderr, "no answer in time") {
			t.Errorf("--raw=%v: exit %d, stderr %q; want 5", raw, res.code, res.stderr)
		}
	}
	// Reads the request, answers nothing, closes.
	closing := rawApp(t, func(*wire.Writer, uint16, []byte) {})
	res := runFcgi(t, nil, "call", closing, "/x")
	if res.code != exitUnreachable {
		t.Errorf("closed without an answer: exit %d, want 3", res.code)
	}
}

// TestCallMalformedHeader: a response whose CGI header cannot be parsed,
// or that an HTTP client could not act on (an interim status, lengths that
// disagree), is a protocol error, exit 4, as the gateway's 502; --raw
// prints it as it came.
func TestCallMalformedHeader(t *testing.T) {
	for _, head := range []string{
		"no colon here\n\n",
		"Status: 101 Switching Protocols\nUpgrade: websocket\n\n",
		"Content-Length: 4\nContent-Length: 7\n\n",
	} {
		sock := rawApp(t, func(w *wire.Writer, id uint16, _ []byte) {
			w.WriteRecord(wire.TypeStdout, id, []byte(head+"body"))
			w.WriteRecord(wire.TypeStdout, id, nil)
			w.WriteEndRequest(id, 0, wire.StatusRequestComplete)
		})
		res := runFcgi(t, nil, "call", sock, "/x")
		if res.code != exitProtocol || !strings.Contains(res.stderr, "malformed CGI response") {
			t.Errorf("%q: exit %d, stderr %q; want 4", head, res.code, res.stderr)
		}
		res = runFcgi(t, nil, "call", "--raw", sock, "/x")
		if res.code != 0 || res.stdout != head+"body" {
			t.Errorf("%q: --raw: exit %d, stdout %q", head, res.code, res.stdout)
		}
	}
}

// rawApp is a FastCGI application written record by record: on each
// connection it reads one request and, once its STDIN has ended, calls
// answer with the request's ID and PARAMS stream, flushes what answer
// wrote, and closes the connection. It returns the socket's path.
func rawApp(t *testing.T, answer func(w *wire.Writer, id uint16, params []byte)) string {
	t.Helper()
	return rawServer(t, func(nc net.Conn) {
		defer nc.Close()
		r, w := wire.NewReader(nc), wire.NewWriter(nc)
		defer r.Release()
		var params []byte
		for {
			rec, err := r.Next()
			if err != nil {
				return
			}
			switch {
			case rec.Type == wire.TypeParams:
				params = append(params, rec.Content...)
			case rec.Type == wire.TypeStdin && len(rec.Content) == 0:
				answer(w, rec.RequestID, params)
				w.Flush()
				return
			}
		}
	})
}

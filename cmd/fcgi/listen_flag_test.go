package main

import (
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestParseListenAddr: a listen address follows parseAddr's rule, and
// also takes port 0 (any free port) and an empty host (every interface).
func TestParseListenAddr(t *testing.T) {
	for _, tt := range []struct{ in, network, address string }{
		{"127.0.0.1:9000", "tcp", "127.0.0.1:9000"},
		{"127.0.0.1:0", "tcp", "127.0.0.1:0"},
		{":9000", "tcp", ":9000"},
		{":0", "tcp", ":0"},
		{"[::1]:0", "tcp", "[::1]:0"},
		{"localhost:9000", "tcp", "localhost:9000"},
		{"unix:/x.sock", "unix", "/x.sock"},
		{"./x.sock", "unix", "./x.sock"},
		{"/run/x.sock", "unix", "/run/x.sock"},
	} {
		network, address, err := parseListenAddr(tt.in)
		if err != nil || network != tt.network || address != tt.address {
			t.Errorf("parseListenAddr(%q) = %q, %q, %v; want %q, %q", tt.in, network, address, err, tt.network, tt.address)
		}
	}
	for _, bad := range []string{"localhost", "x.sock", "http://127.0.0.1:9000", "127.0.0.1:99999", "127.0.0.1:http", "127.0.0.1:", "unix:", "::1"} {
		if _, _, err := parseListenAddr(bad); err == nil {
			t.Errorf("parseListenAddr(%q) accepted it", bad)
		}
	}
}

// TestListenMalformed: each subcommand that listens refuses a malformed
// --listen with exit 2 and one line naming the flag, before it starts
// anything (spawn starts no process, the gateway no demo application).
func TestListenMalformed(t *testing.T) {
	subcommands := []struct {
		name string
		args func(addr string) []string
	}{
		{"wrap", func(addr string) []string { return []string{"wrap", "--listen", addr} }},
		{"spawn", func(addr string) []string { return []string{"spawn", "--listen", addr, "--", "true"} }},
		{"demo-app", func(addr string) []string { return []string{"demo-app", "--listen", addr} }},
		{"gateway", func(addr string) []string { return []string{"gateway", "--listen", addr} }},
	}
	for _, sc := range subcommands {
		for _, addr := range []string{"localhost", "http://127.0.0.1:9000", "127.0.0.1:99999", "127.0.0.1:http", "unix:", "::1"} {
			t.Run(sc.name+"/"+addr, func(t *testing.T) {
				res := runFcgi(t, nil, sc.args(addr)...)
				prefix := "fcgi " + sc.name + ": --listen: address "
				lines := strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n")
				if res.code != exitUsage || !strings.HasPrefix(res.stderr, prefix) || len(lines) != 2 {
					t.Errorf("exit %d, stderr %q; want exit 2 and %q... then the --help hint", res.code, res.stderr, prefix)
				}
			})
		}
	}
	// HTTP has no unix socket to listen on in the gateway.
	res := runFcgi(t, nil, "gateway", "--listen", "unix:"+filepath.Join(t.TempDir(), "g.sock"))
	if res.code != exitUsage || !strings.HasPrefix(res.stderr, "fcgi gateway: --listen: address ") {
		t.Errorf("gateway --listen unix:...: exit %d, stderr %q; want exit 2 naming --listen", res.code, res.stderr)
	}
}

// TestListenAccepted: port 0 and an empty host are listen addresses for
// every subcommand that listens; each starts and says where it listens.
func TestListenAccepted(t *testing.T) {
	listening := regexp.MustCompile(`(\[::\]|127\.0\.0\.1):[1-9][0-9]*`)
	for _, args := range [][]string{
		{"wrap", "--listen", ":0"},
		{"wrap", "--listen", "127.0.0.1:0"},
		{"gateway", "--listen", ":0"},
		{"gateway", "--listen", "127.0.0.1:0"},
		{"spawn", "--listen", ":0", "--", fcgiBin, "demo-app"},
		{"spawn", "--listen", "127.0.0.1:0", "--", fcgiBin, "demo-app"},
	} {
		t.Run(strings.Join(args[:3], " "), func(t *testing.T) {
			_, out := startFcgi(t, args...)
			deadline := time.Now().Add(10 * time.Second)
			for !listening.MatchString(out.String()) {
				if time.Now().After(deadline) {
					t.Fatalf("no listening address in the output:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// demo-app says nothing when it starts: it answers on a free port.
	for _, host := range []string{"", "127.0.0.1"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		startFcgi(t, "demo-app", "--listen", net.JoinHostPort(host, strconv.Itoa(port)))
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(10 * time.Second)
		for runFcgi(t, nil, "call", addr, "/pid").code != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("demo-app --listen %s: no answer on %s", net.JoinHostPort(host, strconv.Itoa(port)), addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

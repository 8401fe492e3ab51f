package fcgi_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/peer"
)

// chunks sends GET path to srv over HTTP/1.1 and returns the response
// header and the sizes of the chunks of its chunked body, as they were on
// the wire.
func chunks(t *testing.T, srv *httptest.Server, path string) (http.Header, []int) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.TransferEncoding) == 0 {
		t.Fatalf("%s: not chunked (%v)", path, resp.Header)
	}
	// resp.Body would undo the chunking; read the wire after the header.
	var sizes []int
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var n int
		fmt.Sscanf(strings.TrimSpace(line), "%x", &n)
		if n == 0 {
			return resp.Header, sizes
		}
		sizes = append(sizes, n)
		if _, err := br.Discard(n + 2); err != nil {
			t.Fatal(err)
		}
	}
}

// With X-Accel-Buffering: no, each piece PHP flushes reaches the client as
// a piece of its own, even when the pieces arrive at the Gateway together;
// the field does not reach the client.
func TestGatewayAccelBufferingPHPFPM(t *testing.T) {
	checkLeaks(t)
	fpm := startFPM(t, peer.PHPFPMConfig{MaxChildren: 1})
	fpm.WriteFile("stream.php", `<?php
while (ob_get_level()) ob_end_clean();
if (isset($_GET['no'])) header('X-Accel-Buffering: no');
for ($i = 0; $i < 200; $i++) { echo str_repeat('x', 99), "\n"; flush(); }`)
	_, srv, _ := phpGateway(t, fpm, 1)

	h, sizes := chunks(t, srv, "/stream.php?no=1")
	if v := h.Get("X-Accel-Buffering"); v != "" {
		t.Errorf("X-Accel-Buffering reached the client: %q", v)
	}
	if len(sizes) < 100 {
		t.Errorf("X-Accel-Buffering: no: %d chunks for 200 pieces, want one a piece: %v", len(sizes), sizes)
	}
}

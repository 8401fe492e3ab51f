package fcgicaddy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgikit/fcgi/internal/peer"
)

// What a request through the transport holds, and when each is given back:
//
//	resource                    taken                       given back
//	spooled body (memory/file)  RoundTrip, unknown length   when the Caddy request ends (its context),
//	                                                        shared by reverse_proxy's retries
//	fcgi.Client conn / slot     Do                          response read to its end (kept), or the
//	                                                        response body closed, or the request's
//	                                                        context ended (closed; multiplexed, the
//	                                                        request aborted and its ID freed once the
//	                                                        backend ends it)
//	known-length body (client)  streamed by Do              Caddy's server; a retry after any of it was
//	                                                        read is refused before sending (502)
//	response body               RoundTrip returns           Close by reverse_proxy, or the context's end
//	body writer goroutine       Do, a body not sent inline  body sent, or the connection fails or closes
//	stderr buffer (64 KiB)      Do, capture_stderr          the response body's close (logged once)
//
// TestResourceEndings drives each way a request can end through a real
// Caddy against fakeBackend, and after each checks that all of them came
// back: no file of temp_dir open in Caddy (the spool unlinks its files at
// once, so the check is on /proc/PID/fd, "(deleted)" ones included), no
// fcgikit goroutine left in Caddy but the read loops of open multiplexed
// connections, every connection the case abandoned closed at the backend,
// and every request slot free: as many requests as there are slots held at
// the backend at once, twice over.
//
// It runs with each multiplex mode: off, on, and auto, where the backend
// answers FCGI_GET_VALUES with FCGI_MPXS_CONNS=1 and FCGI_MAX_REQS=3.
// Multiplexed, two other requests are mid-response beside the case's, so
// that one of them always shares its connection: a request Caddy abandons
// is ended with FCGI_ABORT_REQUEST, and its connection and the others on
// it live on; a connection the backend breaks fails every request on it.
// The slots are max_conns connections of 64 request IDs each (on) or of
// the backend's FCGI_MAX_REQS (auto).
func TestResourceEndings(t *testing.T) {
	// Every port of the runs at once, so that none is given twice.
	ports := freePorts(t, 18)
	for i, m := range []struct {
		mode    string
		perConn int // requests one connection carries at once
	}{{"off", 1}, {"on", 64}, {"auto", 3}} {
		t.Run("multiplex "+m.mode, func(t *testing.T) {
			t.Parallel()
			resourceEndings(t, m.mode, m.perConn, ports[6*i:6*i+6])
		})
	}
}

// resourceEndings runs the cases with the transport's multiplex mode, on
// a backend whose connections carry perConn requests at once, on Caddy's
// ports free[:5] and with nothing listening on free[5].
func resourceEndings(t *testing.T, mode string, perConn int, free []int) {
	be := startFakeBackend(t, perConn)
	mpx := mode != "off"
	dir := peer.TempDir(t)
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o755); err != nil {
		t.Fatal(err)
	}
	refused := fmt.Sprintf("127.0.0.1:%d", free[5])
	slow := fullBacklogListener(t)
	adminSock := filepath.Join(dir, "admin.sock")

	const maxConns = 2
	transport := fmt.Sprintf(`transport fcgikit {
			max_conns %d
			body_memory 4KiB
			max_body 256KiB
			temp_dir %s
			read_timeout 3s
			dial_timeout 1s
			capture_stderr
			multiplex %s
		}`, maxConns, spoolDir, mode)
	slots := maxConns * perConn
	ports := map[string]int{"plain": free[0], "retry": free[1], "rmatch": free[2], "handle": free[3], "limited": free[4]}
	sites := fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy %s {
		%s
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy %s %s %s {
		lb_policy round_robin
		lb_retries 2
		%s
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy %s {
		lb_retries 1
		lb_retry_match {
			expression `+"`{rp.status_code} == 503`"+`
		}
		%s
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy %s {
		@ok status 200
		handle_response @ok {
			respond "replaced" 200
		}
		%s
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	request_body {
		max_size 16KiB
	}
	reverse_proxy %s {
		%s
	}
}
`, ports["plain"], be.addr, transport,
		ports["retry"], refused, slow, be.addr, transport,
		ports["rmatch"], be.addr, transport,
		ports["handle"], be.addr, transport,
		ports["limited"], be.addr, transport)
	// h2c: an HTTP/2 client cancels one stream, and the request's context
	// ends while its handler still runs. read_body: what bounds a client
	// that stops sending a body being spooled.
	options := fmt.Sprintf("\tadmin unix/%s\n\tservers {\n\t\tprotocols h1 h2c\n\t\ttimeouts {\n\t\t\tread_body 3s\n\t\t}\n\t}", adminSock)
	c := startCaddyIn(t, dir, options, sites, ports["plain"], ports["retry"], ports["rmatch"], ports["handle"], ports["limited"])
	pid := c.cmd.Process.Pid
	admin := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", adminSock)
		}},
		Timeout: 30 * time.Second,
	}
	h2cTransport := &http.Transport{Protocols: new(http.Protocols)}
	h2cTransport.Protocols.SetUnencryptedHTTP2(true)
	defer h2cTransport.CloseIdleConnections()
	h2c := &http.Client{Transport: h2cTransport, Timeout: 30 * time.Second}
	url := func(site, path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", ports[site], path) }

	chunk := bytes.Repeat([]byte("0123456789abcdef"), 512) // 8 KiB: past body_memory, into a file

	// multiplexing waits until two requests to site share a connection:
	// until its transport's probe has its answer, auto sends one request
	// per connection.
	tries := 0
	multiplexing := func(t *testing.T, site string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			tries++
			a := startBystander(t, be, h2c, url(site, "/part"), fmt.Sprintf("mpx-%s-%d-a", site, tries))
			b := startBystander(t, be, h2c, url(site, "/part"), fmt.Sprintf("mpx-%s-%d-b", site, tries))
			shared := be.conn(a.id) == be.conn(b.id)
			a.finish(t, true)
			b.finish(t, true)
			if shared {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no two requests share a connection within 20s", site)
			}
		}
	}
	if mode == "auto" {
		for site := range ports {
			multiplexing(t, site)
		}
	}

	cases := []struct {
		name string
		// run performs the request(s) of the case; id tags them for the
		// backend (X-Case).
		run func(t *testing.T, id string)
		// site is the site the case's requests go to, "" for plain.
		site string
		// abandons: Caddy gives up on request id: without multiplexing
		// its connection must close, multiplexed the backend must get
		// FCGI_ABORT_REQUEST for it and the connection stay open. breaks:
		// the backend ends the connection of request id, and with it every
		// request on it. keeps: the connection must stay open, kept for the
		// next request.
		abandons, breaks, keeps bool
	}{
		{name: "ok chunked, spooled to file", keeps: true, run: func(t *testing.T, id string) {
			code, body := do(t, "POST", url("plain", "/ok"), id, unsized{bytes.NewReader(chunk)})
			if want := fmt.Sprintf("stdin=%d cl=%d", len(chunk), len(chunk)); code != 200 || body != want {
				t.Errorf("status %d %q, want 200 %q", code, body, want)
			}
		}},
		{name: "client FIN mid-upload", run: func(t *testing.T, id string) {
			nc := rawUpload(t, ports["plain"], "/ok", id, chunk)
			waitSpoolFile(t, pid, spoolDir)
			nc.(*net.TCPConn).CloseWrite()
			nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			if status := readStatus(nc); status != "" && !strings.HasPrefix(status, "HTTP/1.1 4") {
				t.Errorf("status %q, want a 4xx or none", status)
			}
			nc.Close()
		}},
		{name: "client stops sending mid-upload (read_body)", run: func(t *testing.T, id string) {
			nc := rawUpload(t, ports["plain"], "/ok", id, chunk)
			waitSpoolFile(t, pid, spoolDir)
			nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			if status := readStatus(nc); status != "" && !strings.HasPrefix(status, "HTTP/1.1 4") {
				t.Errorf("status %q, want a 4xx or none", status)
			}
		}},
		{name: "client RST mid-upload", run: func(t *testing.T, id string) {
			nc := rawUpload(t, ports["plain"], "/ok", id, chunk)
			waitSpoolFile(t, pid, spoolDir)
			reset(nc)
		}},
		{name: "client RST mid-upload, known length, streamed", abandons: true, run: func(t *testing.T, id string) {
			nc := dialCaddy(t, ports["plain"])
			fmt.Fprintf(nc, "POST /ok HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Case: %s\r\nContent-Length: 1000000\r\n\r\n", ports["plain"], id)
			nc.Write(chunk)
			be.waitRequest(t, id)
			reset(nc)
		}},
		{name: "body over max_body", run: func(t *testing.T, id string) {
			code, _ := do(t, "POST", url("plain", "/ok"), id, unsized{bytes.NewReader(bytes.Repeat(chunk, 40))})
			if code != http.StatusRequestEntityTooLarge {
				t.Errorf("status %d, want 413", code)
			}
		}},
		{name: "body over request_body max_size, spooled", site: "limited", run: func(t *testing.T, id string) {
			code, _ := do(t, "POST", url("limited", "/ok"), id, unsized{bytes.NewReader(bytes.Repeat(chunk, 4))})
			if code != http.StatusRequestEntityTooLarge {
				t.Errorf("status %d, want 413", code)
			}
		}},
		{name: "client RST mid-response", abandons: true, run: func(t *testing.T, id string) {
			nc := dialCaddy(t, ports["plain"])
			fmt.Fprintf(nc, "GET /big HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Case: %s\r\n\r\n", ports["plain"], id)
			nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			if status := readStatus(nc); !strings.HasPrefix(status, "HTTP/1.1 200") {
				t.Errorf("status %q, want 200", status)
			}
			reset(nc)
		}},
		{name: "client RST mid-response, spooled body", abandons: true, run: func(t *testing.T, id string) {
			nc := rawUpload(t, ports["plain"], "/big", id, chunk)
			io.WriteString(nc, "0\r\n\r\n")
			nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			if status := readStatus(nc); !strings.HasPrefix(status, "HTTP/1.1 200") {
				t.Errorf("status %q, want 200", status)
			}
			reset(nc)
		}},
		{name: "HTTP/2 stream cancelled mid-response", abandons: true, run: func(t *testing.T, id string) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", url("plain", "/big"), nil)
			req.Header.Set("X-Case", id)
			resp, err := h2c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ProtoMajor != 2 {
				t.Fatalf("%s, want HTTP/2", resp.Proto)
			}
			io.ReadFull(resp.Body, make([]byte, 64<<10))
			cancel()
			resp.Body.Close()
		}},
		{name: "HTTP/2 stream cancelled mid-upload", run: func(t *testing.T, id string) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequestWithContext(ctx, "POST", url("plain", "/ok"), pr)
			req.Header.Set("X-Case", id)
			done := make(chan struct{})
			// Owned by the case, which waits for done.
			go func() {
				defer close(done)
				if resp, err := h2c.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			pw.Write(chunk)
			waitSpoolFile(t, pid, spoolDir)
			cancel()
			<-done
		}},
		{name: "backend answers without reading a spooled body", run: func(t *testing.T, id string) {
			code, body := do(t, "POST", url("plain", "/noread"), id, unsized{bytes.NewReader(bytes.Repeat(chunk, 30))})
			if code != 200 || body != "noread" {
				t.Errorf("status %d %q, want 200 noread", code, body)
			}
		}},
		{name: "backend closes mid-response", breaks: true, run: func(t *testing.T, id string) {
			code, body := do(t, "GET", url("plain", "/closemid"), id, nil)
			if code == 200 && len(body) >= 100000 {
				t.Errorf("status %d, %d bytes: the whole body of a cut response", code, len(body))
			}
		}},
		{name: "backend RST mid-response, spooled body", breaks: true, run: func(t *testing.T, id string) {
			code, body := do(t, "POST", url("plain", "/rst"), id, unsized{bytes.NewReader(chunk)})
			if code == 200 && len(body) >= 100000 {
				t.Errorf("status %d, %d bytes: the whole body of a reset response", code, len(body))
			}
		}},
		{name: "backend never answers (read_timeout), spooled body", abandons: true, run: func(t *testing.T, id string) {
			code, _ := do(t, "POST", url("plain", "/hang"), id, unsized{bytes.NewReader(chunk)})
			if code < 500 {
				t.Errorf("status %d, want 5xx", code)
			}
		}},
		{name: "stderr past its bound", keeps: true, run: func(t *testing.T, id string) {
			code, body := do(t, "GET", url("plain", "/stderr"), id, nil)
			if code != 200 || body != "stdin=0 cl=" {
				t.Errorf("status %d %q", code, body)
			}
		}},
		{name: "retries after refused and slow dials, spooled body", site: "retry", run: func(t *testing.T, id string) {
			// Round robin over refused, slow, backend with two retries: each
			// request ends at the backend, after zero, one or two failed
			// dials, and over three requests every order is taken.
			for i := range 3 {
				code, body := do(t, "POST", url("retry", "/ok"), id+"-"+strconv.Itoa(i), unsized{bytes.NewReader(chunk)})
				if want := fmt.Sprintf("stdin=%d cl=%d", len(chunk), len(chunk)); code != 200 || body != want {
					t.Errorf("request %d: status %d %q, want 200 %q", i, code, body, want)
				}
			}
		}},
		{name: "retries after refused and slow dials, known length", site: "retry", run: func(t *testing.T, id string) {
			// A failed dial sends nothing: the retry streams the body whole.
			for i := range 3 {
				code, body := do(t, "POST", url("retry", "/ok"), id+"-"+strconv.Itoa(i), bytes.NewReader(chunk))
				if want := fmt.Sprintf("stdin=%d cl=%d", len(chunk), len(chunk)); code != 200 || body != want {
					t.Errorf("request %d: status %d %q, want 200 %q", i, code, body, want)
				}
			}
		}},
		{name: "retry on a 503 response (lb_retry_match), spooled body", site: "rmatch", keeps: true, run: func(t *testing.T, id string) {
			code, body := do(t, "POST", url("rmatch", "/503once"), id, unsized{bytes.NewReader(chunk)})
			if want := fmt.Sprintf("stdin=%d cl=%d", len(chunk), len(chunk)); code != 200 || body != want {
				t.Errorf("status %d %q, want 200 %q", code, body, want)
			}
			if n := be.attempts(id); n != 2 {
				t.Errorf("backend saw %d attempts, want 2", n)
			}
		}},
		{name: "retry on a 503 response (lb_retry_match), known length", site: "rmatch", run: func(t *testing.T, id string) {
			// The first attempt read the body; there is none left to send
			// again. The retry must fail, not pass a short body off as whole.
			code, body := do(t, "POST", url("rmatch", "/503once"), id, bytes.NewReader(chunk))
			if code != http.StatusBadGateway {
				t.Errorf("status %d %q, want 502", code, body)
			}
			if n := be.attempts(id); n != 1 {
				t.Errorf("backend saw %d attempts, want 1: the retry must send nothing", n)
			}
		}},
		{name: "handle_response: body never read", site: "handle", abandons: true, run: func(t *testing.T, id string) {
			code, body := do(t, "POST", url("handle", "/big"), id, unsized{bytes.NewReader(chunk)})
			if code != 200 || body != "replaced" {
				t.Errorf("status %d %q, want 200 replaced", code, body)
			}
		}},
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := "c" + strconv.Itoa(i)
			site := tc.site
			if site == "" {
				site = "plain"
			}
			var others []*bystander
			if mpx {
				// Two, one after the other: the case's request takes the
				// connection with the fewest requests, which is one of
				// theirs whether they share one or have one each.
				for j := range 2 {
					others = append(others, startBystander(t, be, h2c, url(site, "/part"), id+"-other"+strconv.Itoa(j)))
				}
			}
			tc.run(t, id)
			switch {
			case tc.breaks:
				be.waitClosed(t, id)
			case tc.abandons && mpx:
				be.waitAborted(t, id)
				if !be.isOpen(id) {
					t.Errorf("the connection of %s closed after its abort, want it open for the others", id)
				}
			case tc.abandons:
				be.waitClosed(t, id)
			}
			shared := false
			for _, o := range others {
				// A retry may take a connection of its own: one whose
				// request was just abandoned takes none until the backend
				// ends that request.
				if be.sharedWith(id, o.id) {
					shared = true
				}
				// A broken connection fails the requests on it; any other
				// ending of the case leaves them alone.
				o.finish(t, !(tc.breaks && be.conn(id) == be.conn(o.id)))
			}
			if mpx && be.attempts(id) > 0 && !shared {
				t.Errorf("%s, on connections %v, shares none with another request (%s on %d, %s on %d)", id, be.conns(id), others[0].id, be.conn(others[0].id), others[1].id, be.conn(others[1].id))
			}
			checkResources(t, pid, spoolDir, admin, be, mpx)
			pool(t, be, h2c, url("plain", "/barrier"), slots)
			checkResources(t, pid, spoolDir, admin, be, mpx)
			if tc.keeps && !be.isOpen(id) {
				t.Errorf("the connection of %s is closed, want it kept", id)
			}
		})
	}

	t.Run("reload during a request", func(t *testing.T) {
		// The old configuration's Cleanup closes its idle connections, and
		// the connection of its request in flight once that ends: the
		// backend sees every one closed. The request gets its whole answer,
		// and the new configuration serves.
		if be.open() == 0 {
			t.Fatal("no idle connection to see closed")
		}
		conf, err := os.ReadFile(filepath.Join(dir, "Caddyfile"))
		if err != nil {
			t.Fatal(err)
		}
		held := make(chan string, 1)
		// Owned by the subtest, which waits for held.
		go func() {
			code, body := do(t, "POST", url("plain", "/hold"), "held", unsized{bytes.NewReader(chunk)})
			held <- fmt.Sprintf("%d %s", code, body)
		}()
		be.waitRequest(t, "held")
		// The goroutine probe of checkResources sees a request in the
		// transport: it can fail.
		if g := fcgiGoroutines(t, admin); !strings.Contains(g, "fcgi.(*Client).Do") {
			t.Errorf("no goroutine in fcgi.(*Client).Do during a request:\n%s", g)
		}
		reloaded := make(chan string, 1)
		// Owned by the subtest, which waits for reloaded.
		go func() {
			req, _ := http.NewRequest("POST", "http://localhost/load", bytes.NewReader(conf))
			req.Header.Set("Content-Type", "text/caddyfile")
			req.Header.Set("Cache-Control", "must-revalidate") // reload the same configuration
			resp, err := admin.Do(req)
			if err != nil {
				reloaded <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			reloaded <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
		// Either order is right: the reload waits for the request, or the
		// request outlives its configuration's Cleanup.
		select {
		case r := <-reloaded:
			reloaded <- r
		case <-time.After(time.Second):
		}
		be.release("held")
		if got, want := <-held, fmt.Sprintf("200 stdin=%d cl=%d", len(chunk), len(chunk)); got != want {
			t.Errorf("request across the reload: %q, want %q", got, want)
		}
		if r := <-reloaded; !strings.HasPrefix(r, "200 ") {
			t.Fatalf("reload: %s", r)
		}
		be.waitClosed(t, "held")
		waitFor(t, "the old configuration's idle connections closed", func() string {
			if n := be.open(); n != 0 {
				return fmt.Sprintf("%d open", n)
			}
			return ""
		})
		// Until the old servers are gone, a new connection may reach one of
		// them as it shuts down and be reset: Caddy's, not the transport's.
		fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
		waitFor(t, "the new configuration serves", func() string {
			resp, err := fresh.Get(url("plain", "/ok"))
			if err != nil {
				return err.Error()
			}
			resp.Body.Close()
			return ""
		})
		if mode == "auto" {
			multiplexing(t, "plain")
		}
		pool(t, be, h2c, url("plain", "/barrier"), slots)
		checkResources(t, pid, spoolDir, admin, be, mpx)
	})
}

// do sends one request tagged id and returns its status and body; a
// response cut short gives what arrived.
func do(t *testing.T, method, url, id string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Case", id)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Logf("%s %s: %v", method, url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pool sends 2 × slots GETs of url, a /barrier of be, at once with hc:
// they pass the barrier slots at a time, so that every one succeeds only
// if the transport can hold slots requests at the backend together. hc
// speaks HTTP/2: a request that waits at the barrier may outlast Caddy's
// read_body timeout, which ends an HTTP/1 request, body or not.
func pool(t *testing.T, be *fakeBackend, hc *http.Client, url string, slots int) {
	t.Helper()
	be.setBarrier(slots)
	n := 2 * slots
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			req, err := http.NewRequest("GET", url, nil)
			if err != nil {
				errs <- err
				return
			}
			req.Header.Set("X-Case", "pool-"+strconv.Itoa(i))
			resp, err := hc.Do(req)
			if err != nil {
				errs <- fmt.Errorf("request %d: %v", i, err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// Dots come while it waits at the barrier.
			if body := strings.TrimLeft(string(b), "."); resp.StatusCode != 200 || body != "stdin=0 cl=" {
				errs <- fmt.Errorf("request %d: %d %q", i, resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("after the case, %d concurrent requests, %d at the backend at once: %v", n, slots, err)
	}
}

// A bystander is a request in flight beside a case's, its answer begun
// and held by the backend until finish.
type bystander struct {
	be   *fakeBackend
	id   string
	done chan string // its status and body
}

// startBystander sends a GET of url, a /part of be, tagged id, with hc,
// and returns once its response header has arrived. hc speaks HTTP/2:
// Caddy's read_body timeout ends an HTTP/1 request that outlasts it, body
// or not, and a bystander outlasts the cases that wait for timeouts.
func startBystander(t *testing.T, be *fakeBackend, hc *http.Client, url, id string) *bystander {
	t.Helper()
	o := &bystander{be: be, id: id, done: make(chan string, 1)}
	header := make(chan struct{})
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Case", id)
	// Owned by the case, which waits for done in finish.
	go func() {
		resp, err := hc.Do(req)
		close(header)
		if err != nil {
			o.done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		o.done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	select {
	case <-header:
	case <-time.After(30 * time.Second):
		t.Fatalf("no response header for %s within 30s", id)
	}
	return o
}

// finish lets the backend end the bystander's answer and checks it came
// whole if whole, or cut short if not.
func (o *bystander) finish(t *testing.T, whole bool) {
	t.Helper()
	o.be.release(o.id)
	got := <-o.done
	// Dots come between the two halves while it is held.
	ok := strings.HasPrefix(got, "203 begin-") && strings.HasSuffix(got, "end") && strings.Trim(got[len("203 begin-"):len(got)-len("end")], ".") == ""
	if whole && !ok {
		t.Errorf("%s, on connection %d: %q, want 203 begin-...end", o.id, o.be.conn(o.id), got)
	}
	if !whole && ok {
		t.Errorf("%s, on the broken connection %d: %q, want it cut short", o.id, o.be.conn(o.id), got)
	}
}

// checkResources waits until Caddy holds no file of spoolDir and runs no
// fcgikit goroutine but, multiplexed, the read loop of each connection
// open at be.
func checkResources(t *testing.T, pid int, spoolDir string, admin *http.Client, be *fakeBackend, mpx bool) {
	t.Helper()
	waitFor(t, "spool files closed", func() string {
		if fds := spoolFDs(pid, spoolDir); len(fds) > 0 {
			return strings.Join(fds, ", ")
		}
		return ""
	})
	waitFor(t, "fcgikit goroutines ended", func() string {
		var left []string
		loops := 0
		for _, g := range strings.Split(fcgiGoroutines(t, admin), "\n\n") {
			switch {
			case g == "":
			case mpx && strings.Contains(g, "\ngithub.com/fcgikit/fcgi.(*clientConn).readLoop("):
				loops++
			default:
				left = append(left, g)
			}
		}
		if open := be.open(); mpx && loops != open {
			left = append(left, fmt.Sprintf("%d read loops for %d connections open at the backend", loops, open))
		}
		return strings.Join(left, "\n\n")
	})
}

// waitFor polls cond, which describes what is still wrong or returns "",
// for up to 20 seconds.
func waitFor(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		wrong := cond()
		if wrong == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: not within 20s: %s", what, wrong)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spoolFDs lists the descriptors of process pid open on files of dir,
// unlinked ones included.
func spoolFDs(pid int, dir string) []string {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(fdDir)
	var fds []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") {
			fds = append(fds, e.Name()+" -> "+target)
		}
	}
	return fds
}

// waitSpoolFile waits until Caddy has a file of dir open: a chunked body
// is being spooled to disk.
func waitSpoolFile(t *testing.T, pid int, dir string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(spoolFDs(pid, dir)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no spool file opened within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fcgiGoroutines returns the stacks of Caddy's goroutines in fcgikit's
// packages, or "" if there are none. Caddy's admin endpoint serves them.
func fcgiGoroutines(t *testing.T, admin *http.Client) string {
	t.Helper()
	resp, err := admin.Get("http://localhost/debug/pprof/goroutine?debug=2")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Sprintf("pprof: %d %s", resp.StatusCode, b)
	}
	var found []string
	for _, g := range strings.Split(string(b), "\n\n") {
		// A function of the library or of the transport, not a file path.
		if strings.Contains(g, "\ngithub.com/fcgikit/fcgi.") || strings.Contains(g, "\ngithub.com/fcgikit/fcgi/caddy.") {
			found = append(found, g)
		}
	}
	return strings.Join(found, "\n\n")
}

func dialCaddy(t *testing.T, port int) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// rawUpload starts a chunked POST of path and sends body as one chunk,
// leaving the body unfinished.
func rawUpload(t *testing.T, port int, path, id string, body []byte) net.Conn {
	t.Helper()
	nc := dialCaddy(t, port)
	fmt.Fprintf(nc, "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Case: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", path, port, id, len(body))
	nc.Write(body)
	io.WriteString(nc, "\r\n")
	return nc
}

// readStatus returns the status line of the response on nc, or "".
func readStatus(nc net.Conn) string {
	line, _ := bufio.NewReader(nc).ReadString('\n')
	return strings.TrimSpace(line)
}

// reset closes nc with a TCP RST.
func reset(nc net.Conn) {
	nc.(*net.TCPConn).SetLinger(0)
	nc.Close()
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago: each stays bound until all are found, so that the system
// gives none twice.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// fullBacklogListener returns the address of a socket that listens with a
// backlog of 0 and never accepts, its queue filled: a dial to it hangs
// until it times out.
func fullBacklogListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 8 {
		nc, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { nc.Close() })
	}
	t.Fatal("a listener of backlog 0 accepts 8 connections")
	return ""
}

package fcgi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	"github.com/fcgikit/fcgi/internal/wire"
)

// authorize allows requests carrying "X-Allow: yes", passing REMOTE_USER
// and a variable of its own on, and denies the others with a 403 whose
// header and body the client must see.
func authorize(w http.ResponseWriter, r *http.Request) {
	if fcgi.RoleOf(r) != fcgi.RoleAuthorizer {
		http.Error(w, "not an authorizer request", 500)
		return
	}
	if b, err := io.ReadAll(r.Body); err != nil || len(b) != 0 || r.ContentLength != 0 {
		http.Error(w, fmt.Sprintf("body %q %v, length %d", b, err, r.ContentLength), 500)
		return
	}
	if r.Header.Get("X-Allow") != "yes" {
		w.Header().Set("WWW-Authenticate", `Basic realm="fcgikit"`)
		http.Error(w, "denied by authorizer", http.StatusForbidden)
		return
	}
	fcgi.SetVariable(w, "REMOTE_USER", "alice")
	fcgi.SetVariable(w, "AUTH_Level", "gold")
}

func authServer() *fcgi.Server {
	return &fcgi.Server{Authorizer: http.HandlerFunc(authorize)}
}

func TestAuthorizerAllow(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, network string) {
		addr := startServer(t, network, authServer(), http.HandlerFunc(hello))
		c := dial(t, network, addr)
		// lighttpd's shape: no CONTENT_LENGTH, STDIN is the empty record.
		c.Begin(1, wire.RoleAuthorizer, true).
			Params(1, "REQUEST_METHOD", "GET", "REQUEST_URI", "/private/x", "HTTP_X_ALLOW", "yes").
			Stdin(1, nil).Flush()
		resp := c.ReadResponse(1)
		h, body := parseCGI(t, resp.Stdout)
		if h["Status"] != "200 OK" || body != "" {
			t.Fatalf("got %q %q", h, body)
		}
		// The variable names keep their case: Header().Set would have
		// made them Variable-Remote_user.
		if h["Variable-REMOTE_USER"] != "alice" || h["Variable-AUTH_Level"] != "gold" {
			t.Fatalf("variables: %q", h)
		}
		if resp.End.ProtocolStatus != wire.StatusRequestComplete || resp.End.AppStatus != 0 {
			t.Fatalf("end %+v", resp.End)
		}
		// The connection is kept: a responder request follows on it.
		c.Get(1, true, "/next")
		if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != "hello, /next" {
			t.Fatalf("responder after authorizer: %q", body)
		}
	})
}

func TestAuthorizerDeny(t *testing.T) {
	addr := startServer(t, "tcp", authServer(), nil)
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleAuthorizer, false).
		Params(1, "REQUEST_METHOD", "GET", "REQUEST_URI", "/private/x").
		Stdin(1, nil).Flush()
	h, body := parseCGI(t, c.ReadResponse(1).Stdout)
	if h["Status"] != "403 Forbidden" || body != "denied by authorizer\n" || h["Www-Authenticate"] != `Basic realm="fcgikit"` {
		t.Fatalf("got %q %q", h, body)
	}
}

// An Authorizer has no body whatever the web server says: a
// CONTENT_LENGTH passed on from the client's POST, and no STDIN at all,
// still run the handler at the end of PARAMS with an empty body.
func TestAuthorizerWithoutStdin(t *testing.T) {
	addr := startServer(t, "tcp", authServer(), nil)
	c := dial(t, "tcp", addr)
	for i, kv := range [][]string{
		{"REQUEST_METHOD", "GET", "HTTP_X_ALLOW", "yes"},
		{"REQUEST_METHOD", "POST", "CONTENT_LENGTH", "42", "HTTP_X_ALLOW", "yes"},
	} {
		c.Begin(1, wire.RoleAuthorizer, true).Params(1, kv...).Flush()
		resp := c.ReadResponse(1)
		if h, _ := parseCGI(t, resp.Stdout); h["Status"] != "200 OK" {
			t.Fatalf("case %d: %q", i, resp.Stdout)
		}
		// The STDIN the web server may still send for the ended request
		// is ignored (§3.3: the ID is inactive).
		c.Stdin(1, []byte("ignored")).Flush()
	}
	c.Get(1, true, "/still-serving")
	if resp := c.ReadResponse(1); !resp.StdoutEnded {
		t.Fatalf("after authorizers: %+v", resp)
	}
}

// Each role is served only by a server configured for it; the others are
// answered FCGI_UNKNOWN_ROLE, without a response, and the connection goes
// on.
func TestRoleDispatch(t *testing.T) {
	seen := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %v", name, fcgi.RoleOf(r))
		})
	}
	for _, tc := range []struct {
		name string
		srv  *fcgi.Server
		want map[wire.Role]string // "" means UNKNOWN_ROLE
	}{
		{"responder only", &fcgi.Server{}, map[wire.Role]string{
			wire.RoleResponder: "handler RESPONDER", wire.RoleAuthorizer: "", wire.RoleFilter: "", 9: ""}},
		{"authorizer", &fcgi.Server{Authorizer: seen("auth")}, map[wire.Role]string{
			wire.RoleResponder: "handler RESPONDER", wire.RoleAuthorizer: "auth AUTHORIZER", wire.RoleFilter: ""}},
		{"filter", &fcgi.Server{Filter: seen("filter")}, map[wire.Role]string{
			wire.RoleResponder: "handler RESPONDER", wire.RoleAuthorizer: "", wire.RoleFilter: "filter FILTER", 0: ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startServer(t, "tcp", tc.srv, seen("handler"))
			c := dial(t, "tcp", addr)
			for role, want := range tc.want {
				c.Begin(2, role, true).Params(2, "REQUEST_METHOD", "GET", "CONTENT_LENGTH", "0").Stdin(2, nil).Flush()
				resp := c.ReadResponse(2)
				if want == "" {
					if resp.End.ProtocolStatus != wire.StatusUnknownRole || len(resp.Records) != 1 {
						t.Errorf("role %v: %+v, want UNKNOWN_ROLE alone", role, resp)
					}
					continue
				}
				if _, body := parseCGI(t, resp.Stdout); body != want || resp.End.ProtocolStatus != wire.StatusRequestComplete {
					t.Errorf("role %v: %q %+v, want %q", role, body, resp.End, want)
				}
			}
		})
	}
	if got := fcgi.RoleOf(httptestRequest()); got != 0 {
		t.Errorf("RoleOf(plain request) = %v, want 0", got)
	}
}

func httptestRequest() *http.Request {
	r, _ := http.NewRequest("GET", "/", nil)
	return r
}

// filterParams are the variables of a Filter request whose STDIN holds
// body and whose FCGI_DATA is declared dataLen bytes long (omitted if
// negative).
func filterParams(body string, dataLen int) []string {
	kv := []string{"REQUEST_METHOD", "POST", "REQUEST_URI", "/f.txt", "CONTENT_LENGTH", fmt.Sprint(len(body)),
		"FCGI_DATA_LAST_MOD", "1700000000"}
	if dataLen >= 0 {
		kv = append(kv, "FCGI_DATA_LENGTH", fmt.Sprint(dataLen))
	}
	return kv
}

// upper is a Filter that reports its body, the data's metadata, and the
// data upper-cased, or the error that ended the data.
func upper(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	d, ok := fcgi.FilterDataOf(r)
	if !ok {
		http.Error(w, "no filter data", 500)
		return
	}
	data, err := io.ReadAll(d)
	fmt.Fprintf(w, "body=%s len=%d mod=%d data=%s err=%v", body, d.Length, d.LastMod.Unix(), bytes.ToUpper(data), err)
}

func TestFilterData(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, network string) {
		addr := startServer(t, network, &fcgi.Server{Filter: http.HandlerFunc(upper)}, nil)
		c := dial(t, network, addr)
		for i, tc := range []struct {
			data    []string // DATA records before the empty one
			dataLen int
			want    string
		}{
			{[]string{"hello ", "world"}, 11, "len=11 mod=1700000000 data=HELLO WORLD err=<nil>"},
			{nil, 0, "len=0 mod=1700000000 data= err=<nil>"},
			{[]string{"short"}, 11, "len=11 mod=1700000000 data=SHORT err=" + fcgi.ErrDataLength.Error()},
			{[]string{"too ", "long"}, 6, "len=6 mod=1700000000 data=TOO LO err=" + fcgi.ErrDataLength.Error()},
			{[]string{"no ", "length"}, -1, "len=-1 mod=1700000000 data=NO LENGTH err=<nil>"},
		} {
			c.Begin(1, wire.RoleFilter, true).Params(1, filterParams("in", tc.dataLen)...).Stdin(1, []byte("in"))
			for _, d := range tc.data {
				c.Record(wire.TypeData, 1, []byte(d))
			}
			c.Record(wire.TypeData, 1, nil).Flush()
			resp := c.ReadResponse(1)
			if _, body := parseCGI(t, resp.Stdout); body != "body=in "+tc.want {
				t.Errorf("case %d: %q, want %q", i, body, "body=in "+tc.want)
			}
		}
	})
}

// FCGI_DATA streams: the handler reads the first record's bytes before
// the web server has sent the rest, and a DATA stream larger than
// MaxBodyBuffer goes through.
func TestFilterDataStreams(t *testing.T) {
	gotFirst := make(chan string, 1)
	srv := &fcgi.Server{MaxBodyBuffer: 1024, Filter: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := fcgi.FilterDataOf(r)
		buf := make([]byte, 100)
		n, err := d.Read(buf)
		gotFirst <- fmt.Sprint(string(buf[:n]), err)
		rest, err := io.ReadAll(d)
		fmt.Fprintf(w, "%d %v", n+len(rest), err)
	})}
	addr := startServer(t, "unix", srv, nil)
	c := dial(t, "unix", addr)
	const total = 5 + 64<<10
	c.Begin(1, wire.RoleFilter, false).Params(1, filterParams("", total)...).Stdin(1, nil).
		Record(wire.TypeData, 1, []byte("first")).Flush()
	select {
	case got := <-gotFirst:
		if got != "first<nil>" {
			t.Fatalf("first read: %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not get the first DATA record before the stream ended")
	}
	c.W.WriteStream(wire.TypeData, 1, bytes.Repeat([]byte("x"), 64<<10))
	c.Record(wire.TypeData, 1, nil).Flush()
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != fmt.Sprint(total, " <nil>") {
		t.Fatalf("got %q", body)
	}
}

// ABORT_REQUEST while the handler waits for FCGI_DATA ends the wait with
// ErrRequestAborted; the connection closing ends it with ErrConnClosed.
func TestFilterDataAbort(t *testing.T) {
	readErr := make(chan error, 1)
	srv := &fcgi.Server{Filter: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := fcgi.FilterDataOf(r)
		_, err := io.ReadAll(d)
		readErr <- err
	})}
	addr := startServer(t, "tcp", srv, nil)
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleFilter, true).Params(1, filterParams("", 100)...).Stdin(1, nil).
		Record(wire.TypeData, 1, []byte("partial")).Flush()
	time.Sleep(20 * time.Millisecond)
	c.Record(wire.TypeAbortRequest, 1, nil).Flush()
	select {
	case err := <-readErr:
		if !errors.Is(err, fcgi.ErrRequestAborted) {
			t.Fatalf("Read after abort: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler still reading FCGI_DATA after ABORT_REQUEST")
	}
	if resp := c.ReadResponse(1); resp.End.ProtocolStatus != wire.StatusRequestComplete {
		t.Fatalf("end %+v", resp.End)
	}

	c.Begin(2, wire.RoleFilter, true).Params(2, filterParams("", 100)...).Stdin(2, nil).Flush()
	time.Sleep(20 * time.Millisecond)
	c.NC.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, fcgi.ErrConnClosed) {
			t.Fatalf("Read after disconnect: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler still reading FCGI_DATA after the connection closed")
	}
}

// FCGI_DATA on requests of other roles is ignored, and a DATA record for
// a Filter is not taken for STDIN.
func TestDataIgnoredForOtherRoles(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, ok := fcgi.FilterDataOf(r)
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%v %q", ok, b)
	}))
	c := dial(t, "tcp", addr)
	c.Begin(1, wire.RoleResponder, true).Params(1, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "2").
		Record(wire.TypeData, 1, []byte("data")).Stdin(1, []byte("in")).Record(wire.TypeData, 1, nil).Flush()
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); body != `false "in"` {
		t.Fatalf("got %q", body)
	}
}

// recordKinds renders a request's records as a compact trace:
// "E:a" for STDERR content a, "E." for the empty STDERR, "O" for STDOUT
// content, "O." for the empty STDOUT, "END" for END_REQUEST.
func recordKinds(recs []fcgitest.Record) string {
	var parts []string
	for _, r := range recs {
		switch {
		case r.Type == wire.TypeStderr && len(r.Content) == 0:
			parts = append(parts, "E.")
		case r.Type == wire.TypeStderr:
			parts = append(parts, "E:"+string(r.Content))
		case r.Type == wire.TypeStdout && len(r.Content) == 0:
			parts = append(parts, "O.")
		case r.Type == wire.TypeStdout:
			parts = append(parts, "O")
		case r.Type == wire.TypeEndRequest:
			parts = append(parts, "END")
		default:
			parts = append(parts, r.Type.String())
		}
	}
	return strings.Join(parts, " ")
}

func TestStderr(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := fcgi.Stderr(w)
		io.WriteString(e, "before")
		e.Write(nil) // must not end the stream
		w.Write([]byte("body"))
		w.(http.Flusher).Flush()
		io.WriteString(e, "after")
		w.Write([]byte("more"))
	}))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/")
	resp := c.ReadResponse(1)
	if got, want := recordKinds(resp.Records), "E:before O O E:after O O. E. END"; got != want {
		t.Fatalf("records %s, want %s", got, want)
	}
	if _, body := parseCGI(t, resp.Stdout); body != "bodymore" {
		t.Fatalf("body %q", body)
	}
	// A request that writes nothing on stderr sends no STDERR record.
	addr2 := startServer(t, "tcp", nil, http.HandlerFunc(hello))
	c2 := dial(t, "tcp", addr2)
	c2.Get(1, false, "/")
	if got := recordKinds(c2.ReadResponse(1).Records); got != "O O. END" {
		t.Fatalf("quiet request: %s", got)
	}
}

// Many multiplexed requests write stderr from several goroutines each,
// some writes larger than a record: every request gets exactly its own
// text, each Write's records are adjacent on the wire, and each stream
// ends with its empty record before its END_REQUEST.
func TestStderrMultiplexed(t *testing.T) {
	const (
		nreq    = 20
		writers = 3
		lines   = 20
	)
	big := strings.Repeat("z", 70000) // two records
	addr := startServer(t, "unix", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := fcgi.Stderr(w)
		var wg sync.WaitGroup
		for g := range writers {
			wg.Go(func() {
				for i := range lines {
					fmt.Fprintf(e, "%s/%d/%d\n", r.URL.Path, g, i)
				}
			})
		}
		io.WriteString(e, big)
		wg.Wait()
		io.WriteString(w, r.URL.Path)
	}))
	c := dial(t, "unix", addr)
	for id := uint16(1); id <= nreq; id++ {
		c.Begin(id, wire.RoleResponder, true).
			Params(id, "REQUEST_METHOD", "GET", "REQUEST_URI", fmt.Sprintf("/r%d", id)).Stdin(id, nil)
	}
	c.Flush()
	stderr := make(map[uint16]string)
	stderrEnded := make(map[uint16]bool)
	var prev fcgitest.Record
	for done := 0; done < nreq; {
		rec := c.Next()
		id := rec.RequestID
		switch rec.Type {
		case wire.TypeStderr:
			if stderrEnded[id] {
				t.Fatalf("request %d: STDERR after its end", id)
			}
			if len(rec.Content) == 0 {
				stderrEnded[id] = true
			}
			stderr[id] += string(rec.Content)
		case wire.TypeEndRequest:
			if !stderrEnded[id] {
				t.Fatalf("request %d: END_REQUEST before the end of STDERR", id)
			}
			done++
		}
		// The second record of the big write follows the first at once.
		if prev.Type == wire.TypeStderr && len(prev.Content) == wire.MaxContent &&
			(rec.Type != wire.TypeStderr || rec.RequestID != prev.RequestID) {
			t.Fatalf("a Write's records were split by %v", rec.Header)
		}
		prev = rec
	}
	for id := uint16(1); id <= nreq; id++ {
		got := stderr[id]
		if n := strings.Count(got, big); n != 1 {
			t.Fatalf("request %d: big write appears %d times", id, n)
		}
		got = strings.Replace(got, big, "", 1)
		if n := strings.Count(got, "\n"); n != writers*lines {
			t.Fatalf("request %d: %d lines", id, n)
		}
		for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
			if !strings.HasPrefix(line, fmt.Sprintf("/r%d/", id)) {
				t.Fatalf("request %d got another's line %q", id, line)
			}
		}
	}
}

// A Stderr writer kept past the handler's return fails instead of
// writing after the END_REQUEST, on an ID that may already serve the next
// request.
func TestStderrAfterReturn(t *testing.T) {
	kept := make(chan io.Writer, 1)
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keep" {
			kept <- fcgi.Stderr(w)
		}
		io.WriteString(w, "ok")
	}))
	c := dial(t, "tcp", addr)
	c.Get(1, true, "/keep")
	c.ReadResponse(1)
	e := <-kept
	if _, err := io.WriteString(e, "late"); !errors.Is(err, http.ErrHandlerTimeout) {
		t.Fatalf("late write: %v", err)
	}
	c.Get(1, true, "/next")
	if got := recordKinds(c.ReadResponse(1).Records); got != "O O. END" {
		t.Fatalf("next request: %s", got)
	}
}

// unwrapper is middleware's ResponseWriter, found through Unwrap.
type unwrapper struct{ http.ResponseWriter }

func (u unwrapper) Unwrap() http.ResponseWriter { return u.ResponseWriter }

func TestAppStatus(t *testing.T) {
	addr := startServer(t, "tcp", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/wrapped":
			fcgi.SetAppStatus(unwrapper{w}, 7)
			fcgi.Stderr(unwrapper{w}).Write([]byte("x"))
		case "/late":
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			fcgi.SetAppStatus(w, 1<<32-1)
		}
	}))
	c := dial(t, "tcp", addr)
	for _, tc := range []struct {
		path string
		want uint32
	}{{"/wrapped", 7}, {"/late", 1<<32 - 1}, {"/none", 0}} {
		c.Get(1, true, tc.path)
		resp := c.ReadResponse(1)
		if resp.End.AppStatus != tc.want || resp.End.ProtocolStatus != wire.StatusRequestComplete || !resp.StdoutEnded {
			t.Errorf("%s: %+v, want appStatus %d", tc.path, resp.End, tc.want)
		}
	}
	// Outside this package the helpers do nothing harmful.
	rec := unwrapper{}
	fcgi.SetAppStatus(rec, 3)
	if fcgi.Stderr(rec) == nil {
		t.Error("Stderr returned nil for a foreign ResponseWriter")
	}
	if _, ok := fcgi.FilterDataOf(httptestRequest().WithContext(context.Background())); ok {
		t.Error("FilterDataOf(plain request) ok")
	}
}

// DATA before STDIN is out of the order §6.4 gives, but a web server that
// sends it (more than a buffer's worth), without CONTENT_LENGTH, must
// still be answered by a handler that reads the data first, rather than
// stall the connection waiting for STDIN to start the handler.
func TestFilterDataBeforeStdin(t *testing.T) {
	srv := &fcgi.Server{MaxBodyBuffer: 1024, Filter: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := fcgi.FilterDataOf(r)
		data, err := io.ReadAll(d)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "body=%s len=%d mod=%d data=%s err=%v", body, d.Length, d.LastMod.Unix(), bytes.ToUpper(data), err)
	})}
	addr := startServer(t, "unix", srv, nil)
	c := dial(t, "unix", addr)
	data := bytes.Repeat([]byte("d"), 8<<10)
	c.Begin(1, wire.RoleFilter, true).Params(1, slices.Delete(filterParams("in", len(data)), 4, 6)...)
	for p := data; len(p) > 0; p = p[1024:] {
		c.Record(wire.TypeData, 1, p[:1024]) // each record fills the buffer
	}
	c.Record(wire.TypeData, 1, nil).Stdin(1, []byte("in")).Flush()
	_, body := parseCGI(t, c.ReadResponse(1).Stdout)
	want := fmt.Sprintf("body=in len=%d mod=1700000000 data=%s err=<nil>", len(data), bytes.ToUpper(data))
	if body != want {
		t.Fatalf("got %.80q…, want %.80q…", body, want)
	}
	// The connection still serves.
	c.Begin(1, wire.RoleFilter, true).Params(1, filterParams("", 2)...).Stdin(1, nil).Record(wire.TypeData, 1, []byte("ok")).Record(wire.TypeData, 1, nil).Flush()
	if _, body := parseCGI(t, c.ReadResponse(1).Stdout); !strings.Contains(body, "data=OK err=<nil>") {
		t.Fatalf("second request: %q", body)
	}
}

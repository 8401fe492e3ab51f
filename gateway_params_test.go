package fcgi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fcgikit/fcgi/internal/defaults"
)

// The sizes at which a name-value pair reaches the default Gateway.MaxParamPairBytes:
// a name under 128 bytes takes one length byte, a value over 127 four.
const (
	bigHeaderAtLimit = defaults.GatewayMaxParamPairBytes - 1 - 4 - len("HTTP_X_BIG")
	// REQUEST_URI is "/app.php?" and the query.
	bigQueryAtLimit = defaults.GatewayMaxParamPairBytes - 1 - 4 - len("REQUEST_URI") - len("/app.php?")
)

// getWithHeader sends a GET for target with header fields set, and returns
// the status and body.
func getWithHeader(t *testing.T, srv *httptest.Server, target string, h http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A header or URL that would make a parameter longer than MaxParamPairBytes
// is answered 431 or 414 without reaching the application; one at the
// limit reaches it whole.
func TestGatewayParamTooLong(t *testing.T) {
	checkLeaks(t)
	app := echoApp(t)
	g, logs := newGateway(t, app.Addr, docRoot(t))
	srv := httptest.NewServer(g)
	defer srv.Close()
	auth := httptest.NewServer(g.Authorizer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "next") })))
	defer auth.Close()
	v := func(n int) string { return strings.Repeat("v", n) }

	code, body := getWithHeader(t, srv, "/app.php", http.Header{"X-Big": {v(bigHeaderAtLimit)}})
	var e echoed
	json.Unmarshal([]byte(body), &e)
	if code != 200 || len(e.Params["HTTP_X_BIG"]) != bigHeaderAtLimit {
		t.Fatalf("header at the limit: %d, HTTP_X_BIG of %d bytes", code, len(e.Params["HTTP_X_BIG"]))
	}
	code, body = getWithHeader(t, srv, "/app.php?"+v(bigQueryAtLimit), nil)
	e = echoed{}
	json.Unmarshal([]byte(body), &e)
	if code != 200 || len(e.Params["QUERY_STRING"]) != bigQueryAtLimit {
		t.Fatalf("URL at the limit: %d, QUERY_STRING of %d bytes", code, len(e.Params["QUERY_STRING"]))
	}
	reached := app.requests.Load()

	for _, tc := range []struct {
		name   string
		srv    *httptest.Server
		target string
		h      http.Header
		code   int
	}{
		{"header", srv, "/app.php", http.Header{"X-Big": {v(bigHeaderAtLimit + 1)}}, http.StatusRequestHeaderFieldsTooLarge},
		{"fields joined", srv, "/app.php", http.Header{"Cookie": {v(40 << 10), v(40 << 10)}}, http.StatusRequestHeaderFieldsTooLarge},
		{"URL", srv, "/app.php?" + v(bigQueryAtLimit+1), nil, http.StatusRequestURITooLong},
		{"header to an authorizer", auth, "/app.php", http.Header{"X-Big": {v(bigHeaderAtLimit + 1)}}, http.StatusRequestHeaderFieldsTooLarge},
	} {
		if code, body := getWithHeader(t, tc.srv, tc.target, tc.h); code != tc.code {
			t.Errorf("%s: %d %.80q, want %d", tc.name, code, body, tc.code)
		}
	}
	if n := app.requests.Load() - reached; n != 0 {
		t.Errorf("%d refused requests reached the application", n)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a client's mistake logged as an error:\n%.2000s", logs.String())
	}

	// The limit is the Gateway's to set.
	for _, tc := range []struct {
		max, size, code int
	}{
		{1000, 1000 - 15, 200},
		{1000, 1000 - 14, http.StatusRequestHeaderFieldsTooLarge},
		// Without a limit, the pair is sent across records, which
		// fcgikit's server and the fake application reassemble.
		{-1, 100 << 10, 200},
	} {
		g, _ := newGateway(t, app.Addr, docRoot(t))
		g.MaxParamPairBytes = tc.max
		req := httptest.NewRequest("GET", "/app.php", nil)
		req.Header.Set("X-Big", v(tc.size))
		w := httptest.NewRecorder()
		g.ServeHTTP(w, req)
		e = echoed{}
		json.Unmarshal(w.Body.Bytes(), &e)
		if w.Code != tc.code || tc.code == 200 && len(e.Params["HTTP_X_BIG"]) != tc.size {
			t.Errorf("MaxParamPairBytes %d, header of %d bytes: %d, want %d", tc.max, tc.size, w.Code, tc.code)
		}
	}
}

package cgihdr

import (
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"testing"
)

// errMalformed stands for an *Error in the table of TestParse.
var errMalformed = errors.New("malformed")

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in     string
		status int
		header http.Header
		err    error
	}{
		{"Content-Type: text/html\r\n\r\n", 200, http.Header{"Content-Type": {"text/html"}}, nil},
		{"Status: 404\r\n\r\n", 404, http.Header{}, nil},
		{"Status: 404 Not Found\r\nX: y\r\n\r\n", 404, http.Header{"X": {"y"}}, nil},
		{"status:503 Service Unavailable\n\n", 503, http.Header{}, nil},
		{"Location: http://example.com/\r\n\r\n", 302, http.Header{"Location": {"http://example.com/"}}, nil},
		{"Location: /local\n\n", 302, http.Header{"Location": {"/local"}}, nil},
		{"Status: 301\r\nLocation: /x\r\n\r\n", 301, http.Header{"Location": {"/x"}}, nil},
		{"x-lower:  spaced \t\n\n", 200, http.Header{"X-Lower": {"spaced"}}, nil},
		{"Set-Cookie: a=1\nSet-Cookie: b=2\n\n", 200, http.Header{"Set-Cookie": {"a=1", "b=2"}}, nil},
		{"Status: 200\nStatus: 500\n\n", 200, http.Header{}, nil},
		{"\r\n", 200, http.Header{}, nil},
		{"Status: 20\n\n", 0, nil, errMalformed},
		{"Status: 2000\n\n", 0, nil, errMalformed},
		{"Status: OK\n\n", 0, nil, errMalformed},
		{"no colon\n\n", 0, nil, errMalformed},
		{": empty name\n\n", 0, nil, errMalformed},
		{"Bad Name: x\n\n", 0, nil, errMalformed},
		{"X: a\rb\n\n", 0, nil, errMalformed},
		{"X: a\x00b\n\n", 0, nil, errMalformed},
		// An interim status is no final answer: a client that asked for
		// no upgrade would wait forever after a 101.
		{"Status: 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 0, nil, errMalformed},
		{"Status: 100\n\n", 0, nil, errMalformed},
		{"Status: 103 Early Hints\nLink: </a.css>\n\n", 0, nil, errMalformed}, // ParseAny's

		{"Status: 199\n\n", 0, nil, errMalformed},
		{"Status: 200\n\n", 200, http.Header{}, nil},
		// Content-Length: one value, or identical ones collapsed; anything
		// else would make the HTTP client wait for bytes that never come.
		{"Content-Length: 4\r\n\r\n", 200, http.Header{"Content-Length": {"4"}}, nil},
		{"Content-Length: 0\n\n", 200, http.Header{"Content-Length": {"0"}}, nil},
		{"Content-Length: 4\nContent-Length: 4\n\n", 200, http.Header{"Content-Length": {"4"}}, nil},
		{"Content-Length: 4, 4\n\n", 200, http.Header{"Content-Length": {"4"}}, nil},
		{"Content-Length: 4\r\nContent-Length: 7\r\n\r\n", 0, nil, errMalformed},
		{"content-length: 4\nContent-Length: 7\n\n", 0, nil, errMalformed},
		{"Content-Length: 4, 7\n\n", 0, nil, errMalformed},
		{"Content-Length: 4,\n\n", 0, nil, errMalformed},
		{"Content-Length: -1\n\n", 0, nil, errMalformed},
		{"Content-Length: +4\n\n", 0, nil, errMalformed},
		{"Content-Length: 4x\n\n", 0, nil, errMalformed},
		{"Content-Length: 0x10\n\n", 0, nil, errMalformed},
		{"Content-Length: 4 4\n\n", 0, nil, errMalformed},
		{"Content-Length:\n\n", 0, nil, errMalformed},
		{"Content-Length: 99999999999999999999\n\n", 0, nil, errMalformed},
	} {
		status, h, err := Parse([]byte(tc.in), nil)
		if tc.err != nil {
			if he := (*Error)(nil); !errors.As(err, &he) {
				t.Errorf("%q: error %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || status != tc.status || !reflect.DeepEqual(h, tc.header) {
			t.Errorf("%q: got %d %v %v, want %d %v", tc.in, status, h, err, tc.status, tc.header)
		}
	}
}

// A header straddling records, with LF-only and CRLF line ends, is found
// wherever the records are cut.
// ParseAny returns an interim block's status and fields, which Parse
// refuses; it refuses 101 as Parse does, and reads a final block as Parse
// does.
func TestParseAny(t *testing.T) {
	for _, tc := range []struct {
		in      string
		interim bool
		status  int
		link    string
		err     bool
	}{
		{"Status: 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", true, 103, "</s.css>; rel=preload", false},
		{"Link: </s.css>\nstatus:  103\n\n", true, 103, "</s.css>", false},
		{"Status: 100\nContent-Length: x\n\n", true, 100, "", false},
		{"Status: 199\n\n", true, 199, "", false},
		{"Status: 101 Switching Protocols\n\n", false, 0, "", true},
		{"Status: 200\nLink: </a>\n\n", false, 200, "</a>", false},
		{"Link: </a>\n\n", false, 200, "</a>", false},
		{"Status: 103\nStatus: 200\n\n", true, 103, "", false},
		{"Status: 10\n\n", false, 0, "", true},
	} {
		if got := IsInterim([]byte(tc.in)); got != tc.interim {
			t.Errorf("IsInterim(%q) = %v", tc.in, got)
		}
		status, h, err := ParseAny([]byte(tc.in), nil)
		if (err != nil) != tc.err || status != tc.status || (err == nil && h.Get("Link") != tc.link) {
			t.Errorf("ParseAny(%q) = %d %v %v", tc.in, status, h, err)
		}
		if _, _, err := Parse([]byte(tc.in), nil); tc.interim && err == nil {
			t.Errorf("Parse(%q) accepted an interim block", tc.in)
		}
	}
}

// Next goes on from the bytes after an interim block, including when they
// alias the scanner's buffer, and counts its limit from there.
func TestScannerNext(t *testing.T) {
	in := "Status: 103\r\nLink: </a>\r\n\r\nStatus: 103\nLink: </b>\n\nX: y\n\nbody"
	for cut := 0; cut <= len(in); cut++ {
		var s Scanner
		var blocks []string
		var rest []byte
		h, r, done, err := s.Feed([]byte(in[:cut]), 1000)
		if !done && err == nil {
			h, r, done, err = s.Feed([]byte(in[cut:]), 1000)
		} else if done {
			r = append(append([]byte(nil), r...), in[cut:]...)
		}
		for done && err == nil {
			blocks = append(blocks, string(h))
			rest = r
			if !IsInterim(h) {
				break
			}
			h, r, done, err = s.Next(r, 1000)
		}
		if err != nil || len(blocks) != 3 || blocks[1] != "Status: 103\nLink: </b>\n\n" || blocks[2] != "X: y\n\n" || string(rest) != "body" {
			t.Fatalf("cut %d: %q %q %v", cut, blocks, rest, err)
		}
	}
	var s Scanner
	if _, _, _, err := s.Next([]byte("Status: 103\nLink: "+string(make([]byte, 50))), 40); err != ErrTooLarge {
		t.Fatalf("over the limit: %v", err)
	}
}

func TestScannerSplits(t *testing.T) {
	in := "Status: 404\nContent-Type: text/plain\r\nX: y\n\r\nbody\n\nmore"
	for cut1 := 0; cut1 <= len(in); cut1++ {
		for cut2 := cut1; cut2 <= len(in); cut2++ {
			var s Scanner
			var hdr, rest []byte
			done := false
			for _, part := range []string{in[:cut1], in[cut1:cut2], in[cut2:]} {
				if done {
					rest = append(rest, part...)
					continue
				}
				h, r, d, err := s.Feed([]byte(part), 1000)
				if err != nil {
					t.Fatal(err)
				}
				if d {
					hdr, rest, done = h, append([]byte(nil), r...), true
				}
			}
			if !done || string(hdr) != "Status: 404\nContent-Type: text/plain\r\nX: y\n\r\n" || string(rest) != "body\n\nmore" {
				t.Fatalf("cuts %d,%d: %q %q %v", cut1, cut2, hdr, rest, done)
			}
		}
	}
}

func TestScannerLimit(t *testing.T) {
	var s Scanner
	if _, _, _, err := s.Feed([]byte("X: 0123456789\n"), 20); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Feed([]byte("Y: 0123456789\n"), 20); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v", err)
	}
	var s2 Scanner
	if _, _, _, err := s2.Feed([]byte("X: 0123456789012345678\n\nbody"), 20); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v", err)
	}
}

// FuzzCGIResponse feeds arbitrary STDOUT, cut into three records at
// arbitrary places, to the header scanner and parser. They must not panic,
// must find the same header whatever the cuts, and a parsed header must be
// safe to send on: a valid status and no control characters.
func FuzzCGIResponse(f *testing.F) {
	for _, s := range []string{
		"Content-Type: text/html\r\n\r\n<p>hi",
		"Status: 404 Not Found\nX-Powered-By: PHP\n\nFile not found.\n",
		"Location: https://example.com/\r\n\r\n",
		"Status: 99\r\n\r\n",
		"X: a\r\nbroken",
		"\n\n",
		"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
		"Status: 101\r\n\r\n",
		"Content-Length: 4\r\ncontent-length: 4, 04\r\n\r\nbody",
		"Content-Length: 4\r\nContent-Length: 7\r\n\r\nbody",
		"Status: 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nStatus: 200 OK\r\n\r\nbody",
		"Status: 103\nLink: </a>\n\nStatus: 103\nLink: </b>\n\nX: y\n\nbody",
		"Status: 100\r\nContent-Length: x\r\n\r\nStatus: 204\r\n\r\n",
		"X: y\r\nstatus:102\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(3), uint16(9))
	}
	f.Fuzz(func(t *testing.T, data []byte, c1, c2 uint16) {
		const limit = 4096
		a := min(int(c1), len(data))
		b := min(a+int(c2), len(data))
		var whole Scanner
		wh, wrest, wdone, werr := whole.Feed(data, limit)
		var s Scanner
		var hdr, rest []byte
		var done bool
		var err error
		for _, part := range [][]byte{data[:a], data[a:b], data[b:]} {
			if done {
				rest = append(rest, part...)
				continue
			}
			var h, r []byte
			h, r, done, err = s.Feed(part, limit)
			if err != nil {
				break
			}
			if done {
				hdr, rest = h, append([]byte(nil), r...)
			}
		}
		if werr == nil && wdone {
			if err != nil || !done || string(hdr) != string(wh) || string(rest) != string(wrest) {
				t.Fatalf("split scan differs: %q %q %v vs %q %q", hdr, rest, err, wh, wrest)
			}
		}
		if !wdone || werr != nil {
			return
		}
		// An interim block, and the block after it, as the Client reads them.
		astatus, ah, aerr := ParseAny(wh, nil)
		if IsInterim(wh) {
			if aerr == nil && (astatus < 100 || astatus > 199 || astatus == 101) {
				t.Fatalf("interim block parsed as %d", astatus)
			}
			var fresh Scanner
			fh, frest, fdone, ferr := fresh.Feed(append([]byte(nil), wrest...), limit)
			nh, nrest, ndone, nerr := whole.Next(wrest, limit)
			if (ferr == nil) != (nerr == nil) || fdone != ndone || string(fh) != string(nh) || string(frest) != string(nrest) {
				t.Fatalf("Next %q %q %v %v, fresh Feed %q %q %v %v", nh, nrest, ndone, nerr, fh, frest, fdone, ferr)
			}
		} else if astatus2, h2, err2 := Parse(wh, nil); (aerr == nil) != (err2 == nil) || astatus != astatus2 || (aerr == nil && !reflect.DeepEqual(ah, h2)) {
			t.Fatalf("ParseAny %d %v %v, Parse %d %v %v", astatus, ah, aerr, astatus2, h2, err2)
		}
		status, h, err := Parse(wh, nil)
		// Into a given map (the gateway's ResponseWriter's): the same
		// result, and the map left empty on error.
		into := http.Header{}
		status2, _, err2 := Parse(wh, into)
		if (err == nil) != (err2 == nil) || status2 != status || (err == nil && !reflect.DeepEqual(into, h)) || (err != nil && len(into) != 0) {
			t.Fatalf("into a map: %d %v %v; new map: %d %v %v", status2, into, err2, status, h, err)
		}
		if err != nil {
			if he := (*Error)(nil); !errors.As(err, &he) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if status < 200 || status > 999 {
			t.Fatalf("status %d", status)
		}
		if cl, ok := h["Content-Length"]; ok {
			if n, err := strconv.ParseInt(cl[0], 10, 64); len(cl) != 1 || err != nil || n < 0 || cl[0] != strconv.FormatInt(n, 10) {
				t.Fatalf("Content-Length %q", cl)
			}
		}
		for k, vs := range h {
			if !ValidName(k) || k == "Status" {
				t.Fatalf("header name %q", k)
			}
			for _, v := range vs {
				if !ValidValue(v) {
					t.Fatalf("header value %q", v)
				}
			}
		}
	})
}

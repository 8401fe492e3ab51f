// Package cgihdr is the CGI response header (RFC 3875 §6): the one parser
// used by the library's Client (and so its Gateway) and by the fcgi
// command (bench, lint, and wrap's CGI scripts), so that they all agree on
// what a response's status and header are.
//
// The header is what a Responder writes at the start of its output:
// header lines, each ended by LF or CRLF, then an empty line. Status:
// gives the HTTP status ("404" or "404 Not Found"); without it, Location:
// means 302 Found (as nginx does) and anything else 200. A 1xx Status,
// Content-Length fields that disagree, and a Content-Length that is not a
// non-negative integer make the response malformed: an HTTP client given
// them would wait for what never comes.
//
// It imports only the standard library.
package cgihdr

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// DefaultLimit is the limit on a header, blank line included, that
// fcgi.Client and the fcgi command apply unless told otherwise.
const DefaultLimit = 64 << 10

// ErrTooLarge is returned by [Scanner.Feed] when the header is longer
// than its limit.
var ErrTooLarge = errors.New("CGI response header too large")

// An Error says what is malformed in a CGI response header. Every error
// [Parse] returns is one.
type Error struct {
	Detail string // what is wrong: `header name "a b"`
}

func (e *Error) Error() string { return "malformed CGI response: " + e.Detail }

func malformed(format string, args ...any) error {
	return &Error{Detail: fmt.Sprintf(format, args...)}
}

// End finds the end of a CGI header in b, scanning lines from
// offset from, which must be the start of a line. It returns the length of
// the header including its blank line, or -1 and the offset of the first
// incomplete line so that a later call can resume there.
func End(b []byte, from int) (end, next int) {
	for {
		i := bytes.IndexByte(b[from:], '\n')
		if i < 0 {
			return -1, from
		}
		line := b[from : from+i]
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return from + i + 1, from
		}
		from += i + 1
	}
}

// A Scanner collects a CGI header that may straddle STDOUT records.
// The zero value is ready; it copies only when the header does not fit in
// the first record.
type Scanner struct {
	buf  []byte
	next int
}

// Feed adds p, a piece of STDOUT, and reports whether the header is
// complete. When it is, header holds it (blank line included) and rest the
// body bytes that followed; both alias p or the scanner's buffer and stay
// valid until p changes or the scanner is reset.
func (s *Scanner) Feed(p []byte, limit int) (header, rest []byte, done bool, err error) {
	if len(s.buf) == 0 {
		end, next := End(p, 0)
		if end >= 0 {
			if end > limit {
				return nil, nil, false, ErrTooLarge
			}
			return p[:end], p[end:], true, nil
		}
		if len(p) > limit {
			return nil, nil, false, ErrTooLarge
		}
		s.buf = append(s.buf, p...)
		s.next = next
		return nil, nil, false, nil
	}
	s.buf = append(s.buf, p...)
	return s.scan(limit)
}

// scan looks for the end of the header in buf, from where the last scan
// stopped.
func (s *Scanner) scan(limit int) (header, rest []byte, done bool, err error) {
	end, next := End(s.buf, s.next)
	s.next = next
	if end < 0 {
		if len(s.buf) > limit {
			return nil, nil, false, ErrTooLarge
		}
		return nil, nil, false, nil
	}
	if end > limit {
		return nil, nil, false, ErrTooLarge
	}
	return s.buf[:end], s.buf[end:], true, nil
}

// Next readies the scanner for another header that starts with rest, the
// bytes that followed the header Feed returned (an interim block is followed
// by the next block). It returns the result of feeding rest.
func (s *Scanner) Next(rest []byte, limit int) (header, rest2 []byte, done bool, err error) {
	// rest may alias buf: the copy to its start moves it safely.
	s.buf = append(s.buf[:0], rest...)
	s.next = 0
	if len(s.buf) == 0 {
		return nil, nil, false, nil
	}
	return s.scan(limit)
}

// Parse parses a complete CGI header, as found by End or a Scanner, into
// an HTTP status and header. The Status field is removed from the header.
// The header is h when h is not nil (it must be empty; it is left empty on
// error), a new one otherwise.
func Parse(block []byte, h http.Header) (status int, _ http.Header, err error) {
	return parse(block, h, false)
}

// ParseAny is Parse that also accepts an interim response: a block whose
// Status is a 1xx code other than 101, such as the 103 Early Hints block an
// application sends before its final header (see docs/early-hints.md in the
// module). Such a block's status is returned with its fields, and its
// Content-Length is not checked: the caller passes it on as an interim
// response, or drops it, and reads the next block. 101 Switching Protocols
// stays malformed: a CGI response cannot switch protocols.
func ParseAny(block []byte, h http.Header) (status int, _ http.Header, err error) {
	return parse(block, h, true)
}

// IsInterim reports whether block, a complete header, is an interim
// response: its first Status field is a 1xx code other than 101. The caller
// parses it with ParseAny.
func IsInterim(block []byte) bool {
	for len(block) > 0 {
		i := bytes.IndexByte(block, '\n')
		if i < 0 {
			return false
		}
		line := block[:i]
		block = block[i+1:]
		if len(line) < 7 || !strings.EqualFold(string(line[:7]), "status:") {
			continue
		}
		code, ok := parseStatus(strings.Trim(string(line[7:]), " \t\r"))
		return ok && code < 200 && code != http.StatusSwitchingProtocols
	}
	return false
}

func parse(block []byte, h http.Header, interim bool) (status int, _ http.Header, err error) {
	// One string for the whole block: names and values are substrings of
	// it, so the header costs one allocation plus the map.
	s := string(block)
	lines := bytes.Count(block, []byte{'\n'})
	if h == nil {
		h = make(http.Header, lines)
	} else {
		defer func() {
			if err != nil {
				clear(h) // nothing of a refused header is left for an error page
			}
		}()
	}
	// One backing array for the values of all lines: a name seen once
	// gets a one-element slice of it, capped so that appending copies.
	vals := make([]string, 0, lines)
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return 0, nil, malformed("header line without end")
		}
		line := s[:i]
		s = s[i+1:]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if line == "" {
			break
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return 0, nil, malformed("header line %q", clip(line))
		}
		name := line[:colon]
		if !ValidName(name) {
			return 0, nil, malformed("header name %q", clip(name))
		}
		value := strings.Trim(line[colon+1:], " \t")
		if !ValidValue(value) {
			return 0, nil, malformed("value of %q has control characters", clip(name))
		}
		name = http.CanonicalHeaderKey(name)
		if name == "Status" {
			if status != 0 {
				continue // the first Status wins
			}
			code, ok := parseStatus(value)
			if !ok {
				return 0, nil, malformed("Status %q", clip(value))
			}
			if code < 200 && interim && code != http.StatusSwitchingProtocols {
				status = code
				continue
			}
			if code < 200 {
				// CGI has no interim responses: passed on, a 1xx
				// leaves the HTTP client waiting for the final one.
				return 0, nil, malformed("Status %d is an interim status, not a final one", code)
			}
			status = code
			continue
		}
		if old, ok := h[name]; ok {
			h[name] = append(old, value)
		} else {
			vals = append(vals, value)
			h[name] = vals[len(vals)-1 : len(vals) : len(vals)]
		}
	}
	if status >= 100 && status < 200 {
		return status, h, nil
	}
	if cl, ok := h["Content-Length"]; ok {
		n, ok := contentLength(cl)
		if !ok {
			return 0, nil, malformed("Content-Length %q", clip(strings.Join(cl, ", ")))
		}
		if len(cl) != 1 || cl[0] != n {
			h["Content-Length"] = []string{n}
		}
	}
	if status == 0 {
		status = http.StatusOK
		if _, ok := h["Location"]; ok {
			status = http.StatusFound
		}
	}
	return status, h, nil
}

// contentLength returns the length the Content-Length fields vs give,
// each a list of values: all must be the same non-negative decimal
// integer, which RFC 9110 §8.6 allows to be collapsed into one. Two
// different lengths are refused, as the RFC asks: passed on, they leave
// the HTTP client waiting for bytes that never come.
func contentLength(vs []string) (string, bool) {
	var n int64 = -1
	for _, v := range vs {
		for {
			item, rest, more := strings.Cut(v, ",")
			item = strings.Trim(item, " \t")
			if item == "" || len(item) > 18 {
				return "", false // empty, or beyond any real length (and int64)
			}
			var m int64
			for i := 0; i < len(item); i++ {
				c := item[i]
				if c < '0' || c > '9' {
					return "", false
				}
				m = m*10 + int64(c-'0')
			}
			if n >= 0 && m != n {
				return "", false
			}
			n = m
			if !more {
				break
			}
			v = rest
		}
	}
	if len(vs) == 1 && strings.IndexByte(vs[0], ',') < 0 && (vs[0] == "0" || vs[0][0] != '0') {
		return vs[0], true // the usual case: no string to build
	}
	return strconv.FormatInt(n, 10), true
}

// parseStatus accepts "NNN" or "NNN reason" with NNN from 100 to 999.
func parseStatus(v string) (int, bool) {
	if len(v) < 3 || (len(v) > 3 && v[3] != ' ' && v[3] != '\t') {
		return 0, false
	}
	code := 0
	for i := 0; i < 3; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, false
	}
	return code, true
}

// ValidValue reports whether v is a header value to pass on: it rejects control characters other than tab, so that a
// backend cannot split the response.
func ValidValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// ValidName reports whether name is an RFC 9110 token, a header name
// that may be sent on.
func ValidName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 0x80 || tokenTable[c] == 0 {
			return false
		}
	}
	return true
}

// tokenTable marks the bytes allowed in an RFC 9110 token.
var tokenTable = func() (t [128]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = 1
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = 1
		t[c-'a'+'A'] = 1
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = 1
	}
	return t
}()

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

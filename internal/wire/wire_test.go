package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestRecordRoundTrip(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	big := bytes.Repeat([]byte("x"), 70000)
	must(t, w.WriteBeginRequest(1, RoleResponder, FlagKeepConn))
	must(t, w.WriteStream(TypeStdout, 1, big))
	must(t, w.WriteRecord(TypeStdout, 1, nil))
	must(t, w.WriteStream(TypeStderr, 300, []byte("oops")))
	must(t, w.WriteEndRequest(1, 0xdeadbeef, StatusOverloaded))
	must(t, w.WriteUnknownType(Type(200)))
	if w.Buffered() != (8+8)+(8+65535)+(8+70000-65535)+8+(8+4)+(8+8)+(8+8) {
		t.Fatalf("Buffered = %d", w.Buffered())
	}
	must(t, w.Flush())
	if w.Buffered() != 0 {
		t.Fatalf("Buffered after flush = %d", w.Buffered())
	}

	r := NewReader(iotest.OneByteReader(&out))
	rec := next(t, r)
	br, err := ParseBeginRequest(rec.Content)
	if rec.Type != TypeBeginRequest || rec.RequestID != 1 || err != nil || br.Role != RoleResponder || !br.KeepConn() {
		t.Fatalf("begin: %v %+v %v", rec.Header, br, err)
	}
	var got []byte
	for _, want := range []int{65535, 70000 - 65535, 0} {
		rec = next(t, r)
		if rec.Type != TypeStdout || int(rec.ContentLength) != want || rec.PaddingLength != 0 {
			t.Fatalf("stdout: %v, want len %d", rec.Header, want)
		}
		got = append(got, rec.Content...)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("stdout content differs")
	}
	rec = next(t, r)
	if rec.Type != TypeStderr || rec.RequestID != 300 || string(rec.Content) != "oops" {
		t.Fatalf("stderr: %v %q", rec.Header, rec.Content)
	}
	rec = next(t, r)
	er, err := ParseEndRequest(rec.Content)
	if err != nil || er.AppStatus != 0xdeadbeef || er.ProtocolStatus != StatusOverloaded {
		t.Fatalf("end: %+v %v", er, err)
	}
	rec = next(t, r)
	ut, err := ParseUnknownType(rec.Content)
	if rec.Type != TypeUnknownType || rec.RequestID != 0 || err != nil || ut != 200 {
		t.Fatalf("unknown type: %v %v %v", rec.Header, ut, err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestReaderSkipsPadding(t *testing.T) {
	stream := []byte{
		1, byte(TypeStdin), 0, 1, 0, 3, 5, 0, 'a', 'b', 'c', 9, 9, 9, 9, 9,
		1, byte(TypeStdin), 0, 1, 0, 0, 0, 0,
	}
	r := NewReader(bytes.NewReader(stream))
	if rec := next(t, r); string(rec.Content) != "abc" || rec.PaddingLength != 5 {
		t.Fatalf("got %v %q", rec.Header, rec.Content)
	}
	if rec := next(t, r); rec.ContentLength != 0 {
		t.Fatalf("got %v", rec.Header)
	}
}

func TestReaderErrors(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
		want   error
	}{
		{"bad version", []byte{2, 1, 0, 1, 0, 8, 0, 0}, ErrVersion},
		{"short header", []byte{1, 1, 0}, io.ErrUnexpectedEOF},
		{"content past end", []byte{1, 5, 0, 1, 0, 10, 0, 0, 'a'}, io.ErrUnexpectedEOF},
		{"padding past end", []byte{1, 5, 0, 1, 0, 1, 4, 0, 'a', 0}, io.ErrUnexpectedEOF},
		{"huge declared length", []byte{1, 5, 0, 1, 0xff, 0xff, 0xff, 0}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tt.stream)).Next()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// A header that declares a long record must not make the Reader allocate
// for bytes that never came.
func TestReaderMemoryFollowsArrivals(t *testing.T) {
	r := NewReader(bytes.NewReader([]byte{1, 5, 0, 1, 0xff, 0xff, 0xff, 0, 'x'}))
	if _, err := r.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("err = %v", err)
	}
	if len(r.buf) > readBufSize {
		t.Fatalf("buffer grew to %d for 9 bytes received", len(r.buf))
	}
}

func TestReaderNonStickyErrors(t *testing.T) {
	stream := []byte{1, byte(TypeStdin), 0, 7, 0, 2, 0, 0, 'h', 'i'}
	r := NewReader(&failOnce{parts: [][]byte{stream[:5], nil, stream[5:]}})
	if _, err := r.Next(); err != errTimeout {
		t.Fatalf("first Next: %v", err)
	}
	rec := next(t, r)
	if rec.RequestID != 7 || string(rec.Content) != "hi" {
		t.Fatalf("after retry: %v %q", rec.Header, rec.Content)
	}
}

var errTimeout = errors.New("timeout")

// failOnce returns its parts one read at a time; a nil part is a read that
// fails with errTimeout.
type failOnce struct{ parts [][]byte }

func (f *failOnce) Read(p []byte) (int, error) {
	if len(f.parts) == 0 {
		return 0, io.EOF
	}
	part := f.parts[0]
	f.parts = f.parts[1:]
	if part == nil {
		return 0, errTimeout
	}
	return copy(p, part), nil
}

func TestReaderReleaseReuse(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	must(t, w.WriteStream(TypeStdin, 2, bytes.Repeat([]byte("y"), 20000)))
	must(t, w.Flush())
	r := NewReader(bytes.NewReader(out.Bytes()))
	if rec := next(t, r); len(rec.Content) != 20000 {
		t.Fatalf("len %d", len(rec.Content))
	}
	r.Release()
	r.Reset(bytes.NewReader([]byte{1, 6, 0, 3, 0, 1, 0, 0, 'z'}))
	if rec := next(t, r); string(rec.Content) != "z" {
		t.Fatalf("after reset: %q", rec.Content)
	}
}

func TestBodyLengths(t *testing.T) {
	if _, err := ParseBeginRequest(make([]byte, 7)); !errors.Is(err, ErrBodyLength) {
		t.Fatalf("short BEGIN: %v", err)
	}
	if _, err := ParseEndRequest(make([]byte, 9)); !errors.Is(err, ErrBodyLength) {
		t.Fatalf("long END: %v", err)
	}
	if _, err := ParseUnknownType(nil); !errors.Is(err, ErrBodyLength) {
		t.Fatalf("empty UNKNOWN_TYPE: %v", err)
	}
}

func TestPairsAllLayouts(t *testing.T) {
	long := strings.Repeat("L", 200)
	pairs := [][2]string{{"A", "b"}, {long, "b"}, {"A", long}, {long, long + "!"}, {"EMPTY", ""}, {"", ""}}
	var enc []byte
	for _, p := range pairs {
		enc = AppendPair(enc, p[0], p[1])
	}
	want := 0
	for _, p := range pairs {
		want += PairLen(p[0], p[1])
	}
	if len(enc) != want {
		t.Fatalf("encoded %d bytes, PairLen says %d", len(enc), want)
	}
	// AppendPairLens followed by the bytes is the same encoding.
	var split []byte
	for _, p := range pairs {
		split = AppendPairLens(split, len(p[0]), len(p[1]))
		split = append(append(split, p[0]...), p[1]...)
	}
	if !bytes.Equal(split, enc) {
		t.Fatalf("AppendPairLens + name + value differs from AppendPair:\n% x\n% x", split, enc)
	}
	if enc[0] != 1 || enc[1] != 1 {
		t.Fatalf("short lengths not one byte: % x", enc[:2])
	}
	if enc[4] != 0x80 || enc[7] != 200 {
		t.Fatalf("long name length not four bytes with top bit: % x", enc[4:8])
	}
	check := func(name string, decode func() ([][2]string, error)) {
		got, err := decode()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != len(pairs) {
			t.Fatalf("%s: %d pairs, want %d", name, len(got), len(pairs))
		}
		for i := range pairs {
			if got[i] != pairs[i] {
				t.Fatalf("%s: pair %d = %q, want %q", name, i, got[i], pairs[i])
			}
		}
	}
	check("bytes", func() (out [][2]string, err error) {
		err = ForEachPair(enc, func(n, v []byte) bool { out = append(out, [2]string{string(n), string(v)}); return true })
		return
	})
	check("string", func() (out [][2]string, err error) {
		err = ForEachPair(string(enc), func(n, v string) bool { out = append(out, [2]string{n, v}); return true })
		return
	})
}

func TestPairErrors(t *testing.T) {
	for _, b := range [][]byte{
		{5},                     // value length missing
		{0x80, 0, 0},            // four-byte name length cut short
		{3, 0, 'a', 'b'},        // name runs past the end
		{1, 0x80, 0, 0, 9, 'a'}, // value length cut short
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'x'}, // 2^31-1 twice
	} {
		if err := ForEachPair(b, func(_, _ []byte) bool { return true }); !errors.Is(err, ErrPairLength) {
			t.Errorf("% x: err = %v, want ErrPairLength", b, err)
		}
	}
	// Stopping early is not an error.
	enc := AppendPair(AppendPair(nil, "a", "1"), "b", "2")
	n := 0
	if err := ForEachPair(enc, func(_, _ []byte) bool { n++; return false }); err != nil || n != 1 {
		t.Fatalf("early stop: n=%d err=%v", n, err)
	}
}

func TestStrings(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{TypeGetValuesResult.String(), "GET_VALUES_RESULT"},
		{Type(0).String(), "TYPE(0)"},
		{Type(99).String(), "TYPE(99)"},
		{RoleFilter.String(), "FILTER"},
		{Role(7).String(), "ROLE(7)"},
		{StatusCantMpxConn.String(), "CANT_MPX_CONN"},
		{ProtocolStatus(9).String(), "STATUS(9)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if !TypeGetValues.IsManagement() || TypeParams.IsManagement() {
		t.Error("IsManagement wrong")
	}
}

func TestWriterSingleWrite(t *testing.T) {
	cw := &countingWriter{}
	w := NewWriter(cw)
	must(t, w.WriteStream(TypeStdout, 1, []byte("Status: 200 OK\r\n\r\nhello")))
	must(t, w.WriteRecord(TypeStdout, 1, nil))
	must(t, w.WriteEndRequest(1, 0, StatusRequestComplete))
	must(t, w.Flush())
	if cw.writes != 1 {
		t.Fatalf("%d writes for a small response, want 1", cw.writes)
	}
	must(t, w.Flush())
	if cw.writes != 1 {
		t.Fatal("empty Flush wrote")
	}
}

type countingWriter struct {
	bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) { c.writes++; return c.Buffer.Write(p) }

func next(t *testing.T, r *Reader) Record {
	t.Helper()
	rec, err := r.Next()
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return rec
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The fixed-size records cost no allocation once the Writer has its buffer.
func TestWriterFixedRecordsDoNotAllocate(t *testing.T) {
	w := NewWriter(io.Discard)
	n := testing.AllocsPerRun(100, func() {
		w.WriteBeginRequest(1, RoleResponder, FlagKeepConn)
		w.WriteEndRequest(1, 0, StatusRequestComplete)
		w.WriteUnknownType(99)
		w.Flush()
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
func TestReaderReady(t *testing.T) {
	var stream bytes.Buffer
	w := NewWriter(&stream)
	w.WriteRecord(TypeStderr, 1, []byte("notice"))
	w.WriteRecord(TypeStdout, 1, []byte("data"))
	w.Flush()
	full := stream.Bytes()
	isStdout := func(h Header) bool { return h.Type == TypeStdout }
	for _, tc := range []struct {
		n    int // bytes of the stream buffered
		want bool
	}{
		{0, false},
		{HeaderLen - 1, false},
		{len(full) - 1, false}, // the STDOUT record cut short
		{len(full), true},
	} {
		r := NewReader(bytes.NewReader(full[:tc.n]))
		if tc.n > 0 {
			r.fill(tc.n)
		}
		if got := r.Ready(isStdout); got != tc.want {
			t.Errorf("%d bytes buffered: Ready = %v, want %v", tc.n, got, tc.want)
		}
	}
	// Nothing consumed: Next still returns the STDERR record first.
	r := NewReader(bytes.NewReader(full))
	r.fill(len(full))
	r.Ready(isStdout)
	if rec, err := r.Next(); err != nil || rec.Type != TypeStderr {
		t.Fatalf("after Ready: %v %v", rec.Header, err)
	}
	// A bad version is ready: Next fails at once.
	bad := append([]byte{9}, full[1:]...)
	r = NewReader(bytes.NewReader(bad))
	r.fill(HeaderLen)
	if !r.Ready(isStdout) {
		t.Fatal("a bad header is not reported ready")
	}
}

// failAfter takes n bytes and then fails.
type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) <= f.n {
		f.n -= len(p)
		return len(p), nil
	}
	n := f.n
	f.n = 0
	return n, errors.New("broken")
}

func TestWriterWritten(t *testing.T) {
	var ref bytes.Buffer
	rw := NewWriter(&ref)
	rw.WriteRecord(TypeStdout, 1, []byte("hello"))
	rw.Flush()
	one := int64(ref.Len())

	w := NewWriter(&failAfter{n: int(one) + 4})
	w.WriteRecord(TypeStdout, 1, []byte("hello"))
	if err := w.Flush(); err != nil || w.Written() != one {
		t.Fatalf("Written %d after %v, want %d", w.Written(), err, one)
	}
	w.WriteRecord(TypeStdout, 1, []byte("hello"))
	if err := w.Flush(); err == nil || w.Written() != one+4 {
		t.Fatalf("Written %d after %v, want %d (4 bytes of the second record taken)", w.Written(), err, one+4)
	}

	ref.Reset()
	big := bytes.Repeat([]byte("x"), 40000) // referenced, written with writev
	rw.WriteRecord(TypeStdout, 1, big)
	rw.Flush()
	w = NewWriter(&failAfter{n: 1 << 20})
	w.WriteRecord(TypeStdout, 1, big)
	if err := w.Flush(); err != nil || w.Written() != int64(ref.Len()) {
		t.Fatalf("Written %d after %v, want %d", w.Written(), err, ref.Len())
	}
}

// TestReaderHTTPReply: an HTTP server's answer, read as records, is an
// *HTTPReplyError naming its status line, and still matches ErrVersion.
func TestReaderHTTPReply(t *testing.T) {
	for _, tt := range []struct{ stream, line string }{
		{"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n400 Bad Request", "HTTP/1.1 400 Bad Request"},
		{"HTTP/1.0 400 Bad Request\nServer: x\n\n", "HTTP/1.0 400 Bad Request"},
		{"HTTP/1.1", "HTTP/1.1"},
	} {
		_, err := NewReader(strings.NewReader(tt.stream)).Next()
		var he *HTTPReplyError
		if !errors.As(err, &he) || he.StatusLine != tt.line || !errors.Is(err, ErrVersion) {
			t.Errorf("%q: err = %v, want an HTTPReplyError for %q matching ErrVersion", tt.stream, err, tt.line)
			continue
		}
		want := `this looks like an HTTP server, not a FastCGI application: it answered "` + tt.line + `"`
		if err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	}
	// Another bad version is no HTTP reply.
	_, err := NewReader(strings.NewReader("HTTX/1.1 200 OK\r\n")).Next()
	if he := (*HTTPReplyError)(nil); errors.As(err, &he) || !errors.Is(err, ErrVersion) {
		t.Errorf("HTTX: err = %v, want a plain ErrVersion", err)
	}
}

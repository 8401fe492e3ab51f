package wire_test

import (
	"bytes"
	"github.com/fcgikit/fcgi/internal/fcgitest"
	. "github.com/fcgikit/fcgi/internal/wire"
	"io"
	"testing"
)

// benchParams are the pairs nginx sends for a plain GET.
var benchParams = fcgitest.NginxGetParams("/hello")

func encodeBenchParams(dst []byte) []byte {
	for i := 0; i < len(benchParams); i += 2 {
		dst = AppendPair(dst, benchParams[i], benchParams[i+1])
	}
	return dst
}

// loopReader returns p over and over, as a connection carrying the same
// request again and again would.
type loopReader struct {
	p   []byte
	off int
}

func (l *loopReader) Read(b []byte) (int, error) {
	n := copy(b, l.p[l.off:])
	l.off = (l.off + n) % len(l.p)
	return n, nil
}

func encode(b testing.TB, f func(w *Writer)) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	f(w)
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// benchRead decodes the records of stream, which holds recs records, over
// and over; one op is one pass over stream.
func benchRead(b *testing.B, stream []byte, recs int) {
	r := NewReader(&loopReader{p: stream})
	defer r.Release()
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		for range recs {
			if _, err := r.Next(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkReader_request decodes what nginx sends for a GET: BEGIN_REQUEST,
// PARAMS, the empty PARAMS and the empty STDIN.
func BenchmarkReader_request(b *testing.B) {
	stream := encode(b, func(w *Writer) {
		w.WriteBeginRequest(1, RoleResponder, FlagKeepConn)
		w.WriteStream(TypeParams, 1, encodeBenchParams(nil))
		w.WriteRecord(TypeParams, 1, nil)
		w.WriteRecord(TypeStdin, 1, nil)
	})
	benchRead(b, stream, 4)
}

// BenchmarkReader_64KiB decodes a 64 KiB STDOUT stream (two records) and its
// end, as a client reads a large response.
func BenchmarkReader_64KiB(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 64<<10)
	stream := encode(b, func(w *Writer) {
		w.WriteStream(TypeStdout, 1, body)
		w.WriteRecord(TypeStdout, 1, nil)
		w.WriteEndRequest(1, 0, StatusRequestComplete)
	})
	benchRead(b, stream, 4)
}

// BenchmarkWriter_hello encodes and flushes a 12-byte response: STDOUT, the
// empty STDOUT and END_REQUEST, in one write.
func BenchmarkWriter_hello(b *testing.B) {
	body := []byte("hello world\n")
	w := NewWriter(io.Discard)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		w.WriteStream(TypeStdout, 1, body)
		w.WriteRecord(TypeStdout, 1, nil)
		w.WriteEndRequest(1, 0, StatusRequestComplete)
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriter_64KiB encodes and flushes a 64 KiB response; its content
// is referenced, not copied (one writev on a real connection).
func BenchmarkWriter_64KiB(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 64<<10)
	w := NewWriter(io.Discard)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		w.WriteStream(TypeStdout, 1, body)
		w.WriteRecord(TypeStdout, 1, nil)
		w.WriteEndRequest(1, 0, StatusRequestComplete)
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPairs_encode encodes nginx's 22 GET parameters.
func BenchmarkPairs_encode(b *testing.B) {
	buf := encodeBenchParams(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		buf = encodeBenchParams(buf[:0])
	}
}

// BenchmarkPairs_decode decodes nginx's 22 GET parameters from bytes and,
// as a server that keeps them does, from one string made from the bytes.
func BenchmarkPairs_decode(b *testing.B) {
	enc := encodeBenchParams(nil)
	b.Run("bytes", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			n := 0
			if err := ForEachPair(enc, func(name, value []byte) bool { n++; return true }); err != nil || n != len(benchParams)/2 {
				b.Fatalf("%d pairs, %v", n, err)
			}
		}
	})
	b.Run("string", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			s := string(enc)
			n := 0
			if err := ForEachPair(s, func(name, value string) bool { n++; return true }); err != nil || n != len(benchParams)/2 {
				b.Fatalf("%d pairs, %v", n, err)
			}
		}
	})
}

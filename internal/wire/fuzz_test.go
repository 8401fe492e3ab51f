package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the Reader: it must never panic,
// never return a record larger than the header says, and never hold a
// buffer larger than one maximal record.
func FuzzReader(f *testing.F) {
	var b bytes.Buffer
	w := NewWriter(&b)
	w.WriteBeginRequest(1, RoleResponder, FlagKeepConn)
	w.WriteStream(TypeParams, 1, AppendPair(AppendPair(nil, "REQUEST_METHOD", "GET"), "SCRIPT_NAME", "/x"))
	w.WriteRecord(TypeParams, 1, nil)
	w.WriteRecord(TypeStdin, 1, nil)
	w.Flush()
	f.Add(b.Bytes())
	f.Add([]byte{1, 9, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 5, 0, 1, 0, 3, 5, 0, 'a', 'b', 'c', 0, 0, 0, 0, 0})
	f.Add([]byte{2, 1, 0, 1, 0, 8, 0, 0})
	f.Add([]byte{1, 5, 0, 1, 0xff, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		consumed := 0
		for {
			rec, err := r.Next()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrVersion) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(rec.Content) != int(rec.ContentLength) {
				t.Fatalf("content %d bytes, header says %d", len(rec.Content), rec.ContentLength)
			}
			consumed += HeaderLen + int(rec.ContentLength) + int(rec.PaddingLength)
			if consumed > len(data) {
				t.Fatalf("consumed %d of %d bytes", consumed, len(data))
			}
			if !bytes.Equal(rec.Content, data[consumed-int(rec.PaddingLength)-len(rec.Content):consumed-int(rec.PaddingLength)]) {
				t.Fatal("content does not match the input")
			}
		}
		if len(r.buf) > MaxRecordLen {
			t.Fatalf("buffer %d bytes", len(r.buf))
		}
	})
}

// FuzzPairs decodes arbitrary bytes as a name-value stream. Whatever decodes
// must re-encode to the same bytes, and []byte and string decoding agree.
func FuzzPairs(f *testing.F) {
	f.Add(AppendPair(AppendPair(nil, "HTTP_HOST", "example.com"), "QUERY_STRING", ""))
	f.Add(AppendPair(nil, string(bytes.Repeat([]byte("n"), 130)), string(bytes.Repeat([]byte("v"), 300))))
	f.Add([]byte{0x80, 0, 0, 1, 0, 'a'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var re []byte
		errB := ForEachPair(data, func(n, v []byte) bool {
			re = AppendPair(re, string(n), string(v))
			return true
		})
		var strPairs int
		errS := ForEachPair(string(data), func(n, v string) bool { strPairs++; return true })
		if (errB == nil) != (errS == nil) {
			t.Fatalf("[]byte and string decoding disagree: %v vs %v", errB, errS)
		}
		if errB != nil {
			if !errors.Is(errB, ErrPairLength) {
				t.Fatalf("unexpected error %v", errB)
			}
			return
		}
		// A length below 128 may have been sent in four bytes; compare
		// by decoding the re-encoding instead of byte for byte.
		var again []byte
		if err := ForEachPair(re, func(n, v []byte) bool { again = AppendPair(again, string(n), string(v)); return true }); err != nil {
			t.Fatalf("re-encoded pairs do not decode: %v", err)
		}
		if !bytes.Equal(re, again) {
			t.Fatal("re-encoding is not stable")
		}
		if len(re) > len(data) {
			t.Fatalf("re-encoding %d bytes longer than the input %d", len(re), len(data))
		}
	})
}

// errWouldBlock stands for a read that would have to wait for the peer.
var errWouldBlock = errors.New("would block")

// chunks hands out its data in the given sizes, then errWouldBlock.
type chunks struct {
	data  []byte
	sizes []byte
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, errWouldBlock
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, int(c.sizes[0])+1)
		c.sizes = c.sizes[1:]
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// FuzzReaderReady checks Ready against Next on a stream that arrives in
// arbitrary pieces: when Ready says a record is buffered, Next returns
// without reading; Ready consumes nothing.
func FuzzReaderReady(f *testing.F) {
	var b bytes.Buffer
	w := NewWriter(&b)
	w.WriteRecord(TypeStderr, 1, []byte("notice"))
	w.WriteRecord(TypeStdout, 1, []byte("data"))
	w.WriteEndRequest(1, 0, StatusRequestComplete)
	w.Flush()
	f.Add(b.Bytes(), []byte{3, 20, 1})
	f.Add([]byte{1, 6, 0, 1, 0, 2, 0, 0, 'h', 'i', 1, 6}, []byte{9})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		r := NewReader(&chunks{data: data, sizes: sizes})
		for {
			ready := r.Ready(func(Header) bool { return true })
			before := r.Buffered()
			if ready != r.Ready(func(Header) bool { return true }) || before != r.Buffered() {
				t.Fatal("Ready changed the Reader")
			}
			_, err := r.Next()
			if ready && errors.Is(err, errWouldBlock) {
				t.Fatalf("Ready with %d bytes buffered, but Next had to read", before)
			}
			if err != nil && !errors.Is(err, errWouldBlock) && !errors.Is(err, ErrVersion) {
				t.Fatalf("unexpected error %v", err)
			}
			if err != nil {
				return
			}
		}
	})
}

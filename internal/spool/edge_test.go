package spool

import (
	"bytes"
	"io"
	"os"
	"testing"
	"testing/iotest"
)

// TestFillAtBounds: a body of exactly MemMax bytes, or of a known length
// the Budget has left, stays in memory whatever its reads look like; one
// byte more goes to a file; nothing is left reserved or on disk after
// Release.
func TestFillAtBounds(t *testing.T) {
	const memMax = 64<<10 + 123
	data := bytes.Repeat([]byte("0123456789abcdef"), 8<<10)
	for _, tc := range []struct {
		name     string
		n        int
		known    bool
		budget   int64
		oneByte  bool // the reader returns a byte at a time
		dataEOF  bool // the last read returns data with io.EOF
		wantFile bool
	}{
		{"known, MemMax", memMax, true, 1 << 20, false, false, false},
		{"unknown, MemMax", memMax, false, 1 << 20, false, false, false},
		{"unknown, MemMax, EOF with data", memMax, false, 1 << 20, false, true, false},
		{"unknown, MemMax, a byte a read", memMax, false, 1 << 20, true, false, false},
		{"known, MemMax+1", memMax + 1, true, 1 << 20, false, false, true},
		{"unknown, MemMax+1", memMax + 1, false, 1 << 20, false, false, true},
		{"unknown, MemMax+1, EOF with data", memMax + 1, false, 1 << 20, false, true, true},
		{"known, budget", 5000, true, 5000, false, false, false},
		{"known, budget, a byte a read", 5000, true, 5000, true, false, false},
		{"unknown, budget+1", 5001, false, 5000, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var r io.Reader = bytes.NewReader(data[:tc.n])
			if tc.oneByte {
				r = iotest.OneByteReader(r)
			}
			if tc.dataEOF {
				r = iotest.DataErrReader(r)
			}
			length := int64(-1)
			if tc.known {
				length = int64(tc.n)
			}
			bud := &budget{limit: tc.budget}
			b := &Buffer{MemMax: memMax, Budget: bud, TempDir: dir, Prefix: "body-"}
			if err := b.Fill(r, length, -1); err != nil {
				t.Fatalf("Fill: %v", err)
			}
			if (b.file != nil) != tc.wantFile {
				t.Errorf("in a file: %v, want %v", b.file != nil, tc.wantFile)
			}
			got, err := io.ReadAll(b.Reader())
			if err != nil || !bytes.Equal(got, data[:tc.n]) {
				t.Fatalf("read back %d bytes, %v; want %d", len(got), err, tc.n)
			}
			b.Release()
			if bud.used != 0 {
				t.Errorf("after Release, %d bytes reserved", bud.used)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("after Release, %d files", len(ents))
			}
		})
	}
}

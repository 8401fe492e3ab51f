package spool

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

// budget is a Budget of limit bytes that records what it holds.
type budget struct{ limit, used int64 }

func (b *budget) Reserve(n int64) bool {
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}
func (b *budget) Unreserve(n int64) { b.used -= n }

// TestFill: each body ends in memory or in a file as its bounds say, reads
// back whole, or is refused with the error its ending calls for; Release
// gives back the memory and the file in every case.
func TestFill(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 20<<10) // 320 KiB
	cases := []struct {
		name          string
		r             io.Reader
		length, limit int64
		memMax        int64
		budget        int64
		wantFile      bool
		wantErr       func(error) bool
	}{
		{"small, unknown length", bytes.NewReader(data[:100]), -1, -1, 1 << 20, 1 << 20, false, nil},
		{"known length, in memory", bytes.NewReader(data), int64(len(data)), -1, 1 << 20, 1 << 20, false, nil},
		{"unknown length past MemMax", bytes.NewReader(data), -1, -1, 64 << 10, 1 << 20, true, nil},
		{"known length past MemMax", bytes.NewReader(data), int64(len(data)), -1, 64 << 10, 1 << 20, true, nil},
		{"budget spent", bytes.NewReader(data), -1, -1, 1 << 20, 8 << 10, true, nil},
		{"no memory at all", bytes.NewReader(data), -1, -1, 0, 1 << 20, true, nil},
		{"over limit in memory", bytes.NewReader(data), -1, 1000, 1 << 20, 1 << 20, false, isTooLarge},
		{"over limit in file", bytes.NewReader(data), -1, 200 << 10, 64 << 10, 1 << 20, true, isTooLarge},
		{"ends before its length", bytes.NewReader(data[:500]), 1000, -1, 1 << 20, 1 << 20, false, isUnexpectedEOF},
		{"ends before its length, in file", bytes.NewReader(data), int64(len(data)) + 1, -1, 64 << 10, 1 << 20, true, isUnexpectedEOF},
		{"read fails", io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(errBroken)), -1, -1, 1 << 20, 1 << 20, false, isBroken},
		{"read fails in file", io.MultiReader(bytes.NewReader(data), iotest.ErrReader(errBroken)), -1, -1, 64 << 10, 1 << 20, true, isBroken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bud := &budget{limit: tc.budget}
			b := &Buffer{MemMax: tc.memMax, Budget: bud, TempDir: dir, Prefix: "body-"}
			err := b.Fill(tc.r, tc.length, tc.limit)
			if (b.file != nil) != tc.wantFile {
				t.Errorf("in a file: %v, want %v", b.file != nil, tc.wantFile)
			}
			if b.file != nil && bud.used != 0 {
				t.Errorf("in a file, still %d bytes of memory reserved", bud.used)
			}
			if tc.wantErr != nil {
				if err == nil || !tc.wantErr(err) {
					t.Errorf("Fill: %v", err)
				}
			} else {
				if err != nil {
					t.Fatalf("Fill: %v", err)
				}
				want := data
				if tc.length >= 0 {
					want = data[:tc.length]
				} else if r, ok := tc.r.(*bytes.Reader); ok {
					want = data[:r.Size()]
				}
				for range 2 {
					got, err := io.ReadAll(b.Reader())
					if err != nil || !bytes.Equal(got, want) || b.Size() != int64(len(want)) {
						t.Fatalf("read back %d bytes (Size %d), %v; want %d", len(got), b.Size(), err, len(want))
					}
				}
			}
			b.Release()
			if bud.used != 0 {
				t.Errorf("after Release, %d bytes of memory reserved", bud.used)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("after Release, %d files in TempDir", len(ents))
			}
		})
	}
}

// TestReleaseEndsFileReaders: a reader of a file taken before Release fails
// after it, and does not read another file.
func TestReleaseEndsFileReaders(t *testing.T) {
	b := &Buffer{MemMax: 0, TempDir: t.TempDir()}
	if err := b.Fill(strings.NewReader("some body"), -1, -1); err != nil {
		t.Fatal(err)
	}
	r := b.Reader()
	b.Release()
	if n, err := r.Read(make([]byte, 10)); err == nil || n != 0 {
		t.Errorf("Read after Release: %d, %v", n, err)
	}
}

var errBroken = errors.New("broken")

func isTooLarge(err error) bool { return err == ErrTooLarge }
func isBroken(err error) bool {
	var re *ReadError
	return errors.As(err, &re) && errors.Is(err, errBroken)
}
func isUnexpectedEOF(err error) bool {
	var re *ReadError
	return errors.As(err, &re) && re.Err == io.ErrUnexpectedEOF
}

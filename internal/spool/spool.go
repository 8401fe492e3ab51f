// Package spool holds a request body read to its end before it is sent, as
// PHP-FPM needs its length first and a retry needs it again: in memory, in
// chunks allocated as the data arrives, while the bounds allow, and
// otherwise in a temporary file. fcgi.Gateway and the Caddy transport both
// buffer bodies with it.
package spool

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// The chunks a body is held in grow from firstChunk to maxChunk bytes as the
// data arrives: a body that stalls holds little more than it sent, and one
// that grows is never copied to a larger buffer.
const (
	firstChunk = 4 << 10
	maxChunk   = 64 << 10
)

// ErrTooLarge is Fill's error for a body longer than its limit.
var ErrTooLarge = errors.New("spool: body too large")

// A ReadError is Fill's error when reading the body failed, or the body
// ended before its declared length (Err is then io.ErrUnexpectedEOF).
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "spool: reading the body: " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// A FileError is Fill's error when the temporary file could not be made or
// written.
type FileError struct{ Err error }

func (e *FileError) Error() string { return "spool: temporary file: " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// A Budget bounds the memory the bodies of many Buffers hold together.
type Budget interface {
	// Reserve accounts n more bytes, if the bound allows, and reports
	// whether it did.
	Reserve(n int64) bool
	// Unreserve gives back n bytes Reserve accounted.
	Unreserve(n int64)
}

// Reserve adds n to used, the bytes a Budget has accounted, if that keeps
// it within limit (negative: no limit), and reports whether it did.
func Reserve(used *atomic.Int64, limit, n int64) bool {
	for {
		cur := used.Load()
		if limit >= 0 && cur+n > limit {
			return false
		}
		if used.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// A Buffer holds one body. Its zero value holds nothing in memory (every
// byte goes to a file); set MemMax first. A Buffer is not safe for
// concurrent use, but the readers Reader returns are independent of it and
// of each other, and fail without harm once Release has run.
type Buffer struct {
	// MemMax bounds the bytes held in memory before the body moves to a
	// file; negative means no bound but Budget's.
	MemMax int64
	// Budget, if not nil, bounds memory across Buffers.
	Budget Budget
	// TempDir is where the file goes; "" means os.TempDir().
	TempDir string
	// Prefix starts the file's name.
	Prefix string

	chunks   [][]byte // the last one may have room left
	held     int64    // bytes reserved from Budget: the chunks' capacity
	size     int64    // bytes of body, in chunks or in file
	file     *os.File
	unlinked bool // file's name is gone already
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Size returns the bytes of body held.
func (b *Buffer) Size() int64 { return b.size }

// Fill reads r to its end: length bytes, or up to EOF when length is
// negative (unknown). A body longer than limit (when limit >= 0) is refused
// with ErrTooLarge; other errors are a *ReadError or a *FileError. After an
// error, the Buffer still needs its Release.
func (b *Buffer) Fill(r io.Reader, length, limit int64) error {
	if length > 0 && b.MemMax >= 0 && length > b.MemMax {
		if err := b.spill(); err != nil {
			return err
		}
		return b.fillFile(r, length, limit)
	}
	for {
		if length >= 0 && b.size == length {
			return nil
		}
		c := b.room(length)
		if c == nil {
			// No memory to be had: read on into a scratch buffer to learn
			// whether there is more, and if so move to disk.
			bp := copyBufs.Get().(*[]byte)
			p := *bp
			if length >= 0 {
				p = p[:min(int64(len(p)), length-b.size)]
			}
			n, err := io.ReadAtLeast(r, p, 1)
			if err == nil {
				if err = b.spill(); err == nil {
					err = b.write(p[:n], limit)
				}
			}
			copyBufs.Put(bp)
			var fe *FileError
			switch {
			case err == io.EOF && length < 0:
				return nil
			case err == io.EOF:
				return &ReadError{io.ErrUnexpectedEOF}
			case err == ErrTooLarge, errors.As(err, &fe):
				return err
			case err != nil:
				return &ReadError{err}
			}
			return b.fillFile(r, length, limit)
		}
		last := len(b.chunks) - 1
		n, err := r.Read(c[len(c):cap(c)])
		b.chunks[last] = c[:len(c)+n]
		b.size += int64(n)
		if limit >= 0 && b.size > limit {
			return ErrTooLarge
		}
		if done, err := readEnd(err, length, b.size); done {
			return err
		}
	}
}

// room returns the chunk to read into next, allocating one if the last is
// full, or nil when the memory bounds allow no more.
func (b *Buffer) room(length int64) []byte {
	if n := len(b.chunks); n > 0 {
		if c := b.chunks[n-1]; len(c) < cap(c) {
			return c
		}
	}
	size := int64(firstChunk)
	if n := len(b.chunks); n > 0 {
		size = min(2*int64(cap(b.chunks[n-1])), maxChunk)
	} else if length > 0 {
		size = min(length, maxChunk) // a small body in one piece
	}
	if length >= 0 {
		size = min(size, length-b.size)
	}
	if b.MemMax >= 0 {
		size = min(size, b.MemMax-b.held)
	}
	if size <= 0 || b.Budget != nil && !b.Budget.Reserve(size) {
		return nil
	}
	b.held += size
	c := make([]byte, 0, size)
	b.chunks = append(b.chunks, c)
	return c
}

// spill moves the body to a new temporary file and gives its memory back.
func (b *Buffer) spill() error {
	f, err := os.CreateTemp(b.TempDir, b.Prefix)
	if err != nil {
		return &FileError{err}
	}
	b.file = f
	// Unlinked at once where the system allows it, as nginx does: the open
	// file lives on, and nothing is left behind even if the process dies.
	// Elsewhere (Windows) Release removes it.
	b.unlinked = os.Remove(f.Name()) == nil
	for _, c := range b.chunks {
		if _, err := f.Write(c); err != nil {
			return &FileError{err}
		}
	}
	b.freeMemory()
	return nil
}

// fillFile reads the rest of r into the file.
func (b *Buffer) fillFile(r io.Reader, length, limit int64) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for length < 0 || b.size < length {
		p := buf
		if length >= 0 && length-b.size < int64(len(p)) {
			p = p[:length-b.size]
		}
		n, err := r.Read(p)
		if werr := b.write(p[:n], limit); werr != nil {
			return werr
		}
		if done, err := readEnd(err, length, b.size); done {
			return err
		}
	}
	return nil
}

// readEnd tells whether a read of a body of length bytes (negative: unknown)
// that returned err, size bytes in, ends the body, and with what error: EOF
// before length is an unexpected EOF.
func readEnd(err error, length, size int64) (bool, error) {
	switch {
	case err == io.EOF && length >= 0 && size < length:
		return true, &ReadError{io.ErrUnexpectedEOF}
	case err == io.EOF:
		return true, nil
	case err != nil:
		return true, &ReadError{err}
	}
	return false, nil
}

func (b *Buffer) write(p []byte, limit int64) error {
	if len(p) == 0 {
		return nil
	}
	b.size += int64(len(p))
	if limit >= 0 && b.size > limit {
		return ErrTooLarge
	}
	if _, err := b.file.Write(p); err != nil {
		return &FileError{err}
	}
	return nil
}

// Reader returns a new reader of the whole body.
func (b *Buffer) Reader() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.size)
	}
	if len(b.chunks) == 1 {
		// A bytes.Reader lets the client send a small body together with the
		// request's header.
		return bytes.NewReader(b.chunks[0])
	}
	return &chunksReader{chunks: b.chunks}
}

func (b *Buffer) freeMemory() {
	if b.held != 0 && b.Budget != nil {
		b.Budget.Unreserve(b.held)
	}
	b.held, b.chunks = 0, nil
}

// Release gives back what b holds: its memory and its temporary file.
// Readers of the file fail after it; readers of memory go on.
func (b *Buffer) Release() {
	if b.file != nil {
		b.file.Close()
		if !b.unlinked {
			os.Remove(b.file.Name())
		}
		b.file = nil
	}
	b.freeMemory()
}

// chunksReader reads a body held in chunks.
type chunksReader struct {
	chunks [][]byte
	i, off int
}

func (r *chunksReader) Read(p []byte) (int, error) {
	for r.i < len(r.chunks) && r.off == len(r.chunks[r.i]) {
		r.i, r.off = r.i+1, 0
	}
	if r.i == len(r.chunks) {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[r.i][r.off:])
	r.off += n
	return n, nil
}

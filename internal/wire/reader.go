package wire

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// readBufSize is the Reader's starting buffer: enough for the BEGIN_REQUEST,
// PARAMS and a small STDIN that a web server sends in one segment, so a
// typical request costs one read system call.
const readBufSize = 4096

// smallBufs recycles starting buffers between connections, so an accepted
// connection costs no buffer allocation.
var smallBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// A Reader reads records from a byte stream, buffering so that records
// arriving together cost one read, and refusing malformed headers.
//
// Its buffer starts at 4 KiB and grows, by doubling and only as bytes
// actually arrive, up to one maximal record (MaxRecordLen): a header that
// declares a long record costs nothing until its content comes.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	rd    io.Reader
	buf   []byte // buf[r:w] is read but not yet returned
	small *[]byte
	r, w  int
}

// NewReader returns a Reader reading from rd.
func NewReader(rd io.Reader) *Reader {
	return &Reader{rd: rd}
}

// Reset makes r read from rd, dropping anything buffered.
func (r *Reader) Reset(rd io.Reader) {
	r.rd = rd
	r.r, r.w = 0, 0
}

// Release returns r's buffer to a pool shared by all Readers. Call it when
// the stream is finished; r may be used again afterwards, with a fresh
// buffer.
func (r *Reader) Release() {
	if r.small != nil {
		smallBufs.Put(r.small)
	}
	r.small, r.buf = nil, nil
	r.r, r.w = 0, 0
}

// Buffered returns how many bytes have been read from the stream but not yet
// returned as records.
func (r *Reader) Buffered() int { return r.w - r.r }

// Ready calls want with the header of each whole record already buffered, in
// order, without consuming anything, until want returns true; it reports
// whether one did. A caller uses it to learn whether its next call to Next
// (or the next few, skipping records it ignores) can return without reading
// the stream: a record cut short by the buffer's end stops the scan.
func (r *Reader) Ready(want func(Header) bool) bool {
	for b := r.buf[r.r:r.w]; len(b) >= HeaderLen; {
		h := decodeHeader(b)
		n := HeaderLen + int(h.ContentLength) + int(h.PaddingLength)
		switch {
		case h.Version != Version1:
			return true // Next returns at once, with an error
		case len(b) < n:
			return false
		case want(h):
			return true
		}
		b = b[n:]
	}
	return false
}

// Next reads the next record. Its Content aliases r's buffer and is valid
// only until the next call to Next, Reset or Release. Padding is skipped.
//
// At a clean end of stream Next returns io.EOF; a stream that ends inside a
// record gives io.ErrUnexpectedEOF. A header with a version other than 1
// gives an error wrapping ErrVersion, with the header in the Record so the
// caller can log it; when the bytes read begin as an HTTP response does
// ("HTTP/1.1 400 Bad Request"), that error is an [*HTTPReplyError], since the
// peer is an HTTP server rather than a FastCGI application. Errors from the
// underlying reader (a deadline, say) are returned as they are and are not
// sticky: buffered bytes stay, and a later call to Next continues where this
// one stopped.
func (r *Reader) Next() (Record, error) {
	if err := r.fill(HeaderLen); err != nil {
		return Record{}, err
	}
	h := decodeHeader(r.buf[r.r:])
	if h.Version != Version1 {
		if b := r.buf[r.r:r.w]; bytes.HasPrefix(b, httpPrefix) {
			return Record{Header: h}, &HTTPReplyError{StatusLine: statusLine(b)}
		}
		return Record{Header: h}, fmt.Errorf("%w: version %d in %v", ErrVersion, h.Version, h)
	}
	n := HeaderLen + int(h.ContentLength) + int(h.PaddingLength)
	if err := r.fill(n); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Record{}, err
	}
	start := r.r + HeaderLen
	rec := Record{Header: h, Content: r.buf[start : start+int(h.ContentLength) : start+int(h.ContentLength)]}
	r.r += n
	return rec, nil
}

// fill makes at least n unread bytes available, n ≤ MaxRecordLen.
func (r *Reader) fill(n int) error {
	if r.w-r.r >= n {
		return nil
	}
	if r.buf == nil {
		r.small = smallBufs.Get().(*[]byte)
		r.buf = *r.small
	}
	if r.r == r.w {
		// Everything was consumed: read into the whole buffer, not its tail,
		// or a request would arrive in two reads.
		r.r, r.w = 0, 0
	}
	// Move the unread tail to the front when the record would not fit after
	// it; grow only when the buffer is full of unread bytes, so memory
	// follows what arrived, not what a header declared.
	if len(r.buf)-r.r < n && r.r > 0 {
		copy(r.buf, r.buf[r.r:r.w])
		r.w -= r.r
		r.r = 0
	}
	empty := 0
	for r.w-r.r < n {
		if r.w == len(r.buf) {
			r.grow()
		}
		m, err := r.rd.Read(r.buf[r.w:])
		r.w += m
		if r.w-r.r >= n {
			return nil
		}
		if err != nil {
			if err == io.EOF && r.w > r.r {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if m == 0 {
			if empty++; empty >= 100 {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

func (r *Reader) grow() {
	size := 2 * len(r.buf)
	if size > MaxRecordLen {
		size = MaxRecordLen
	}
	nb := make([]byte, size)
	copy(nb, r.buf[r.r:r.w])
	r.w -= r.r
	r.r = 0
	if r.small != nil {
		smallBufs.Put(r.small)
		r.small = nil
	}
	r.buf = nb
}

// httpPrefix begins every HTTP/1.x response; as a record header it would be
// version 72 ('H').
var httpPrefix = []byte("HTTP/")

// An HTTPReplyError reports a stream that begins as an HTTP response where a
// record header should be: the peer is an HTTP server (nginx, Apache, Go's
// net/http...) that answered the FastCGI bytes with an error page. It matches
// ErrVersion with errors.Is.
type HTTPReplyError struct {
	// StatusLine is the response's first line as far as it was read, such as
	// "HTTP/1.1 400 Bad Request".
	StatusLine string
}

// Error says that the peer looks like an HTTP server, with its status line.
func (e *HTTPReplyError) Error() string {
	return fmt.Sprintf("this looks like an HTTP server, not a FastCGI application: it answered %q", e.StatusLine)
}

// Is reports whether target is ErrVersion.
func (e *HTTPReplyError) Is(target error) bool { return target == ErrVersion }

// statusLine returns the first line of b, without its line ending, cut to a
// length that fits an error message.
func statusLine(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	if len(b) > 80 {
		b = b[:80]
	}
	return string(b)
}

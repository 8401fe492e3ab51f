package wire

import (
	"io"
	"net"
	"sync"
)

// writeBufSize is the Writer's buffer. Content at least directWrite long is
// not copied into it but written beside it in the same writev.
const (
	writeBufSize = 16 << 10
	directWrite  = 8 << 10
)

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, writeBufSize); return &b }}

// A Writer encodes records into a buffer and writes them out on Flush, so
// that a whole response (STDOUT records, the empty STDOUT that ends the
// stream, END_REQUEST) leaves in one write system call.
//
// The buffer is taken from a shared pool on the first record and given back
// by Flush, so an idle connection holds no write buffer. Records never carry
// padding: receivers must accept any alignment (§3.3), and PHP-FPM refuses
// records whose content plus padding passes 65535 bytes.
//
// A Writer is not safe for concurrent use; a connection shared by several
// requests guards its Writer with a mutex.
type Writer struct {
	w   io.Writer
	bp  *[]byte
	buf []byte
	// big holds content written beside buf rather than copied into it.
	big net.Buffers
	vec net.Buffers
	// written counts the bytes the destination has taken, even from a
	// write that failed part-way.
	written int64
}

// Written returns how many bytes the Writer has handed to its destination
// so far. A client compares it across a failed request to learn whether
// any byte of it left: only then may the peer have acted on it.
func (w *Writer) Written() int64 { return w.written }

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Reset discards anything buffered and makes wr the destination.
func (w *Writer) Reset(wr io.Writer) {
	w.drop()
	w.w = wr
}

// Buffered reports how many bytes a Flush would write.
func (w *Writer) Buffered() int {
	n := len(w.buf)
	for _, b := range w.big {
		n += len(b)
	}
	return n
}

// WriteRecord appends one record with the given content, which must be at
// most MaxContent bytes. A nil or empty content writes the empty record that
// ends a stream. Content of a few kilobytes or more is referenced, not
// copied: the caller must leave it unchanged until the next Flush.
func (w *Writer) WriteRecord(t Type, id uint16, content []byte) error {
	if len(content) > MaxContent {
		panic("wire: record content over 65535 bytes")
	}
	if w.bp == nil {
		w.bp = writeBufs.Get().(*[]byte)
		w.buf = (*w.bp)[:0]
	}
	if len(content) >= directWrite {
		w.buf = appendHeader(w.buf, t, id, len(content), 0)
		// The buffer so far, then the content, go out as two vectors; the
		// buffer continues after the content.
		w.big = append(w.big, w.buf, content)
		w.buf = w.buf[len(w.buf):]
		return nil
	}
	if len(w.buf)+HeaderLen+len(content) > cap(w.buf) {
		if err := w.Flush(); err != nil {
			return err
		}
		w.bp = writeBufs.Get().(*[]byte)
		w.buf = (*w.bp)[:0]
	}
	w.buf = appendHeader(w.buf, t, id, len(content), 0)
	w.buf = append(w.buf, content...)
	return nil
}

// WriteStream appends p as records of type t, split at MaxContent bytes.
// An empty p writes nothing: end a stream with WriteRecord(t, id, nil).
func (w *Writer) WriteStream(t Type, id uint16, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), MaxContent)
		if err := w.WriteRecord(t, id, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// WriteBeginRequest appends a BEGIN_REQUEST record (§5.1).
func (w *Writer) WriteBeginRequest(id uint16, role Role, flags uint8) error {
	return w.writeFixed(TypeBeginRequest, id, [bodyLen]byte{byte(role >> 8), byte(role), flags})
}

// WriteEndRequest appends an END_REQUEST record (§5.5).
func (w *Writer) WriteEndRequest(id uint16, appStatus uint32, status ProtocolStatus) error {
	return w.writeFixed(TypeEndRequest, id, [bodyLen]byte{byte(appStatus >> 24), byte(appStatus >> 16), byte(appStatus >> 8), byte(appStatus), byte(status)})
}

// WriteUnknownType appends an UNKNOWN_TYPE management record naming t (§4.2).
func (w *Writer) WriteUnknownType(t Type) error {
	return w.writeFixed(TypeUnknownType, NullRequestID, [bodyLen]byte{byte(t)})
}

// writeFixed appends a record with an 8-byte body. The body is passed by
// value and always copied, so it does not escape to the heap.
func (w *Writer) writeFixed(t Type, id uint16, body [bodyLen]byte) error {
	if w.bp == nil {
		w.bp = writeBufs.Get().(*[]byte)
		w.buf = (*w.bp)[:0]
	}
	if len(w.buf)+HeaderLen+bodyLen > cap(w.buf) {
		if err := w.Flush(); err != nil {
			return err
		}
		w.bp = writeBufs.Get().(*[]byte)
		w.buf = (*w.bp)[:0]
	}
	w.buf = appendHeader(w.buf, t, id, bodyLen, 0)
	w.buf = append(w.buf, body[:]...)
	return nil
}

// Flush writes everything buffered in one write (a writev when large content
// was referenced) and returns the buffer to the pool. After an error the
// buffered records are dropped: the stream is broken and must be closed.
func (w *Writer) Flush() error {
	if w.bp == nil {
		return nil
	}
	var err error
	if len(w.big) == 0 {
		if len(w.buf) > 0 {
			var n int
			n, err = w.w.Write(w.buf)
			w.written += int64(n)
		}
	} else {
		w.vec = append(w.vec[:0], w.big...)
		if len(w.buf) > 0 {
			w.vec = append(w.vec, w.buf)
		}
		// WriteTo consumes the slice it is called on: call it on the
		// field (no copy escapes to the heap) and restore the array.
		vec := w.vec
		var n int64
		n, err = w.vec.WriteTo(w.w)
		w.written += n
		clear(vec)
		w.vec = vec[:0]
	}
	w.drop()
	return err
}

func (w *Writer) drop() {
	if w.bp != nil {
		// *w.bp still spans the whole array, however far buf has been
		// advanced past referenced segments.
		*w.bp = (*w.bp)[:0]
		writeBufs.Put(w.bp)
	}
	clear(w.big)
	w.big = w.big[:0]
	w.bp, w.buf = nil, nil
}

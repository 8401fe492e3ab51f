package fcgi

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/fcgikit/fcgi/internal/defaults"
)

// A sendWriter holds http.ServeContent's writes to SendTimeout. The file
// still goes by sendfile, in pieces of sendChunk so that the deadline moves
// between them: a client must take a piece within the timeout.
type sendWriter struct {
	http.ResponseWriter
	sd  sendDeadline
	err error // the first write error
}

// sendChunk is the most a sendWriter hands to one ReadFrom.
const sendChunk = 64 << 10

func (s *sendWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *sendWriter) Write(p []byte) (int, error) {
	s.sd.extend()
	n, err := s.ResponseWriter.Write(p)
	if err != nil && s.err == nil {
		s.err = err
	}
	return n, err
}

func (s *sendWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := s.ResponseWriter.(io.ReaderFrom)
	lr, limited := src.(*io.LimitedReader) // what ServeContent's io.CopyN passes
	if !ok || !limited || s.sd.d == 0 {
		if ok && s.sd.d == 0 {
			return rf.ReadFrom(src)
		}
		return io.Copy(struct{ io.Writer }{s}, src)
	}
	var total int64
	for lr.N > 0 {
		s.sd.extend()
		piece := &io.LimitedReader{R: lr.R, N: min(lr.N, sendChunk)}
		n, err := rf.ReadFrom(piece)
		total += n
		lr.N -= n
		if err != nil {
			if s.err == nil {
				s.err = err
			}
			return total, err
		}
		if n == 0 {
			break // the file ended early
		}
	}
	return total, nil
}

// A sendDeadline keeps the write deadline of a response SendTimeout ahead of
// the last write while the response is being written, and lifts it while the
// backend is waited for. Moving it costs a timer update, so it moves only
// when an eighth of the timeout has passed since it last did, and lies then
// 9/8 of the timeout ahead: a write always has at least the whole timeout.
type sendDeadline struct {
	w     http.ResponseWriter
	d     time.Duration // 0: no deadline
	moved time.Time     // when the deadline was last set
	limit time.Time     // the server's WriteTimeout deadline, if any
}

func (g *Gateway) sendDeadline(w http.ResponseWriter, r *http.Request) sendDeadline {
	sd := sendDeadline{w: w, d: durationOrDefault(g.SendTimeout, defaults.GatewaySendTimeout)}
	if !canSetWriteDeadline(w) {
		sd.d = 0
	}
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && srv.WriteTimeout > 0 && sd.d > 0 {
		if srv.WriteTimeout <= sd.d {
			sd.d = 0 // the server's own deadline comes first anyway
		} else {
			sd.limit = time.Now().Add(srv.WriteTimeout)
		}
	}
	return sd
}

// canSetWriteDeadline reports whether http.ResponseController can set w's
// write deadline, walking the same Unwrap chain, so that a writer that cannot
// (a middleware's, a test's) is known without building the error the
// controller returns for each call.
func canSetWriteDeadline(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case interface{ SetWriteDeadline(time.Time) error }:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// extend moves the deadline ahead before a write.
func (sd *sendDeadline) extend() {
	if sd.d == 0 {
		return
	}
	now := time.Now()
	if !sd.moved.IsZero() && now.Sub(sd.moved) < sd.d/8 {
		return
	}
	dl := now.Add(sd.d + sd.d/8)
	if !sd.limit.IsZero() && dl.After(sd.limit) {
		dl = sd.limit
	}
	// A ResponseController of its own each time stays on the stack.
	if http.NewResponseController(sd.w).SetWriteDeadline(dl) != nil {
		sd.d = 0 // not supported: nothing to move
		return
	}
	sd.moved = now
}

// idle lifts the deadline before a wait for the backend, which is no client's
// stall: left to pass, it would fail the next write (HTTP/1), or reset the
// stream at once, write or not (HTTP/2).
func (sd *sendDeadline) idle() {
	if sd.d == 0 || sd.moved.IsZero() {
		return
	}
	sd.moved = time.Time{}
	http.NewResponseController(sd.w).SetWriteDeadline(sd.limit) // zero, or the server's own
}

// flush sends what w holds, under the deadline.
func (sd *sendDeadline) flush() error {
	sd.extend()
	if err := http.NewResponseController(sd.w).Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

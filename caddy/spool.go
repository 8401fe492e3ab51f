package fcgicaddy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/fcgikit/fcgi/internal/defaults"
	"github.com/fcgikit/fcgi/internal/spool"
)

// spooled is a request body read to its end: in memory, or past BodyMemory
// in a temporary file, unlinked where the system allows it (spool.Buffer,
// the Gateway's buffer).
//
// It belongs to the Caddy request, not to one RoundTrip: reverse_proxy
// calls RoundTrip again with the same request, its body already read,
// when it retries (a failed dial, lb_retries, lb_try_duration, a response
// lb_retry_match matches), and each attempt must send the whole body. So
// the first attempt spools it and keeps it in the request's variables, the
// next ones find it there, and the request's end (its context, which
// net/http cancels when the handler returns) closes it. A request without
// a context that ends (no Caddy server behind it) has no retries to share
// with: its attempt closes the spool when it ends.
type spooled struct {
	size       int64
	perAttempt bool // closed by endAttempt, not by the request's end

	// mu guards buf: the close at the request's end runs on its own
	// goroutine, while an attempt may still take a reader (fcgi.Client's
	// retry calls GetBody).
	mu     sync.Mutex
	buf    spool.Buffer
	closed bool
}

// spoolVar is the request variable holding its spooled body.
const spoolVar = "fcgikit.spooled_body"

// requestSpool returns r's body spooled, read on the first attempt at r
// and the same for the next ones.
func (t *Transport) requestSpool(r *http.Request) (*spooled, error) {
	ctx := r.Context()
	if s, ok := caddyhttp.GetVar(ctx, spoolVar).(*spooled); ok {
		return s, nil
	}
	s, err := t.spool(r.Body)
	if err != nil {
		return nil, err
	}
	if ctx.Done() == nil {
		s.perAttempt = true
		return s, nil
	}
	context.AfterFunc(ctx, s.close)
	caddyhttp.SetVar(ctx, spoolVar, s)
	return s, nil
}

// spool reads body to its end.
func (t *Transport) spool(body io.Reader) (*spooled, error) {
	memMax := t.BodyMemory
	if memMax == 0 {
		memMax = defaults.GatewayMaxMemoryBytes
	}
	limit := t.MaxBody
	if limit == 0 {
		limit = defaults.GatewayMaxBodyBytes
	}
	s := &spooled{buf: spool.Buffer{MemMax: memMax, Budget: t.bodyMem, TempDir: t.TempDir, Prefix: "fcgikit-body-"}}
	err := s.buf.Fill(body, -1, limit)
	var re *spool.ReadError
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		s.size = s.buf.Size()
		return s, nil
	case err == spool.ErrTooLarge:
		err = caddyhttp.Error(http.StatusRequestEntityTooLarge, fmt.Errorf("request body over max_body %d bytes", limit))
	case errors.As(err, &mbe):
		// Caddy's request_body max_size stopped it.
		err = caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
	case errors.As(err, &re):
		// The client went away or stopped sending: Caddy logs it as a
		// client-side failure, not the upstream's.
		err = caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading request body: %w", re.Err))
	default:
		err = fmt.Errorf("spooling request body: %w", err)
	}
	s.close()
	return nil, err
}

// reader returns a new reader of the whole body; after close, one that
// fails.
func (s *spooled) reader() io.Reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errReader{http.ErrBodyReadAfterClose}
	}
	return s.buf.Reader()
}

// endAttempt is called when an attempt that used s ends; s may be nil.
func (s *spooled) endAttempt() {
	if s != nil && s.perAttempt {
		s.close()
	}
}

// close releases s. Readers taken before fail from then on, harmlessly:
// the body writer of an abandoned attempt may still be reading.
func (s *spooled) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.buf.Release()
	}
}

// A memBudget is the memory a Transport's spooled bodies hold, against
// MaxTotalMemory: without it, as many concurrent chunked uploads as clients
// can open would hold body_memory each.
type memBudget struct {
	limit int64 // negative: none
	used  atomic.Int64
}

func (m *memBudget) Reserve(n int64) bool { return spool.Reserve(&m.used, m.limit, n) }

func (m *memBudget) Unreserve(n int64) { m.used.Add(-n) }

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

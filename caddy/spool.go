package fcgicaddy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Defaults of Transport.BodyMemory and Transport.MaxBody, those of fcgikit's
// Gateway.
const (
	defaultBodyMemory = 1 << 20
	defaultMaxBody    = 64 << 20
)

// spooled is a request body read to its end: in memory, or past BodyMemory
// in a temporary file, unlinked where the system allows it.
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
	mem  []byte
	file *os.File
	size int64

	perAttempt bool // closed by endAttempt, not by the request's end
	once       sync.Once
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
		memMax = defaultBodyMemory
	}
	limit := t.MaxBody
	if limit == 0 {
		limit = defaultMaxBody
	}
	tooLarge := func() error {
		return caddyhttp.Error(http.StatusRequestEntityTooLarge, fmt.Errorf("request body over max_body %d bytes", limit))
	}
	readErr := func(err error) error {
		// The client went away or stopped sending: Caddy logs it as a
		// client-side failure, not the upstream's.
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading request body: %w", err))
	}

	s := &spooled{}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(body, memMax+1))
	if err != nil {
		return nil, readErr(err)
	}
	if limit >= 0 && n > limit {
		return nil, tooLarge()
	}
	if n <= memMax {
		s.mem, s.size = buf.Bytes(), n
		return s, nil
	}

	f, err := os.CreateTemp(t.TempDir, "fcgikit-body-")
	if err != nil {
		return nil, fmt.Errorf("spooling request body: %w", err)
	}
	// The open file outlives its name: nothing is left behind, even if
	// Caddy dies.
	os.Remove(f.Name())
	s.file = f
	src := io.MultiReader(&buf, body)
	if limit >= 0 {
		src = io.LimitReader(src, limit+1)
	}
	n, err = io.Copy(f, src)
	if err != nil {
		s.close()
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("spooling request body: %w", err)
		}
		return nil, readErr(err)
	}
	if limit >= 0 && n > limit {
		s.close()
		return nil, tooLarge()
	}
	s.size = n
	return s, nil
}

// reader returns a new reader of the whole body.
func (s *spooled) reader() io.Reader {
	if s.file != nil {
		return io.NewSectionReader(s.file, 0, s.size)
	}
	return bytes.NewReader(s.mem)
}

// endAttempt is called when an attempt that used s ends; s may be nil.
func (s *spooled) endAttempt() {
	if s != nil && s.perAttempt {
		s.close()
	}
}

// close releases s, once. It runs on the goroutine of the context's end,
// while the body writer of an abandoned attempt may still read the file:
// reads after it fail, so file itself is never reset.
func (s *spooled) close() {
	s.once.Do(func() {
		if s.file != nil {
			s.file.Close()
		}
	})
}

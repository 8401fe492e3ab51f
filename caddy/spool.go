package fcgicaddy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

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
type spooled struct {
	mem  []byte
	file *os.File
	size int64
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

// close releases s; it may be nil.
func (s *spooled) close() {
	if s != nil && s.file != nil {
		s.file.Close()
		s.file = nil
	}
}

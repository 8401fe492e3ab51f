package fcgi

import (
	"errors"
	"fmt"

	"github.com/fcgikit/fcgi/internal/cgihdr"
)

// The CGI response header (RFC 3875 §6) is parsed by internal/cgihdr,
// which the fcgi command uses too; its rules are in that package's
// comment.

// headerError gives an error of cgihdr the package's sentinel.
func headerError(err error) error {
	if errors.Is(err, cgihdr.ErrTooLarge) {
		return ErrResponseHeaderTooLarge
	}
	if he := (*cgihdr.Error)(nil); errors.As(err, &he) {
		return fmt.Errorf("%w: %s", ErrMalformedResponse, he.Detail)
	}
	return err
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

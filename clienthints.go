package fcgi

import (
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/textproto"

	"github.com/fcgikit/fcgi/internal/cgihdr"
)

// maxInterimResponses bounds the interim (1xx) header blocks a response may
// start with, so that an application cannot keep a request waiting with an
// endless run of them. Their bytes count, with the final header's, against
// Client.MaxResponseHeaderBytes.
const maxInterimResponses = 16

// interim delivers an interim header block, such as 103 Early Hints, the way
// net/http's Transport delivers a 1xx response: to the Got1xxResponse hook of
// the httptrace.ClientTrace of the request's context. A Gateway's request
// sends a 103 on to its client first, as a trace the Gateway added to the
// context would, ahead of any trace already there. Without either the block
// is dropped. The error of the hook ends the request.
func (cl *call) interim(block []byte) error {
	cl.interims++
	cl.interimBytes += len(block)
	if cl.interims > maxInterimResponses {
		return fmt.Errorf("%w: %s: more than %d interim (1xx) responses", ErrMalformedResponse, cl.b.addr, maxInterimResponses)
	}
	status, h, err := cgihdr.ParseAny(block, nil)
	if err != nil {
		return headerError(err)
	}
	if cl.hints != nil && status == http.StatusEarlyHints {
		sendEarlyHints(cl.hints, http.Header(h))
	}
	if trace := httptrace.ContextClientTrace(cl.ctx); trace != nil && trace.Got1xxResponse != nil {
		return trace.Got1xxResponse(status, textproto.MIMEHeader(h))
	}
	return nil
}

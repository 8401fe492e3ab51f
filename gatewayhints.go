package fcgi

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
)

// hintsContext returns r's context with a trace that passes the
// application's 103 Early Hints blocks on to w as interim 103 responses
// (docs/early-hints.md), with their Link fields. Other interim statuses are dropped: 100 Continue is
// net/http's to send, when the handler reads the body of a request that
// expects it, and the rest (102 Processing, unassigned codes) mean nothing
// to a browser. HTTP/1.0 has no interim responses, so an HTTP/1.0 client gets
// none.
func (g *Gateway) hintsContext(w http.ResponseWriter, r *http.Request) context.Context {
	ctx := r.Context()
	if !r.ProtoAtLeast(1, 1) {
		return ctx
	}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints {
				sendEarlyHints(w, http.Header(h))
			}
			return nil
		},
	})
}

// sendEarlyHints writes a 103 with the Link fields of hints to w, if it has
// any. Link is what a browser acts on in a 103 (RFC 8297); the other fields
// of the block are left out, such as the Content-Type and X-Powered-By that
// PHP adds to every header block it sends. net/http sends a 1xx with the
// fields of w's Header and keeps them for the final response, so Link is set
// for the 103 alone and put back as it was after.
func sendEarlyHints(w http.ResponseWriter, hints http.Header) {
	links := hints["Link"]
	if len(links) == 0 {
		return
	}
	h := w.Header()
	old, had := h["Link"]
	h["Link"] = links
	w.WriteHeader(http.StatusEarlyHints)
	if had {
		h["Link"] = old
	} else {
		delete(h, "Link")
	}
}

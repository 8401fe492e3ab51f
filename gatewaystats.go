package fcgi

import (
	"net/http"
	"sync/atomic"
)

// GatewayStats are counters of a [Gateway]'s activity since it started, for
// a program to export; the backends' figures are its Client's
// ([Client.Stats]). Reading them is cheap; the gateway keeps them whether or
// not anybody reads.
type GatewayStats struct {
	InFlight       int64 // requests being served now
	Requests       int64 // requests served by ServeHTTP or the Filter handler
	StaticFiles    int64 // requests answered with a file under Root (ServeStatic)
	NotFound       int64 // 404s the gateway answered itself: no such script or file
	Forbidden      int64 // 403s the gateway answered itself: a file it may not read
	BadRequests    int64 // 400s the gateway answered itself: paths with control bytes, malformed bodies
	BodyTimeouts   int64 // 408s: a client too slow to send its body (BodyReadTimeout)
	BodyTooLarge   int64 // 413s: bodies over MaxBodyBytes
	HeaderTooLarge int64 // 414s and 431s: a URL or header field over MaxParamPairBytes
	BackendErrors  int64 // 502s, 503s and 504s: backend requests that failed
	ClientsGone    int64 // requests whose client went away before its response was sent
}

type gatewayStats struct {
	inflight, requests, static, notFound, forbidden, badRequests  atomic.Int64
	bodyTimeouts, bodyTooLarge, headerTooLarge, backendErrs, gone atomic.Int64
}

// Stats returns a snapshot of the gateway's counters.
func (g *Gateway) Stats() GatewayStats {
	st := &g.stats
	return GatewayStats{
		InFlight:       st.inflight.Load(),
		Requests:       st.requests.Load(),
		StaticFiles:    st.static.Load(),
		NotFound:       st.notFound.Load(),
		Forbidden:      st.forbidden.Load(),
		BadRequests:    st.badRequests.Load(),
		BodyTimeouts:   st.bodyTimeouts.Load(),
		BodyTooLarge:   st.bodyTooLarge.Load(),
		HeaderTooLarge: st.headerTooLarge.Load(),
		BackendErrors:  st.backendErrs.Load(),
		ClientsGone:    st.gone.Load(),
	}
}

// begin counts a request; the caller runs end when it is served.
func (st *gatewayStats) begin() {
	st.requests.Add(1)
	st.inflight.Add(1)
}

func (st *gatewayStats) end() { st.inflight.Add(-1) }

// answered counts an error status the gateway answered itself.
func (st *gatewayStats) answered(code int) {
	switch {
	case code == http.StatusNotFound:
		st.notFound.Add(1)
	case code == http.StatusForbidden:
		st.forbidden.Add(1)
	case code == http.StatusRequestTimeout:
		st.bodyTimeouts.Add(1)
	case code == http.StatusRequestEntityTooLarge:
		st.bodyTooLarge.Add(1)
	case code == http.StatusRequestURITooLong, code == http.StatusRequestHeaderFieldsTooLarge:
		st.headerTooLarge.Add(1)
	case code >= 500:
		st.backendErrs.Add(1)
	case code >= 400:
		st.badRequests.Add(1)
	}
}

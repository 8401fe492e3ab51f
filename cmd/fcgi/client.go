package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fcgikit/fcgi"
)

// newClient returns the fcgi.Client of one command run (call, ping,
// status) against addr. Every wait is bounded by timeout: connecting,
// each write, the response header, and each later piece of the response.
// The client's own log lines (a backend set aside, say) repeat what the
// returned errors say, so they are shown only at --log-level debug.
func newClient(e *env, addr string, timeout time.Duration) *fcgi.Client {
	log := slog.New(slog.DiscardHandler)
	if e.log.Enabled(context.Background(), slog.LevelDebug) {
		log = e.log
	}
	return &fcgi.Client{
		Addr:                  fcgiAddr(addr),
		DialTimeout:           timeout,
		WriteTimeout:          timeout,
		ResponseHeaderTimeout: timeout,
		ReadTimeout:           timeout,
		ErrorLog:              log,
	}
}

// errBusy: the connection was accepted, by the kernel at least, but no
// answer came in time. For PHP-FPM that means every worker is busy and the
// request waits in the listen queue: busy, not dead.
var errBusy = errors.New("connected, but no answer in time: the application is busy or stuck")

// clientError gives an error of fcgi.Client the exit status doc.go
// documents for it.
func clientError(err error) error {
	var te *fcgi.TimeoutError
	var pe *fcgi.ProtocolStatusError
	switch {
	case errors.As(err, &te) && te.Op == "dial",
		errors.Is(err, fcgi.ErrDial),
		errors.Is(err, fcgi.ErrBackendClosed):
		return &exitError{code: exitUnreachable, err: err}
	case errors.As(err, &te):
		// Connected, but a write, the response header or the rest of the
		// response did not come in time.
		return &exitError{code: exitBusy, err: fmt.Errorf("%w (%v)", errBusy, err)}
	case errors.As(err, &pe),
		errors.Is(err, fcgi.ErrMalformedResponse),
		errors.Is(err, fcgi.ErrResponseHeaderTooLarge),
		errors.Is(err, fcgi.ErrProtocol):
		return &exitError{code: exitProtocol, err: err}
	}
	// The connection broke (reset, say): the application is not there.
	var ne net.Error
	if errors.As(err, &ne) {
		return &exitError{code: exitUnreachable, err: err}
	}
	return err
}

// reply is a whole response, body read, for ping and status.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// get sends a GET for target (a path with an optional query) through c
// and reads the whole response.
func get(ctx context.Context, c *fcgi.Client, target string) (*reply, error) {
	rp := requestParams{target: target, body: -1}
	kv, err := rp.pairs()
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(ctx, &fcgi.Request{Params: paramMap(kv)})
	if err != nil {
		return nil, clientError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, clientError(err)
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// paramMap turns the ordered variables of requestParams.pairs into the
// form of fcgi.Request.Params. pairs has already removed duplicates.
func paramMap(kv [][2]string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, p := range kv {
		m[p[0]] = p[1]
	}
	return m
}

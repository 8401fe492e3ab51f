package fcgi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/fcgikit/fcgi/internal/defaults"
)

// maxConcurrentChecks bounds the health checks run at once, so that a name
// resolving to many backends does not open as many connections together.
const maxConcurrentChecks = 8

// maxCheckBody bounds what is read of a health check's answer.
const maxCheckBody = 4 << 10

func (c *Client) healthCheckInterval() time.Duration {
	return durationOrDefault(c.HealthCheckInterval, defaults.ClientHealthCheckInterval)
}

// startHealthChecks runs the health checks in a loop owned by the Client,
// which Close ends.
func (c *Client) startHealthChecks() {
	if c.HealthCheckPath == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stopLoops = append(c.stopLoops, cancel)
	c.loops.Add(1)
	go func() { // ends when Close cancels ctx
		defer c.loops.Done()
		d := max(c.healthCheckInterval(), time.Millisecond)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			c.checkAll(ctx, d)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// checkAll checks every current backend once, a few at a time.
func (c *Client) checkAll(ctx context.Context, interval time.Duration) {
	if c.dyn != nil {
		select {
		case <-c.dyn.ready:
		case <-ctx.Done():
			return
		}
	}
	sem := make(chan struct{}, maxConcurrentChecks)
	var wg sync.WaitGroup
	for _, b := range c.current() {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() { // ends within interval: checkBackend is bounded by it
			defer wg.Done()
			defer func() { <-sem }()
			err := c.checkBackend(ctx, b, interval)
			if ctx.Err() != nil {
				return
			}
			b.checked(err, interval)
		}()
	}
	wg.Wait()
}

// checkBackend sends the health check request to b on a connection of its
// own, closed afterwards, within interval.
func (c *Client) checkBackend(ctx context.Context, b *backend, interval time.Duration) error {
	hc := &Client{
		Addr:                   b.addr,
		Dial:                   c.Dial,
		MaxIdleConnsPerBackend: -1,
		DialTimeout:            interval,
		WriteTimeout:           interval,
		ResponseHeaderTimeout:  interval,
		ReadTimeout:            interval,
		BackendCooldown:        -1,
		MaxResponseHeaderBytes: c.MaxResponseHeaderBytes,
		ErrorLog:               c.ErrorLog,
	}
	defer hc.Close()
	ctx, cancel := context.WithTimeout(ctx, interval)
	defer cancel()
	p := c.HealthCheckPath
	resp, err := hc.Do(ctx, &Request{Params: map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1",
		"REQUEST_METHOD":    "GET",
		"SCRIPT_NAME":       p,
		"SCRIPT_FILENAME":   p,
		"REQUEST_URI":       p,
		"QUERY_STRING":      "",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_SOFTWARE":   "fcgikit",
	}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCheckBody))
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(c.HealthCheckExpect)) {
		return fmt.Errorf("fcgi: health check %s: status %d, body %.80q", p, resp.StatusCode, body)
	}
	return nil
}

// checked records the result of a health check of b. A failing backend is
// set aside until a later check passes; a passing one is back in rotation,
// also if a failed request had set it aside.
//
// A check that times out while requests are in flight on b is no verdict:
// PHP-FPM answers its ping.path from a worker, and with every worker busy
// the check waits in the listen queue like any request. Failed requests, if
// any, set such a backend aside.
func (b *backend) checked(err error, interval time.Duration) {
	var te *TimeoutError
	if err != nil && (errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded)) && b.inflight.Load() > 0 {
		return
	}
	if err != nil {
		// Until two intervals from now: the next check renews it.
		was := b.checkDown.Swap(time.Now().Add(2 * interval).UnixNano())
		if was == 0 {
			b.c.logger().Warn("fcgi: backend failed its health check; set aside", "backend", b.addr, "err", err)
		}
		return
	}
	if b.checkDown.Swap(0) != 0 {
		b.c.logger().Info("fcgi: backend passed its health check; back in rotation", "backend", b.addr)
	}
	b.down.Store(0)
}

// asideUntil returns the time until which b is set aside, by a failed
// request or a failed health check; the zero time when it is not.
func (b *backend) asideUntil() time.Time {
	until := b.downUntil()
	if n := b.checkDown.Load(); n != 0 {
		if t := time.Unix(0, n); t.After(until) {
			until = t
		}
	}
	return until
}

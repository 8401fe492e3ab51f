package benchutil

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var (
	wrkRate     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkRequests = regexp.MustCompile(`(?m)^\s*([0-9]+) requests in `)
	wrkErrors   = regexp.MustCompile(`(?m)^\s*(Non-2xx or 3xx responses|Socket errors):.*$`)
)

// LookWrk returns the path of wrk.
func LookWrk() (string, error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return "", fmt.Errorf("wrk not found (apt-get install wrk): %w", err)
	}
	return wrk, nil
}

// RunWrk runs wrk against url for d (rounded to whole seconds, at least
// one) and returns its requests per second. Error responses and socket
// errors fail the run.
func RunWrk(ctx context.Context, wrk, url string, threads, conns int, d time.Duration) (float64, error) {
	r, err := Wrk(ctx, wrk, url, threads, conns, d)
	return r.Rate, err
}

// WrkRun is the outcome of one wrk run.
type WrkRun struct {
	Rate     float64       // requests per second
	Requests int64         // requests completed
	CPU      time.Duration // wrk's own user and system CPU time
}

// Wrk is RunWrk, with the number of requests and the CPU time wrk itself
// used, so that a caller can tell the load tool's share of the machine.
func Wrk(ctx context.Context, wrk, url string, threads, conns int, d time.Duration) (WrkRun, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, wrk, "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns),
		"-d"+strconv.Itoa(secs)+"s", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return WrkRun{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	if m := wrkErrors.FindString(string(out)); m != "" {
		return WrkRun{}, fmt.Errorf("wrk %s: %s\n%s", url, strings.TrimSpace(m), out)
	}
	m := wrkRate.FindSubmatch(out)
	n := wrkRequests.FindSubmatch(out)
	if m == nil || n == nil {
		return WrkRun{}, fmt.Errorf("wrk %s: no Requests/sec in output:\n%s", url, out)
	}
	var r WrkRun
	if r.Rate, err = strconv.ParseFloat(string(m[1]), 64); err != nil {
		return WrkRun{}, err
	}
	if r.Requests, err = strconv.ParseInt(string(n[1]), 10, 64); err != nil {
		return WrkRun{}, err
	}
	if ps := cmd.ProcessState; ps != nil {
		r.CPU = ps.UserTime() + ps.SystemTime()
	}
	return r, nil
}

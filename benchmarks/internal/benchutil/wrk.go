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
	wrkRate   = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkErrors = regexp.MustCompile(`(?m)^\s*(Non-2xx or 3xx responses|Socket errors):.*$`)
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
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, wrk, "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns),
		"-d"+strconv.Itoa(secs)+"s", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	if m := wrkErrors.FindString(string(out)); m != "" {
		return 0, fmt.Errorf("wrk %s: %s\n%s", url, strings.TrimSpace(m), out)
	}
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("wrk %s: no Requests/sec in output:\n%s", url, out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

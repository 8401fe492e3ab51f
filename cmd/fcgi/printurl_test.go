package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPrintedURLsOpen: a gateway and an exporter listening on every
// address (":0", "0.0.0.0:0", "[::]:0") print URLs a user can open as
// printed, naming a loopback host rather than "[::]" or "0.0.0.0", and
// each printed URL answers.
func TestPrintedURLsOpen(t *testing.T) {
	url := regexp.MustCompile(`https?://[^\s/]+/[^\s]*`)
	for _, c := range []struct {
		name string
		args []string
		want int // URLs printed
	}{
		{"gateway demo :0", []string{"gateway", "--listen", ":0", "--metrics", ":0"}, 2},
		{"gateway demo 0.0.0.0", []string{"gateway", "--listen", "0.0.0.0:0", "--metrics", "0.0.0.0:0"}, 2},
		{"gateway demo [::]", []string{"gateway", "--listen", "[::]:0"}, 1},
		{"exporter :0", []string{"exporter", "--listen", ":0", "--backend", "127.0.0.1:1"}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, out := startFcgi(t, c.args...)
			var urls []string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				urls = url.FindAllString(out.String(), -1)
				if len(urls) >= c.want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("want %d URLs printed, got:\n%s", c.want, out.String())
				}
			}
			for _, u := range urls {
				if strings.Contains(u, "[::]") || strings.Contains(u, "0.0.0.0") {
					t.Errorf("printed %s: not an address to open", u)
				}
				if _, err := httpGet(u); err != nil {
					t.Errorf("GET %s: %v", u, err)
				}
			}
		})
	}
}

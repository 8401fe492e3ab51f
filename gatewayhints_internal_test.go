package fcgi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The learned hints hold at most maxLearnedRoutes routes, the least recently
// used forgotten first, and maxLearnedLinkBytes of links for each; a route
// too long is not learned.
func TestLearnedHintsBounds(t *testing.T) {
	g := &Gateway{LearnEarlyHints: true}
	nav := func(path string) *http.Request {
		r := httptest.NewRequest("GET", "http://h"+path, nil)
		r.Header.Set("Sec-Fetch-Mode", "navigate")
		return r
	}
	link := http.Header{"Link": {"</s.css>; rel=preload; as=style"}}
	for i := range maxLearnedRoutes {
		g.learnHints(nav(fmt.Sprint("/", i)), 200, link)
	}
	g.hints.get("h/0") // used: kept
	for i := range 100 {
		g.learnHints(nav(fmt.Sprint("/more", i)), 200, link)
	}
	if n := len(g.hints.routes); n != maxLearnedRoutes || g.hints.order.Len() != n {
		t.Fatalf("%d routes", n)
	}
	if g.hints.get("h/0") == nil || g.hints.get("h/1") != nil || g.hints.get("h/more99") == nil {
		t.Fatal("not least recently used first")
	}

	many := strings.Repeat("</"+strings.Repeat("x", 100)+">; rel=preload, ", 100)
	g.learnHints(nav("/many"), 200, http.Header{"Link": {many}})
	got := g.hints.get("h/many")
	if n := len(strings.Join(got, "")); n > maxLearnedLinkBytes || len(got) == 0 {
		t.Fatalf("%d links, %d bytes", len(got), n)
	}
	long := "/" + strings.Repeat("p", maxLearnedRouteLen)
	g.learnHints(nav(long), 200, link)
	if g.hints.get("h"+long) != nil {
		t.Fatal("a long route was learned")
	}
	for _, tc := range []struct {
		field string
		want  []string
	}{
		{`</a>; rel=preload, </b,c>; rel="preconnect next", </d>; title="x, y"; rel=preload`, []string{`</a>; rel=preload`, `</b,c>; rel="preconnect next"`, `</d>; title="x, y"; rel=preload`}},
		{`</a>; rel=stylesheet, </b>; rel=prefetch, junk; rel=preload`, nil},
	} {
		var got []string
		for _, l := range splitLinks(tc.field) {
			if hintable(l) {
				got = append(got, l)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %q", tc.field, got)
		}
	}
}

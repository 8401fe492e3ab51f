package fcgi

import (
	"container/list"
	"net/http"
	"strings"
	"sync"
)

// The Gateway passes the application's 103 Early Hints blocks on to its
// client as interim 103 responses (docs/early-hints.md), with their Link
// fields, through Request.hints. Other interim statuses are dropped: 100
// Continue is net/http's to send, when the handler reads the body of a
// request that expects it, and the rest (102 Processing, unassigned codes)
// mean nothing to a browser. HTTP/1.0 has no interim responses, so an
// HTTP/1.0 client gets none.

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

// The bounds of Gateway.LearnEarlyHints: the routes remembered, the least
// recently used forgotten first, the length of a route (host and path) that
// is learned, and the Link bytes kept for each (links past it are left out).
const (
	maxLearnedRoutes    = 1024
	maxLearnedRouteLen  = 512
	maxLearnedLinkBytes = 2 << 10
)

// learnedHints holds the Link values learned per route (host and path),
// most recently used first.
type learnedHints struct {
	mu     sync.Mutex
	routes map[string]*list.Element // of *learnedRoute
	order  list.List
}

type learnedRoute struct {
	key   string
	links []string
}

// isNavigation reports whether r loads a page in a browser.
func isNavigation(r *http.Request) bool {
	return r.Method == http.MethodGet && (r.Header.Get("Sec-Fetch-Mode") == "navigate" || r.Header.Get("Sec-Fetch-Dest") == "document")
}

func routeKey(r *http.Request) string { return r.Host + r.URL.Path }

// sendLearnedHints sends the hints learned for r's route as a 103, when
// LearnEarlyHints is set and r is an HTTP/2 navigation.
func (g *Gateway) sendLearnedHints(w http.ResponseWriter, r *http.Request) {
	if !g.LearnEarlyHints || r.ProtoMajor < 2 || !isNavigation(r) {
		return
	}
	if links := g.hints.get(routeKey(r)); links != nil {
		sendEarlyHints(w, http.Header{"Link": links})
	}
}

// learnHints remembers the preload and preconnect links of h, the final
// header of a 2xx answer to a navigation, for r's route; a 2xx answer
// without any forgets the route's, so hints that no longer hold stop.
func (g *Gateway) learnHints(r *http.Request, status int, h http.Header) {
	if !g.LearnEarlyHints || status < 200 || status > 299 || !isNavigation(r) {
		return
	}
	key := routeKey(r)
	if len(key) > maxLearnedRouteLen {
		return
	}
	var links []string
	n := 0
	for _, field := range h["Link"] {
		for _, link := range splitLinks(field) {
			if !hintable(link) || n+len(link) > maxLearnedLinkBytes {
				continue
			}
			n += len(link)
			links = append(links, link)
		}
	}
	g.hints.put(key, links)
}

// splitLinks splits a Link field into its link-values (RFC 8288 §3): at the
// commas outside <...> and quoted strings.
func splitLinks(field string) []string {
	var links []string
	inURI, inQuote, start := false, false, 0
	for i := 0; i < len(field); i++ {
		switch c := field[i]; {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case inURI:
			inURI = c != '>'
		case c == '<':
			inURI = true
		case c == '"':
			inQuote = true
		case c == ',':
			if l := strings.TrimSpace(field[start:i]); l != "" {
				links = append(links, l)
			}
			start = i + 1
		}
	}
	if l := strings.TrimSpace(field[start:]); l != "" {
		links = append(links, l)
	}
	return links
}

// hintable reports whether a link-value has rel=preload or rel=preconnect
// (among others in a space-separated rel).
func hintable(link string) bool {
	if !strings.HasPrefix(link, "<") {
		return false
	}
	_, params, ok := strings.Cut(link, ">")
	if !ok {
		return false
	}
	for _, p := range strings.Split(params, ";") {
		name, value, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
			continue
		}
		for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(value), `"`)) {
			if strings.EqualFold(rel, "preload") || strings.EqualFold(rel, "preconnect") {
				return true
			}
		}
	}
	return false
}

func (l *learnedHints) get(key string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.routes[key]
	if !ok {
		return nil
	}
	l.order.MoveToFront(e)
	return e.Value.(*learnedRoute).links
}

// put remembers links for key, or forgets key when there are none.
func (l *learnedHints) put(key string, links []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.routes[key]
	if len(links) == 0 {
		if ok {
			l.order.Remove(e)
			delete(l.routes, key)
		}
		return
	}
	if ok {
		e.Value.(*learnedRoute).links = links
		l.order.MoveToFront(e)
		return
	}
	if l.routes == nil {
		l.routes = make(map[string]*list.Element)
	}
	if len(l.routes) >= maxLearnedRoutes {
		last := l.order.Back()
		l.order.Remove(last)
		delete(l.routes, last.Value.(*learnedRoute).key)
	}
	l.routes[key] = l.order.PushFront(&learnedRoute{key: key, links: links})
}

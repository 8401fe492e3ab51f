package fcgi

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/fcgikit/fcgi/internal/cgihdr"
	"github.com/fcgikit/fcgi/internal/wire"
)

// writeInterim sends an interim CGI header block for the informational
// status code: a Status line and the fields of Header, as net/http sends a
// 1xx response, without the Content-Length and Transfer-Encoding a response
// without a body cannot have. It is written and flushed at once, so the web
// server can pass it on while the handler works. A request that can no
// longer be answered gets nothing.
func (w *response) writeInterim(code int) {
	if w.err() != nil {
		return
	}
	b := append([]byte(nil), "Status: "...)
	b = strconv.AppendInt(b, int64(code), 10)
	if text := http.StatusText(code); text != "" {
		b = append(b, ' ')
		b = append(b, text...)
	}
	b = append(b, "\r\n"...)
	keys := make([]string, 0, len(w.header))
	for k := range w.header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !cgihdr.ValidName(k) || strings.EqualFold(k, "Status") || strings.EqualFold(k, "Content-Length") || strings.EqualFold(k, "Transfer-Encoding") {
			continue
		}
		for _, v := range w.header[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendHeaderValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	c := w.req.conn
	c.wmu.Lock()
	// A failed write breaks the connection, which the final response's
	// writes report. The final header is still to come, so a handler that
	// panics now gets its 500.
	c.writeRecords(func(wr *wire.Writer) error {
		return wr.WriteStream(wire.TypeStdout, w.req.id, b)
	}, w.writeDeadline, true)
	c.wmu.Unlock()
}

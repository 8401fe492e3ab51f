package fcgi

import (
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
)

// errorPage answers code, an error the Gateway makes, with the page
// ErrorPages holds for it, or with http.Error's text.
func (g *Gateway) errorPage(w http.ResponseWriter, r *http.Request, code int) {
	if h := g.ErrorPages[code]; h != nil {
		h.ServeHTTP(&statusWriter{ResponseWriter: w, code: code}, r)
		return
	}
	http.Error(w, http.StatusText(code), code)
}

// A statusWriter holds a response to its status, whatever the handler
// writing it asks for: an error page served by a file server would
// otherwise go out as 200.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(int) {
	if !s.wrote {
		s.wrote = true
		s.ResponseWriter.WriteHeader(s.code)
	}
}

func (s *statusWriter) Write(p []byte) (int, error) {
	s.WriteHeader(s.code)
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ErrorPageFile returns a handler for [Gateway.ErrorPages] that answers with
// the contents of the file name, read now, and a Content-Type from its
// extension (text/html for ".html"), or sniffed from its contents. It fails
// if the file cannot be read.
func ErrorPageFile(name string) (http.Handler, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	ctype := mime.TypeByExtension(filepath.Ext(name))
	if ctype == "" {
		ctype = http.DetectContentType(b)
	}
	return &errorPageHandler{body: b, ctype: ctype}, nil
}

type errorPageHandler struct {
	body  []byte
	ctype string
}

func (p *errorPageHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", p.ctype)
	h.Set("Content-Length", strconv.Itoa(len(p.body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK) // held to the error's status
	if r.Method != http.MethodHead {
		w.Write(p.body)
	}
}

package fcgi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

type deadlineWriter struct{ http.ResponseWriter }

func (deadlineWriter) SetWriteDeadline(time.Time) error { return nil }

type unwrapper struct{ http.ResponseWriter }

func (u unwrapper) Unwrap() http.ResponseWriter { return u.ResponseWriter }

type opaque struct{ http.ResponseWriter }

// canSetWriteDeadline agrees with http.ResponseController on what can
// have a write deadline.
func TestCanSetWriteDeadline(t *testing.T) {
	rec := httptest.NewRecorder()
	for _, w := range []http.ResponseWriter{
		rec, unwrapper{rec}, opaque{rec},
		deadlineWriter{rec}, unwrapper{deadlineWriter{rec}}, unwrapper{unwrapper{deadlineWriter{rec}}}, opaque{deadlineWriter{rec}},
	} {
		want := http.NewResponseController(w).SetWriteDeadline(time.Time{}) == nil
		if got := canSetWriteDeadline(w); got != want {
			t.Errorf("%T: %v, ResponseController says %v", w, got, want)
		}
	}
}

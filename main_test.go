package fcgi_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	if os.Getenv("FCGI_TEST_HELPER") != "" {
		helperMain()
		return
	}
	goleak.VerifyTestMain(m)
}

//go:build !linux

package reap

// becomeSubreaper does nothing: orphans go to PID 1, an init that reaps
// them, on the systems without Linux's PR_SET_CHILD_SUBREAPER.
func becomeSubreaper() {}

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// secondSignal keeps SIGTERM and SIGINT caught until stop is called and
// returns a channel closed by the second of them. main's context ends at
// the first, and leaves the second to kill the process by default: the
// commands that run processes (wrap, spawn) use this instead, to kill
// their processes' groups before they exit rather than leave them
// running. first, if not nil, is called at the first signal.
func secondSignal(first func()) (second <-chan struct{}, stop func()) {
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	ch := make(chan struct{})
	stopped := make(chan struct{})
	// Owned by the caller through stop: counts the signals. Ends at the
	// second, or at stop.
	go func() {
		for n := 0; n < 2; {
			select {
			case <-sigc:
				n++
			case <-stopped:
				return
			}
			if n == 1 && first != nil {
				first()
			}
		}
		close(ch)
	}()
	return ch, func() {
		signal.Stop(sigc)
		close(stopped)
	}
}

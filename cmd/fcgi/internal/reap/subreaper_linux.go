package reap

import "syscall"

// becomeSubreaper makes this process the one its descendants' orphans go
// to, rather than PID 1 (PR_SET_CHILD_SUBREAPER).
func becomeSubreaper() {
	const prSetChildSubreaper = 36
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

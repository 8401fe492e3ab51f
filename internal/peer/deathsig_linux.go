package peer

import "syscall"

// dieWithParent has the kernel kill the peer attr starts when the test
// binary dies.
func dieWithParent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }

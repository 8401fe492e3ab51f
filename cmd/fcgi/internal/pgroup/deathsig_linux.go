package pgroup

import "syscall"

// DieWithParent asks the kernel to send sig to the process attr starts when
// the process that started it dies.
func DieWithParent(attr *syscall.SysProcAttr, sig syscall.Signal) { attr.Pdeathsig = sig }

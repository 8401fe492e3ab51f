//go:build !linux

package pgroup

import "syscall"

// DieWithParent does nothing: only Linux has a parent-death signal. A
// process whose starter died without stopping it runs on, as under
// spawn-fcgi.
func DieWithParent(*syscall.SysProcAttr, syscall.Signal) {}

package local

import "syscall"

// sysProcAttr needs nothing on Windows; the demo targets Linux and macOS.
func sysProcAttr() *syscall.SysProcAttr { return nil }

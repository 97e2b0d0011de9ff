//go:build !linux

package e2e

import "syscall"

func demoSysProcAttr() *syscall.SysProcAttr { return nil }

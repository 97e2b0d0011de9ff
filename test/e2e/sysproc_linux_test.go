package e2e

import "syscall"

// demoSysProcAttr has the kernel stop `loomctl demo` if the test process
// dies, so no mesh outlives a killed test run.
func demoSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// Package integration holds in-process tests that join the two planes
// through their wire protocols: a control-plane server and a data-plane
// client in one test process, on loopback sockets the test opens. It is
// the one place besides cmd/ and test/e2e that may import both
// internal/controlplane and internal/dataplane; it has no non-test code.
package integration

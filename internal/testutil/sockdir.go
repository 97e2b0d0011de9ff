package testutil

import (
	"os"
	"testing"
)

// SocketDir returns a new directory for unix domain sockets, removed at
// the end of the test. It is made under os.TempDir with a short name
// because t.TempDir's paths, which repeat the test's name, can pass the
// 107 bytes a socket path may have (sockaddr_un.sun_path).
func SocketDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "loom")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

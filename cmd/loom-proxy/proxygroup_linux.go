package main

import (
	"fmt"
	"os"
	"syscall"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// joinProxyGroup makes xdsapi.ProxyGID (1337) the group of the process,
// so that the sockets it opens match the "-m owner --gid-owner 1337"
// rules that exempt the proxy's own traffic from redirection, as Istio's
// istio-proxy runs as user and group 1337. A process already in that
// group (started by a supervisor with that gid, as the local runtime
// does) is left as is; otherwise it must be root (CAP_SETGID), and its
// supplementary groups are dropped. The uid is kept: the proxy may need
// root for nothing else, but dropping it is its supervisor's choice.
// Setgid applies to every thread of a Go program (Go 1.16+).
func joinProxyGroup() error {
	if os.Getegid() == xdsapi.ProxyGID && os.Getgid() == xdsapi.ProxyGID {
		return nil
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("drop supplementary groups: %w (run as root, or with group %d)", err, xdsapi.ProxyGID)
	}
	if err := syscall.Setgid(xdsapi.ProxyGID); err != nil {
		return fmt.Errorf("setgid %d: %w (run as root, or with group %d)", xdsapi.ProxyGID, err, xdsapi.ProxyGID)
	}
	return nil
}

//go:build !linux

package listener

import (
	"net"
	"net/netip"
)

// originalDst knows no original destination outside Linux (no
// SO_ORIGINAL_DST).
func originalDst(net.Conn) (netip.AddrPort, bool) { return netip.AddrPort{}, false }

package listener

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h),
// which golang.org/x/sys does not name.
const ip6tSOOriginalDst = 80

// originalDst returns the destination an iptables REDIRECT (or DNAT)
// rewrote on c, read with getsockopt SO_ORIGINAL_DST (IPv4, also for an
// IPv4-mapped connection on an IPv6 socket) or IP6T_SO_ORIGINAL_DST
// (IPv6), as Envoy's original_dst listener filter does. ok is false when
// c is not a TCP socket or the kernel knows no original destination (no
// conntrack entry).
func originalDst(c net.Conn) (dst netip.AddrPort, ok bool) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return netip.AddrPort{}, false
	}
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false
	}
	var gerr error
	cerr := raw.Control(func(fd uintptr) {
		if local.Addr().Unmap().Is4() {
			// sockaddr_in in the first 16 bytes: family, port (big
			// endian), address.
			var m *unix.IPv6Mreq
			if m, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST); gerr == nil {
				sa := m.Multiaddr
				dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
			}
			return
		}
		var mi *unix.IPv6MTUInfo // its first field is a sockaddr_in6
		if mi, gerr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.IPPROTO_IPV6, ip6tSOOriginalDst); gerr == nil {
			// Port holds the network-order bytes of the port.
			var b [2]byte
			binary.NativeEndian.PutUint16(b[:], mi.Addr.Port)
			dst = netip.AddrPortFrom(netip.AddrFrom16(mi.Addr.Addr), binary.BigEndian.Uint16(b[:]))
		}
	})
	if cerr != nil || gerr != nil { // ENOENT: not redirected
		return netip.AddrPort{}, false
	}
	return dst, dst.IsValid()
}

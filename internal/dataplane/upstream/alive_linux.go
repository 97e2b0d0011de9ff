package upstream

import (
	"crypto/tls"
	"net"
	"syscall"
)

// connAlive peeks at an idle connection without blocking: a connection the
// upstream closed (EOF) or that has unexpected bytes waiting is not alive.
// One recvfrom(MSG_PEEK|MSG_DONTWAIT) per reuse replaces the goroutine
// per connection that net/http keeps reading to notice the same thing.
// Under TLS the socket is peeked and waiting bytes count as alive: a TLS
// 1.3 server sends session tickets after the handshake, which the next
// read consumes (a close_notify there fails the round trip, which is then
// replayed on a new connection when it can be).
func connAlive(nc net.Conn) bool {
	// Down to the socket through every wrapper that exposes NetConn: a
	// *tls.Conn, the metadata exchange's MXConn over one.
	tlsConn := false
	for {
		if _, ok := nc.(*tls.Conn); ok {
			tlsConn = true
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN, nothing to read, is the healthy idle state; EOF (n == 0),
		// an error, or bytes nobody asked for are not.
		alive = rerr == syscall.EAGAIN || rerr == syscall.EINTR || tlsConn && rerr == nil && n > 0
		return true // never wait for readiness
	})
	return err == nil && alive
}

package upstream

import (
	"net"
	"syscall"
)

// connAlive peeks at an idle connection without blocking: a connection the
// upstream closed (EOF) or that has unexpected bytes waiting is not alive.
// One recvfrom(MSG_PEEK|MSG_DONTWAIT) per reuse replaces the goroutine
// per connection that net/http keeps reading to notice the same thing.
func connAlive(nc net.Conn) bool {
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
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN, nothing to read, is the healthy idle state; EOF (n == 0),
		// an error, or bytes nobody asked for are not.
		alive = rerr == syscall.EAGAIN || rerr == syscall.EINTR
		return true // never wait for readiness
	})
	return err == nil && alive
}

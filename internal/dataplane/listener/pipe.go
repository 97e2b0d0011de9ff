package listener

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// addrPort is a's IP and port; zero for a unix socket's address (a pipe
// listener's connections have no IP source or destination) or nil.
func addrPort(a net.Addr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// listen binds k's address: a TCP socket for "ip:port", a unix domain
// socket for a pipe (listenPipe).
func listen(k sockKey) (net.Listener, error) {
	if !config.IsPipe(k.addr) {
		return net.Listen("tcp", k.addr)
	}
	return listenPipe(k.addr, k.mode)
}

// listenPipe binds the unix domain socket path (Envoy's Address.pipe) and
// gives its file mode when not 0, as Envoy's Pipe.mode. A socket file left
// at path by a process that is gone (nothing accepts on it: connecting is
// refused) is removed first, as Envoy unlinks a pipe's path before it
// binds; anything else there (a regular file, a directory, a socket that
// still accepts) is left alone and the bind fails. An abstract socket
// ("@name") has no file: no removal, no mode. Closing the listener
// removes the socket file while it is still the one bound (pipeListener).
func listenPipe(path string, mode fs.FileMode) (net.Listener, error) {
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		if err := removeStaleSocket(path); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if abstract {
		return ln, nil
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	fi, err := os.Lstat(path)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("pipe %s after bind: %w", path, err)
	}
	pl := &pipeListener{UnixListener: ul, path: path, bound: fi}
	if mode != 0 {
		if err := os.Chmod(path, mode); err != nil {
			_ = pl.Close()
			return nil, fmt.Errorf("pipe mode %#o: %w", mode, err)
		}
	}
	return pl, nil
}

// pipeListener is a unix socket listener bound to a file. Go's
// UnixListener.Close unlinks its path whatever is there by then; a
// listener that replaced this one at the same path (a new generation, or
// another process, after a stale-socket removal) would lose its file.
// Close removes the file only while it is still the one bound (same
// device and inode, and, against a reused inode, same modification time).
type pipeListener struct {
	*net.UnixListener
	path   string
	bound  fs.FileInfo // the socket file as bound
	unlink sync.Once
}

func (l *pipeListener) Close() error {
	err := l.UnixListener.Close()
	l.unlink.Do(func() {
		fi, lerr := os.Lstat(l.path)
		if lerr != nil || !os.SameFile(fi, l.bound) || !fi.ModTime().Equal(l.bound.ModTime()) {
			return
		}
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = rerr
		}
	})
	return err
}

// removeStaleSocket removes path when it is a socket file no process
// accepts on. Nothing at path is fine.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%s)", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("%s: a process accepts on this socket", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: check stale socket: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

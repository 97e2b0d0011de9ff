package testutil

import (
	"io"
	"net"
	"net/http"
	"sync"
)

// RelayPOST is the body of a test's POST tunnel decapsulator, once its
// response head is written: the request body goes to up (a TCP
// connection), which is half-closed when the body ends, in a goroutine
// wg counts; up's bytes go to w, flushed after each read, until up ends or
// w fails. It returns then.
func RelayPOST(w http.ResponseWriter, body io.Reader, up net.Conn, wg *sync.WaitGroup) {
	rc := http.NewResponseController(w)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(up, body)
		_ = up.(*net.TCPConn).CloseWrite()
	}()
	buf := make([]byte, 4096)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// Package httpserve runs an http.Server on a listener until a context
// ends, then shuts it down gracefully: the one serve loop of loomd's HTTP
// servers (the monitoring API, the dashboard). It imports only the
// standard library.
package httpserve

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Serve serves hs on lis until ctx is done, then shuts hs down, waiting up
// to grace for requests in flight before closing their connections, and
// returns nil. It returns an error when serving fails. lis is closed on
// return.
func Serve(ctx context.Context, hs *http.Server, lis net.Listener, grace time.Duration) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, 1)
	wg.Go(func() { errc <- hs.Serve(lis) })
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-errc
	return nil
}

package upstream

import (
	"context"
	"sync/atomic"
)

type connIDKey struct{}

// WithConnectionID returns a child of ctx in which the cluster's HTTP
// connection pools store, in id, the id of the upstream connection
// (filter.NewConnectionID) each round trip is sent on: Envoy's upstream
// connection id (%UPSTREAM_CONNECTION_ID%). A later round trip (a retry)
// overwrites it.
func WithConnectionID(ctx context.Context, id *atomic.Uint64) context.Context {
	return context.WithValue(ctx, connIDKey{}, id)
}

// noteConnectionID stores id where WithConnectionID asked, if it did.
func noteConnectionID(ctx context.Context, id uint64) {
	if p, ok := ctx.Value(connIDKey{}).(*atomic.Uint64); ok {
		p.Store(id)
	}
}

package upstream

import "context"

// pipeKey carries, in a dial's context, the unix socket path (a pipe
// endpoint, config.IsPipe) that an h2 connection dials in place of the
// placeholder address it hands net/http.
type pipeKey struct{}

// pipeDialAddress is the address an h2 pool gives net/http's
// Transport.NewClientConn for a pipe endpoint: NewClientConn wants
// "host:port", which a socket path is not, so the path travels in the
// context (withPipe) and the dialer swaps it back (pipeFrom).
const pipeDialAddress = "pipe:0"

func withPipe(ctx context.Context, path string) context.Context {
	return context.WithValue(ctx, pipeKey{}, path)
}

// pipeFrom returns the pipe path withPipe put in ctx, or "".
func pipeFrom(ctx context.Context) string {
	p, _ := ctx.Value(pipeKey{}).(string)
	return p
}

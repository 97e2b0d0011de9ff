package filter

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
)

// Connection describes one downstream connection, as HTTP and network
// filters see it. The listener makes it once per accepted connection,
// after its listener filters and TLS handshake; it is immutable and safe
// for concurrent use.
type Connection struct {
	// Source is the peer's address (Envoy's connection remote address,
	// RBAC source_ip / direct_remote_ip).
	Source netip.AddrPort
	// Destination is the address the peer connected to: the original
	// destination (SO_ORIGINAL_DST) on an intercepted listener with
	// use_original_dst, else the socket's local address (RBAC
	// destination_ip and destination_port).
	Destination netip.AddrPort
	// OriginalDst is true when Destination was restored by the
	// original_dst listener filter (SO_ORIGINAL_DST of an intercepted
	// connection): an ORIGINAL_DST cluster without use_http_header sends
	// the connection's requests there.
	OriginalDst bool
	// ServerName is the SNI the client sent, "" for none; set for
	// terminated and passed-through TLS alike (tls_inspector's
	// requested_server_name, RBAC requested_server_name).
	ServerName string
	// TLS is the terminated TLS session; nil for plaintext or passed-through
	// TLS. Its PeerCertificates are verified when the filter chain
	// requires a client certificate.
	TLS *tls.ConnectionState
	// FilterChain names the matched filter chain (FilterChain.name).
	FilterChain string
	// LocalCertificate is the certificate the proxy presented on a
	// terminated TLS connection (its URI SANs are XFCC's By); nil
	// otherwise.
	LocalCertificate *x509.Certificate
	// ID is the connection's id, unique in the process (Envoy's
	// connection id, %CONNECTION_ID%); 0 for a Connection the listener
	// did not make.
	ID uint64
	// HandshakeDuration is the time from accept to the end of the
	// downstream TLS handshake; 0 for plaintext or passed-through TLS.
	HandshakeDuration time.Duration

	principals struct {
		once        sync.Once
		peer, local string
	}
	uriSANs struct {
		once        sync.Once
		peer, local string
	}
}

// nextConnectionID numbers the process's connections.
var nextConnectionID atomic.Uint64

// NewConnectionID returns a new connection id, unique in the process,
// from 1: downstream (Connection.ID) and upstream connections share the
// sequence, as Envoy's global connection counter does. Safe for
// concurrent use.
func NewConnectionID() uint64 { return nextConnectionID.Add(1) }

// URISANs returns every URI SAN of the peer's certificate and of the
// proxy's own certificate on the connection, each list joined with ","
// (Envoy's %DOWNSTREAM_PEER_URI_SAN% and %DOWNSTREAM_LOCAL_URI_SAN%), ""
// for each that has none. They are computed once per connection.
func (c *Connection) URISANs() (peer, local string) {
	if c == nil {
		return "", ""
	}
	c.uriSANs.once.Do(func() {
		if c.TLS != nil && len(c.TLS.PeerCertificates) > 0 {
			c.uriSANs.peer = joinURIs(c.TLS.PeerCertificates[0])
		}
		if c.LocalCertificate != nil {
			c.uriSANs.local = joinURIs(c.LocalCertificate)
		}
	})
	return c.uriSANs.peer, c.uriSANs.local
}

func joinURIs(cert *x509.Certificate) string {
	var b strings.Builder
	for i, u := range cert.URIs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(u.String())
	}
	return b.String()
}

// Principals returns the first URI SANs of the peer's verified
// certificate and of the proxy's own certificate on the connection, ""
// for each that is missing: Istio's stats read them (source_principal,
// destination_principal; both set means mutual_tls). They are computed
// once per connection.
func (c *Connection) Principals() (peer, local string) {
	if c == nil {
		return "", ""
	}
	c.principals.once.Do(func() {
		if c.TLS != nil && len(c.TLS.PeerCertificates) > 0 && len(c.TLS.PeerCertificates[0].URIs) > 0 {
			c.principals.peer = c.TLS.PeerCertificates[0].URIs[0].String()
		}
		if c.LocalCertificate != nil && len(c.LocalCertificate.URIs) > 0 {
			c.principals.local = c.LocalCertificate.URIs[0].String()
		}
	})
	return c.principals.peer, c.principals.local
}

// PeerPrincipal is the peer certificate's first URI SAN (a SPIFFE ID,
// "spiffe://cluster.local/ns/default/sa/sleep"), else its subject, as
// Envoy's RBAC authenticated.principal_name reads it; "" for a connection
// without a verified peer certificate.
func (c *Connection) PeerPrincipal() string {
	if c == nil || c.TLS == nil || len(c.TLS.PeerCertificates) == 0 {
		return ""
	}
	leaf := c.TLS.PeerCertificates[0]
	if len(leaf.URIs) > 0 {
		return leaf.URIs[0].String()
	}
	return leaf.Subject.String()
}

type connKey struct{}

// WithConnection returns a child of ctx that carries c; the listener sets
// it as the base of every request's context on the connection
// (http.Server.ConnContext).
func WithConnection(ctx context.Context, c *Connection) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// ConnectionFrom returns the Connection in ctx, or nil.
func ConnectionFrom(ctx context.Context) *Connection {
	c, _ := ctx.Value(connKey{}).(*Connection)
	return c
}

// RequestConnection returns the Connection r arrived on, or nil.
func RequestConnection(r *http.Request) *Connection { return ConnectionFrom(r.Context()) }

// NetworkFactory parses and builds one kind of network (L4) filter that
// runs on a filter chain before its terminal filter (tcp_proxy or the HTTP
// connection manager), such as envoy.filters.network.rbac. Implementations
// are stateless and safe for concurrent use.
type NetworkFactory interface {
	// Name is the filter's canonical Envoy name.
	Name() string
	// TypeURLs are the typed_config type URLs the factory accepts.
	TypeURLs() []string
	// Parse validates the typed_config; the error names the offending
	// field.
	Parse(cfg *anypb.Any) (Config, error)
	// Build makes the filter of one filter chain, once per generation.
	Build(cfg Config) (NetworkFilter, error)
}

// NetworkFilter decides on one downstream connection before any of its
// bytes are proxied. It is called concurrently.
type NetworkFilter interface {
	// OnConnection is called once per connection, after the TLS handshake
	// if any. A non-nil error closes the connection; its text becomes the
	// access log's connection termination details (Envoy's, as
	// "rbac_access_denied_matched_policy[none]"). It may block (an
	// external check) until ctx, which ends with the connection's drain,
	// is done.
	OnConnection(ctx context.Context, c *Connection) error
}

// NetworkChain runs a filter chain's network filters, in order, on one
// connection: each sees the same *State in its context (so the rbac
// filter's shadow result reaches ext_authz, as Envoy's connection dynamic
// metadata does) and up, when it is not nil. It returns the first
// filter's error, after which the connection must be closed, and the
// State, whose Metadata the access log may read.
func NetworkChain(ctx context.Context, c *Connection, up Upstreams, fs []NetworkFilter) (*State, error) {
	st := &State{Upstreams: up}
	ctx = NewContext(ctx, st)
	for _, f := range fs {
		if err := f.OnConnection(ctx, c); err != nil {
			return st, err
		}
	}
	return st, nil
}

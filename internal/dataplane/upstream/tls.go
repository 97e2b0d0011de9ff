package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/dataplane/transport"
)

// TLSError is wrapped (in a *ConnectError) by a round trip or dial whose
// TLS handshake with the upstream failed, or could not start because a
// secret is missing: Envoy's UF with an upstream transport failure reason.
type TLSError struct{ Err error }

func (e *TLSError) Error() string { return "TLS_error: " + e.Err.Error() }
func (e *TLSError) Unwrap() error { return e.Err }

// tlsTransport is one TLS transport socket of a cluster (an
// UpstreamTransport with TLS, by its Key): its session cache and its
// HTTP/2 pool. Its HTTP/1.1 connections live in the cluster's h1Transport
// under their own pool keys. It is safe for concurrent use.
type tlsTransport struct {
	// key prefixes its HTTP/1.1 pool keys: the UpstreamTransport's Key,
	// then "|alpn=" and the ALPN override's key when it has one, so that
	// closing a transport (its key and "|" as prefix) closes its
	// overrides' pools too.
	key string
	// h1 is the round tripper of HTTP/1.1 over this socket, made once so
	// that a pick boxes nothing.
	h1  h1Via
	cfg *config.UpstreamTLS
	// anyALPN is set on a transport offering an istio.alpn override: its
	// HTTP/2 pool speaks HTTP/2 whatever ALPN negotiated (none, against a
	// sidecar's server listing h2 and http/1.1 to a client offering
	// istio-h2), as Envoy's HTTP/2 codec does on a cluster configured for
	// HTTP/2; the peer reads the client preface (codec_type AUTO).
	anyALPN  bool
	st       *clusterState
	sessions tls.ClientSessionCache
	// h2 is the pool of HTTP/2 connections over this socket (h2.go);
	// h2t makes them, built on first use.
	h2  *h2Pool
	h2t atomic.Pointer[http.Transport]
	// ppH1 and ppH2 are the round trippers of HTTP/1.1 and HTTP/2 over
	// this socket when it writes a PROXY protocol header first (the
	// UpstreamTransport's ProxyProtocol), made once.
	ppH1, ppH2 proxyProtocolRT
	// local caches the URI SAN of the client certificate last resolved
	// (localPrincipal).
	local atomic.Pointer[localPrincipal]
}

// localPrincipal is a client certificate and its first URI SAN.
type localPrincipal struct {
	cert *tls.Certificate
	san  string
}

// tlsTransportKey keys a cluster's TLS transports: the
// UpstreamTransport's Key and the key of the ALPN override it offers
// instead of the transport's own ("": none; config.ALPNOverride.For).
// Both strings exist already, so a request's lookup builds nothing.
type tlsTransportKey struct{ base, alpn string }

// tlsTransport returns the cluster's TLS transport of ut offering ALPN
// alpn, whose key is alpnKey (nil, "": ut's own), making it on first use.
func (st *clusterState) tlsTransport(ut *config.UpstreamTransport, alpn []string, alpnKey string) *tlsTransport {
	key := tlsTransportKey{ut.Key, alpnKey}
	for {
		m := st.tls.Load()
		if m != nil {
			if tt := (*m)[key]; tt != nil {
				return tt
			}
		}
		next := map[tlsTransportKey]*tlsTransport{}
		if m != nil {
			for k, v := range *m {
				next[k] = v
			}
		}
		tt := st.newTLSTransport(ut, alpn, alpnKey)
		next[key] = tt
		if st.tls.CompareAndSwap(m, &next) {
			return tt
		}
	}
}

func (st *clusterState) newTLSTransport(ut *config.UpstreamTransport, alpn []string, alpnKey string) *tlsTransport {
	cfg, key := ut.TLS, ut.Key
	if alpn != nil {
		c := *ut.TLS
		c.ALPN = alpn
		cfg, key = &c, ut.Key+"|alpn="+alpnKey
	}
	tt := &tlsTransport{key: key, cfg: cfg, st: st, anyALPN: alpn != nil}
	tt.h1 = h1Via{t: st.h1, tt: tt}
	tt.h2 = newH2Pool(st.h1, tt, tt.h2Transport)
	if v := ut.ProxyProtocol; v != 0 {
		tt.ppH1 = proxyProtocolRT{version: v, h1: st.h1, tt: tt}
		tt.ppH2 = proxyProtocolRT{version: v, h2: tt.h2}
	}
	if ut.TLS.MaxSessionKeys > 0 {
		tt.sessions = tls.NewLRUClientSessionCache(ut.TLS.MaxSessionKeys)
	}
	return tt
}

// updateTransports keeps the TLS transports c's generation names (with
// their ALPN overrides) and closes the idle connections of the others.
func (st *clusterState) updateTransports(c *config.Cluster) {
	old := st.tls.Load()
	next := map[tlsTransportKey]*tlsTransport{}
	for i := range c.Transports {
		ut := &c.Transports[i]
		if ut.TLS == nil {
			continue
		}
		if old != nil && (*old)[tlsTransportKey{base: ut.Key}] != nil {
			for k, tt := range *old {
				if k.base == ut.Key {
					next[k] = tt
				}
			}
			continue
		}
		next[tlsTransportKey{base: ut.Key}] = st.newTLSTransport(ut, nil, "")
	}
	st.tls.Store(&next)
	if old == nil {
		return
	}
	for k, tt := range *old {
		if next[k] == nil {
			tt.close()
		}
	}
}

// close closes tt's idle connections.
func (tt *tlsTransport) close() {
	prefix := tt.key + "|"
	tt.st.h1.closeIdleWhere(func(key string) bool { return strings.HasPrefix(key, prefix) })
	tt.h2.release()
}

// handshake runs the TLS client handshake on nc, a fresh connection to
// addr, within ctx and the cluster's connect_timeout, with the client
// certificate and trust bundle the secret store holds now. On failure it
// closes nc and returns a *ConnectError wrapping a *TLSError.
func (tt *tlsTransport) handshake(ctx context.Context, nc net.Conn, addr string) (net.Conn, error) {
	cfg, err := transport.ClientConfig(tt.cfg, tt.st.opts.Secrets, tt.sessions)
	if err != nil {
		_ = nc.Close()
		return nil, &ConnectError{Addr: addr, Err: &TLSError{Err: err}}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(tt.st.connectTimeout.Load()))
	defer cancel()
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, &ConnectError{Addr: addr, Err: &TLSError{Err: err}}
	}
	if c := tt.st.cfg.Load(); c != nil && c.MetadataExchange != "" && tc.ConnectionState().NegotiatedProtocol == c.MetadataExchange {
		// Istio's TCP metadata exchange: the peer's TCP chain will send
		// its frame and wants ours, whatever rides on the connection (an
		// HTTP/1.1 pool's too, which reads the TLS state through
		// ConnectionState and the socket through NetConn).
		return tt.st.opts.Exchange.Conn(tc), nil
	}
	return tc, nil
}

// LocalPrincipal is the first URI SAN (a SPIFFE ID) of the client
// certificate h's TLS transport socket presents now, "" for a plaintext
// endpoint or a socket without a certificate: what Envoy's upstream
// connection reports as uriSanLocalCertificate, which Istio's stats use as
// source_principal on the client side. It costs a secret lookup; the SAN
// is parsed once per certificate.
func (h *Host) LocalPrincipal() string {
	if h == nil || h.tls == nil {
		return ""
	}
	return h.tls.localPrincipal()
}

func (tt *tlsTransport) localPrincipal() string {
	if len(tt.cfg.Certificates) == 0 {
		return ""
	}
	src := tt.cfg.Certificates[0]
	sec := src.Inline
	if src.Ref != nil {
		sec = tt.st.opts.Secrets.Get(src.Ref.Name)
	}
	if sec == nil || sec.Certificate == nil {
		return ""
	}
	cert := sec.Certificate
	if lp := tt.local.Load(); lp != nil && lp.cert == cert {
		return lp.san
	}
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	san := ""
	if leaf != nil && len(leaf.URIs) > 0 {
		san = leaf.URIs[0].String()
	}
	tt.local.Store(&localPrincipal{cert: cert, san: san})
	return san
}

// h2Transport returns the net/http transport that makes the connections
// of tt's HTTP/2 pool: TLS connections that negotiate "h2" (ALPN), or any
// protocol when tt.anyALPN. net/http speaks HTTP/2 on a *tls.Conn only
// after h2, so those connections reach it as a priorKnowledgeTLS, which
// its Transport takes as a connection for HTTP/2 with prior knowledge
// (Protocols.UnencryptedHTTP2), encrypted as it is.
func (tt *tlsTransport) h2Transport() *http.Transport {
	if t := tt.h2t.Load(); t != nil {
		return t
	}
	st := tt.st
	nt := st.newH2Transport()
	nt.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if p := pipeFrom(ctx); p != "" {
			addr = p // an h2 connection to a pipe endpoint (withPipe)
		}
		nc, err := st.dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c, err := tt.handshake(ctx, nc, addr)
		if tc, ok := c.(*tls.Conn); ok && tt.anyALPN {
			return priorKnowledgeTLS{tc}, nil
		}
		return c, err
	}
	if tt.anyALPN {
		nt.Protocols.SetUnencryptedHTTP2(true)
	} else {
		nt.Protocols.SetHTTP2(true)
	}
	tt.h2t.CompareAndSwap(nil, nt) // a racing loser's transport has made no connection
	return tt.h2t.Load()
}

// priorKnowledgeTLS is a TLS connection that carries HTTP/2 whatever ALPN
// negotiated. It is no *tls.Conn to net/http, whose Transport then speaks
// HTTP/2 on it with prior knowledge; its ConnectionState still gives the
// responses their TLS state (resp.TLS), and NetConn its socket.
type priorKnowledgeTLS struct{ *tls.Conn }

// DialCounted is Dial under the cluster's max_connections circuit breaker,
// for the TCP proxy: it first takes one of the cluster's connection slots
// (shared with its HTTP/1.1 pool, as Envoy's one resource manager per
// cluster) and fails at once with ErrOverflow when all are in use. The
// caller calls release once the connection is closed (it is safe to call
// more than once); a failed dial gives the slot back itself. The
// connection is returned unwrapped, so that copies between two TCP
// connections still splice.
func (h *Host) DialCounted(ctx context.Context) (conn net.Conn, release func(), err error) {
	if h.st == nil {
		conn, err = h.Dial(ctx)
		return conn, func() {}, err
	}
	release, err = h.st.h1.acquireSlot()
	if err != nil {
		return nil, nil, err
	}
	conn, err = h.Dial(ctx)
	if err != nil {
		release()
		return nil, nil, err
	}
	return conn, release, nil
}

// Dial opens a connection to h.Addr for the TCP proxy, over the transport
// socket the endpoint's transport_socket_matches chose (TLS origination
// included, after a PROXY protocol header carrying the addresses of the
// downstream connection of ctx, filter.ConnectionFrom, when the socket
// has one), within ctx and the cluster's connect_timeout. Errors wrap
// *ConnectError (and *TLSError for a failed handshake).
func (h *Host) Dial(ctx context.Context) (net.Conn, error) {
	if h.pp != 0 {
		ctx = withProxyHeader(ctx, newProxyHeader(h.pp, filter.ConnectionFrom(ctx), ""))
	}
	if h.st == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, config.Network(h.Addr), h.Addr)
		if err != nil {
			return nil, &ConnectError{Addr: h.Addr, Err: err}
		}
		return c, nil
	}
	nc, err := h.st.dial(ctx, "tcp", h.Addr)
	if err != nil || h.tls == nil {
		return nc, err
	}
	return h.tls.handshake(ctx, nc, h.Addr)
}

// TransportFailureReason returns Envoy's upstream transport failure reason
// for a round trip or dial error ("TLS_error: ..."), "" when err is no TLS
// failure.
func TransportFailureReason(err error) string {
	var te *TLSError
	if errors.As(err, &te) {
		return te.Error()
	}
	return ""
}

// noSecrets resolves nothing.
type noSecrets struct{}

func (noSecrets) Get(string) *secret.Secret { return nil }

package istiostats

import (
	"crypto/tls"
	"sync"
)

// PeerPrincipal is the first URI SAN of the peer's leaf certificate on a
// TLS connection (cs nil: none), "" when it has none: Envoy's
// uriSanPeerCertificate()[0], which Istio's client-side stats report as
// destination_principal. Principals are cached by certificate (4096 at
// most), so that a request on a known connection does not allocate. It is
// safe for concurrent use.
func PeerPrincipal(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	leaf := cs.PeerCertificates[0]
	if len(leaf.URIs) == 0 {
		return ""
	}
	sans.mu.RLock()
	san, ok := sans.m[string(leaf.Raw)]
	sans.mu.RUnlock()
	if ok {
		return san
	}
	san = leaf.URIs[0].String()
	sans.mu.Lock()
	if len(sans.m) >= maxPeers {
		clear(sans.m)
	}
	sans.m[string(leaf.Raw)] = san
	sans.mu.Unlock()
	return san
}

// sans caches PeerPrincipal by the certificate's DER bytes: a peer's
// certificate is the same on every connection until it rotates.
var sans = struct {
	mu sync.RWMutex // guards m
	m  map[string]string
}{m: map[string]string{}}

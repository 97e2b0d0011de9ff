package secret

import (
	"crypto/tls"
	"crypto/x509"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Istio's well-known secret names, as its agent serves them over SDS.
const (
	// WorkloadCertificate is the proxy's own SVID and key ("default").
	WorkloadCertificate = "default"
	// RootCA is the mesh trust bundle ("ROOTCA").
	RootCA = "ROOTCA"
)

// Secret is one named secret in runtime form: a certificate with its key
// (envoy.extensions.transport_sockets.tls.v3.Secret.tls_certificate) or a
// trust bundle (Secret.validation_context). Exactly one of Certificate and
// Roots is set. A Secret is immutable once stored; a rotation stores a new
// one under the same name.
type Secret struct {
	Name string
	// Certificate is the chain (leaf first) and private key. Its Leaf
	// field is parsed.
	Certificate *tls.Certificate
	// Roots are the trusted CAs; RootsPEM is the same bundle as read, for
	// status pages (certificates are public; keys are never kept as PEM).
	Roots    *x509.CertPool
	RootsPEM []byte
	// CertificatePEM is Certificate's chain as read, for status pages and
	// /config_dump (never the key); nil for a trust bundle or when the
	// source gave none.
	CertificatePEM []byte
	// Source says where the secret came from, for status pages: SourceADS,
	// SourceFile, SourceAgent, or "" when unknown.
	Source string
	// Version is the source's version of the secret (the xDS version_info
	// of an ADS secret, a file's modification time); "" when unknown.
	Version string
	// Updated is when this version was stored.
	Updated time.Time
}

// Sources of secrets (Secret.Source).
const (
	// SourceADS: fetched over the xDS stream (sds_config ads).
	SourceADS = "ads"
	// SourceFile: read by the proxy from files (Istio's file-cert: and
	// file-root: names).
	SourceFile = "file"
	// SourceAgent: the workload certificate and trust bundle the agent
	// obtained ("default", "ROOTCA").
	SourceAgent = "agent"
)

// NotAfter is the leaf certificate's expiry; zero for a trust bundle.
func (s *Secret) NotAfter() time.Time {
	if s == nil || s.Certificate == nil || s.Certificate.Leaf == nil {
		return time.Time{}
	}
	return s.Certificate.Leaf.NotAfter
}

// Store holds secrets by name. Get is lock-free and safe on the handshake
// path; Set and Delete copy the map and publish it atomically. The zero
// value is not usable: call NewStore.
type Store struct {
	cur atomic.Pointer[map[string]*Secret]

	// mu serializes writers and guards subs. No I/O under it.
	mu   sync.Mutex
	subs []chan struct{}
}

// NewStore returns an empty Store.
func NewStore() *Store {
	s := &Store{}
	m := map[string]*Secret{}
	s.cur.Store(&m)
	return s
}

// Get returns the secret named name, or nil when there is none (yet).
func (s *Store) Get(name string) *Secret { return (*s.cur.Load())[name] }

// Names returns the names held, in no order.
func (s *Store) Names() []string {
	m := *s.cur.Load()
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Set stores sec under sec.Name, replacing any previous version, and wakes
// every subscriber. Updated is set to now when zero.
func (s *Store) Set(sec *Secret) {
	if sec.Updated.IsZero() {
		c := *sec
		c.Updated = time.Now()
		sec = &c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := maps.Clone(*s.cur.Load())
	m[sec.Name] = sec
	s.cur.Store(&m)
	s.notifyLocked()
}

// Delete removes the secret named name, if any, and wakes subscribers.
func (s *Store) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := (*s.cur.Load())[name]; !ok {
		return
	}
	m := maps.Clone(*s.cur.Load())
	delete(m, name)
	s.cur.Store(&m)
	s.notifyLocked()
}

// Subscribe returns a channel that receives a value after each change
// (coalesced: one pending value at most). It is never closed.
func (s *Store) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs = append(s.subs, ch)
	s.mu.Unlock()
	return ch
}

func (s *Store) notifyLocked() {
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

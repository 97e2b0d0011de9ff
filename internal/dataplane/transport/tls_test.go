package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/matcher"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/testutil"
)

func exact(t config.SANType, v string) config.SANMatcher {
	return san(t, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}})
}

func san(t config.SANType, m *matcherv3.StringMatcher) config.SANMatcher {
	return config.SANMatcher{Type: t, Matcher: matcher.MustString(m)}
}

func TestMatchSANs(t *testing.T) {
	ca := testutil.NewCA(t, "root")
	spiffe := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/sleep"}}).Cert
	dns := ca.Issue(t, testutil.LeafOptions{DNS: []string{"*.example.com", "exact.test"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}}).Cert
	tests := []struct {
		name string
		cert int // 0 spiffe, 1 dns
		sans []config.SANMatcher
		want bool
	}{
		{"istio URI exact", 0, []config.SANMatcher{exact(config.SANURI, "spiffe://cluster.local/ns/default/sa/sleep")}, true},
		{"URI of another service account", 0, []config.SANMatcher{exact(config.SANURI, "spiffe://cluster.local/ns/default/sa/other")}, false},
		{"any of several", 0, []config.SANMatcher{exact(config.SANURI, "spiffe://x"), exact(config.SANURI, "spiffe://cluster.local/ns/default/sa/sleep")}, true},
		{"URI prefix", 0, []config.SANMatcher{san(config.SANURI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/ns/default/"}})}, true},
		{"URI prefix, ignore_case", 0, []config.SANMatcher{san(config.SANURI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "SPIFFE://Cluster.Local/ns/"}, IgnoreCase: true})}, true},
		{"URI prefix, case matters", 0, []config.SANMatcher{san(config.SANURI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "SPIFFE://Cluster.Local/ns/"}})}, false},
		{"URI contains", 0, []config.SANMatcher{san(config.SANURI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "/sa/sleep"}})}, true},
		{"URI exact, ignore_case", 0, []config.SANMatcher{san(config.SANURI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/default/sa/SLEEP"}, IgnoreCase: true})}, true},
		{"legacy matcher reads URIs", 0, []config.SANMatcher{exact(config.SANAny, "spiffe://cluster.local/ns/default/sa/sleep")}, true},
		{"DNS type does not read URIs", 0, []config.SANMatcher{exact(config.SANDNS, "spiffe://cluster.local/ns/default/sa/sleep")}, false},
		{"DNS wildcard in the certificate, one label", 1, []config.SANMatcher{exact(config.SANDNS, "api.example.com")}, true},
		{"DNS wildcard covers one label only", 1, []config.SANMatcher{exact(config.SANDNS, "a.b.example.com")}, false},
		{"DNS wildcard does not cover the apex", 1, []config.SANMatcher{exact(config.SANDNS, "example.com")}, false},
		{"DNS case", 1, []config.SANMatcher{exact(config.SANDNS, "EXACT.test")}, true},
		{"DNS suffix matcher reads the SAN as text", 1, []config.SANMatcher{san(config.SANDNS, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example.com"}})}, true},
		{"IP", 1, []config.SANMatcher{exact(config.SANIP, "10.0.0.1")}, true},
		{"regex", 1, []config.SANMatcher{san(config.SANDNS, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `exact\.[a-z]+`}}})}, true},
	}
	certs := [...]*x509.Certificate{spiffe, dns}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MatchSANs(certs[tt.cert], tt.sans); got != tt.want {
				t.Errorf("MatchSANs = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestHandshakes runs real handshakes over net.Pipe between ServerConfig
// and ClientConfig with secrets resolved from a store.
func TestHandshakes(t *testing.T) {
	ca := testutil.NewCA(t, "root")
	other := testutil.NewCA(t, "other")
	server := ca.Issue(t, testutil.LeafOptions{DNS: []string{"svc.test"}, URIs: []string{"spiffe://cluster.local/ns/default/sa/server"}})
	client := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/client"}})
	stranger := other.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/client"}})

	store := secret.NewStore()
	put := func(name string, l *testutil.Leaf) {
		s, err := secret.ParseCertificate(name, l.CertPEM, l.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		store.Set(s)
	}
	put("server", server)
	put("client", client)
	put("stranger", stranger)
	roots, err := secret.ParseRoots("ROOTCA", ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	store.Set(roots)

	ref := func(n string) *config.SecretRef { return &config.SecretRef{Name: n, Source: config.SecretLocal} }
	common := func(cert string, sans ...config.SANMatcher) config.CommonTLS {
		c := config.CommonTLS{Validation: &config.ValidationContext{Ref: ref("ROOTCA"), SANs: sans},
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
		if cert != "" {
			c.Certificates = []config.CertSource{{Ref: ref(cert)}}
		}
		return c
	}
	withALPN := func(c config.CommonTLS, protos ...string) config.CommonTLS { c.ALPN = protos; return c }
	tests := []struct {
		name       string
		down       *config.DownstreamTLS
		up         *config.UpstreamTLS
		wantErr    string // in the client's handshake or config error
		wantPeerOf string // the principal the server saw
		// wantSrvErr is in the server's handshake error: in TLS 1.3 the
		// client finishes before the server has checked its certificate.
		wantSrvErr string
	}{
		{"mTLS", &config.DownstreamTLS{CommonTLS: common("server"), RequireClientCertificate: true},
			&config.UpstreamTLS{CommonTLS: common("client", exact(config.SANURI, "spiffe://cluster.local/ns/default/sa/server"))},
			"", "spiffe://cluster.local/ns/default/sa/client", ""},
		{"server SAN mismatch", &config.DownstreamTLS{CommonTLS: common("server"), RequireClientCertificate: true},
			&config.UpstreamTLS{CommonTLS: common("client", exact(config.SANURI, "spiffe://cluster.local/ns/default/sa/other"))},
			"no subject alternative name", "", ""},
		{"client from another CA", &config.DownstreamTLS{CommonTLS: common("server"), RequireClientCertificate: true},
			&config.UpstreamTLS{CommonTLS: common("stranger")}, "", "", "certificate signed by unknown authority"},
		{"client certificate required", &config.DownstreamTLS{CommonTLS: common("server"), RequireClientCertificate: true},
			&config.UpstreamTLS{CommonTLS: common("")}, "", "", "client didn't provide a certificate"},
		{"client certificate optional", &config.DownstreamTLS{CommonTLS: common("server")},
			&config.UpstreamTLS{CommonTLS: common("")}, "", "", ""},
		{"missing client secret", &config.DownstreamTLS{CommonTLS: common("server")},
			&config.UpstreamTLS{CommonTLS: common("nope")}, "secret not available", "", ""},
		{"missing server secret", &config.DownstreamTLS{CommonTLS: common("nope")},
			&config.UpstreamTLS{CommonTLS: common("client")}, "internal error", "", ""},
		{"require SNI", &config.DownstreamTLS{CommonTLS: common("server"), RequireSNI: true},
			&config.UpstreamTLS{CommonTLS: common("client")}, "internal error", "", ""},
		{"ALPN without a common protocol goes on without ALPN", &config.DownstreamTLS{CommonTLS: withALPN(common("server"), "h2", "http/1.1")},
			&config.UpstreamTLS{CommonTLS: withALPN(common("client"), "istio-peer-exchange", "istio")}, "", "spiffe://cluster.local/ns/default/sa/client", ""},
		{"SNI given", &config.DownstreamTLS{CommonTLS: common("server"), RequireSNI: true},
			&config.UpstreamTLS{CommonTLS: common("client"), SNI: "svc.test"}, "", "spiffe://cluster.local/ns/default/sa/client", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := ClientConfig(tt.up, store, nil)
			if err != nil {
				if tt.wantErr == "" || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ClientConfig: %v, want %q", err, tt.wantErr)
				}
				if !errors.Is(err, ErrSecretUnavailable) {
					t.Errorf("error %v does not wrap ErrSecretUnavailable", err)
				}
				return
			}
			a, b := net.Pipe()
			srv := tls.Server(a, ServerConfig(tt.down, store))
			done := make(chan error, 1)
			go func() { done <- srv.Handshake() }()
			cerr := tls.Client(b, cc).Handshake()
			b.Close()
			serr := <-done
			a.Close()
			if tt.wantErr != "" {
				if cerr == nil || !strings.Contains(cerr.Error(), tt.wantErr) {
					t.Fatalf("client handshake: %v; want an error containing %q (server: %v)", cerr, tt.wantErr, serr)
				}
				return
			}
			if tt.wantSrvErr != "" {
				if serr == nil || !strings.Contains(serr.Error(), tt.wantSrvErr) {
					t.Fatalf("server handshake: %v; want an error containing %q", serr, tt.wantSrvErr)
				}
				return
			}
			if cerr != nil || serr != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			st := srv.ConnectionState()
			if got := (&filter.Connection{TLS: &st}).PeerPrincipal(); got != tt.wantPeerOf {
				t.Errorf("server saw peer %q, want %q", got, tt.wantPeerOf)
			}
		})
	}
}

// recordingConn is a connection that records the certificate the server
// presented (LocalCertificateRecorder), as the listener's does.
type recordingConn struct {
	net.Conn
	local *x509.Certificate
}

func (c *recordingConn) SetLocalCertificate(cert *x509.Certificate) { c.local = cert }

// A resumed session presents no certificate, but the connection is still
// the proxy's under its certificate (Envoy's uriSanLocalCertificate): the
// destination principal and XFCC's By must not vanish on resumption.
func TestLocalCertificateOnResumption(t *testing.T) {
	ca := testutil.NewCA(t, "root")
	server := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/server"}})
	client := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/client"}})
	store := secret.NewStore()
	for name, l := range map[string]*testutil.Leaf{"server": server, "client": client} {
		s, err := secret.ParseCertificate(name, l.CertPEM, l.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		store.Set(s)
	}
	roots, err := secret.ParseRoots("ROOTCA", ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	store.Set(roots)
	ref := func(n string) *config.SecretRef { return &config.SecretRef{Name: n, Source: config.SecretLocal} }
	common := func(cert string) config.CommonTLS {
		return config.CommonTLS{Certificates: []config.CertSource{{Ref: ref(cert)}}, Validation: &config.ValidationContext{Ref: ref("ROOTCA")},
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	}
	scfg := ServerConfig(&config.DownstreamTLS{CommonTLS: common("server"), RequireClientCertificate: true}, store)
	sessions := tls.NewLRUClientSessionCache(4)
	for i, wantResumed := range []bool{false, true} {
		cc, err := ClientConfig(&config.UpstreamTLS{CommonTLS: common("client"), MaxSessionKeys: 1, SNI: "server.test"}, store, sessions)
		if err != nil {
			t.Fatal(err)
		}
		b, a := testutil.TCPPair(t)
		rc := &recordingConn{Conn: a}
		srv := tls.Server(rc, scfg)
		done := make(chan error, 1)
		go func() {
			err := srv.Handshake()
			if err == nil {
				_, err = srv.Write([]byte("x"))
			}
			done <- err
		}()
		cl := tls.Client(b, cc)
		_ = cl.SetDeadline(time.Now().Add(5 * time.Second))
		cerr := cl.Handshake()
		if cerr == nil {
			// TLS 1.3 tickets come after the handshake: read them.
			_, cerr = cl.Read(make([]byte, 1))
		}
		serr := <-done
		if cerr != nil || serr != nil {
			t.Fatalf("handshake %d: client %v, server %v", i, cerr, serr)
		}
		if got := srv.ConnectionState().DidResume; got != wantResumed {
			t.Fatalf("handshake %d resumed %v, want %v", i, got, wantResumed)
		}
		if rc.local == nil || len(rc.local.URIs) == 0 || rc.local.URIs[0].String() != "spiffe://cluster.local/ns/default/sa/server" {
			t.Errorf("handshake %d (resumed %v): local certificate %v", i, wantResumed, rc.local)
		}
		a.Close()
		b.Close()
	}
}

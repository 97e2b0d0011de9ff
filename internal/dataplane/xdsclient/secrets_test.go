package xdsclient

import (
	"context"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"go.uber.org/goleak"

	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const gatewaySecret = "kubernetes://bookinfo-gateway-certs"

// gatewayListener terminates TLS with a certificate fetched over ADS
// (Istio's gateway credentialName).
func gatewayListener(t *testing.T) *listenerv3.Listener {
	l := listener(t)
	l.FilterChains[0].TransportSocket = xdstest.TLSSocket(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDS(gatewaySecret)}}})
	return l
}

func certSecret(name string, l *testutil.Leaf) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: xdstest.InlineBytes(l.CertPEM), PrivateKey: xdstest.InlineBytes(l.KeyPEM)}}}
}

// secretSnapshot serves the gateway listener, and sec at version v.
func secretSnapshot(t *testing.T, v string, sec *tlsv3.Secret) *cachev3.Snapshot {
	s := snapshot(t, map[string]string{xdsapi.ClusterType: "1", xdsapi.EndpointType: "1", xdsapi.ListenerType: "1", xdsapi.RouteType: "1"},
		routeConfig("/", ""))
	s.Resources[cachev3.GetResponseType(xdsapi.ListenerType)] = cachev3.NewResources("1", []types.Resource{gatewayListener(t)})
	s.Resources[cachev3.GetResponseType(xdsapi.SecretType)] = cachev3.NewResources(v, []types.Resource{sec})
	return s
}

// TestSecretsOverADS: a listener naming a secret with sds_config ads makes
// the client ask for it by name; the secret lands in the store (and a new
// version replaces it: rotation); an invalid one is NACKed and the stored
// one stays.
func TestSecretsOverADS(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the server stops (cleanups run last-first)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec, snaps, addr := startServer(t, ctx)

	ca := testutil.NewCA(t, "root")
	first, second := ca.Issue(t, testutil.LeafOptions{DNS: []string{"bookinfo.example.com"}}), ca.Issue(t, testutil.LeafOptions{DNS: []string{"bookinfo.example.com"}})
	if err := snaps.SetSnapshot(ctx, nodeID, secretSnapshot(t, "s1", certSecret(gatewaySecret, first))); err != nil {
		t.Fatal(err)
	}
	store := secret.NewStore()
	app := &applied{}
	c := runClient(t, ctx, Options{Addr: addr, Node: &corev3.Node{Id: nodeID}, Apply: app.apply, Secrets: store})

	serial := func() string {
		s := store.Get(gatewaySecret)
		if s == nil {
			return ""
		}
		return s.Certificate.Leaf.SerialNumber.String() + "@" + s.Version + "/" + s.Source
	}
	waitStore := func(what, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for serial() != want {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: store has %q, want %q", what, serial(), want)
			}
			<-time.After(10 * time.Millisecond)
		}
	}
	waitStore("the secret", first.Cert.SerialNumber.String()+"@s1/ads")
	rec.waitFor(t, "a named SDS request and its ACK", func(reqs []*discoveryv3.DiscoveryRequest) bool {
		named := false
		for _, q := range reqs {
			if q.GetTypeUrl() == xdsapi.SecretType && slices.Equal(q.GetResourceNames(), []string{gatewaySecret}) {
				named = true
			}
		}
		return named && acked(reqs, xdsapi.SecretType, "s1")
	})
	gen, _ := app.last()

	// Rotation: a new version replaces the secret; no generation is built.
	if err := snaps.SetSnapshot(ctx, nodeID, secretSnapshot(t, "s2", certSecret(gatewaySecret, second))); err != nil {
		t.Fatal(err)
	}
	waitStore("the rotated secret", second.Cert.SerialNumber.String()+"@s2/ads")
	if g, _ := app.last(); g != gen {
		t.Error("a secret update built a new generation")
	}

	// A key that does not match the certificate: NACK, the store keeps s2.
	bad := certSecret(gatewaySecret, first)
	bad.GetTlsCertificate().PrivateKey = xdstest.InlineBytes(second.KeyPEM)
	if err := snaps.SetSnapshot(ctx, nodeID, secretSnapshot(t, "s3", bad)); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the NACK of SDS s3", func(reqs []*discoveryv3.DiscoveryRequest) bool {
		for _, q := range reqs {
			if q.GetTypeUrl() == xdsapi.SecretType && q.GetErrorDetail() != nil && q.GetVersionInfo() == "s2" {
				return true
			}
		}
		return false
	})
	if got := serial(); got != second.Cert.SerialNumber.String()+"@s2/ads" {
		t.Errorf("after the NACK the store has %q", got)
	}
	if sds := c.Status().Types[4]; sds.Short != "SDS" || sds.Version != "s2" || sds.NackVersion != "s3" || sds.NackError == "" {
		t.Errorf("Status SDS = %+v", sds)
	}
}

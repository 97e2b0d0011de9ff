package translate

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/testutil"
)

// mtlsPushContext is the bookinfo mesh plus extra YAML.
func mtlsPushContext(t *testing.T, extra string) *model.PushContext {
	t.Helper()
	files := []string{meshFile}
	if extra != "" {
		f := filepath.Join(t.TempDir(), "extra.yaml")
		if err := os.WriteFile(f, []byte(extra), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return loadPushContext(t, files...)
}

func peerAuthnYAML(ns, name, selector, mode, portLevel string) string {
	s := "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n"
	if selector != "" {
		s += "  selector: {matchLabels: {app: " + selector + "}}\n"
	}
	if mode != "" {
		s += "  mtls: {mode: " + mode + "}\n"
	}
	if portLevel != "" {
		s += "  portLevelMtls: " + portLevel + "\n"
	}
	return s + "---\n"
}

// TestMutualTLSFor: Istio's ComposePeerAuthentication inheritance.
func TestMutualTLSFor(t *testing.T) {
	pp := map[string]string{"app": "productpage"}
	for _, tc := range []struct {
		name      string
		yaml      string
		want      model.MTLSMode
		wantPorts map[uint32]model.MTLSMode
	}{
		{name: "no policy: PERMISSIVE", want: model.MTLSPermissive},
		{name: "mesh STRICT", yaml: peerAuthnYAML("istio-system", "default", "", "STRICT", ""), want: model.MTLSStrict},
		{name: "mesh STRICT, namespace UNSET inherits", yaml: peerAuthnYAML("istio-system", "default", "", "STRICT", "") +
			peerAuthnYAML("default", "ns", "", "UNSET", ""), want: model.MTLSStrict},
		{name: "namespace DISABLE over mesh STRICT", yaml: peerAuthnYAML("istio-system", "default", "", "STRICT", "") +
			peerAuthnYAML("default", "ns", "", "DISABLE", ""), want: model.MTLSDisable},
		{name: "workload over namespace", yaml: peerAuthnYAML("default", "ns", "", "DISABLE", "") +
			peerAuthnYAML("default", "pp", "productpage", "STRICT", ""), want: model.MTLSStrict},
		{name: "workload of another app does not apply", yaml: peerAuthnYAML("default", "ns", "", "DISABLE", "") +
			peerAuthnYAML("default", "r", "reviews", "STRICT", ""), want: model.MTLSDisable},
		{name: "other namespace does not apply", yaml: peerAuthnYAML("foo", "ns", "", "STRICT", ""), want: model.MTLSPermissive},
		{name: "root-namespace selector policy is not a workload policy", yaml: peerAuthnYAML("istio-system", "pp", "productpage", "STRICT", ""),
			want: model.MTLSPermissive},
		{name: "workload without mtls inherits; port UNSET inherits the workload's", yaml: peerAuthnYAML("default", "ns", "", "STRICT", "") +
			peerAuthnYAML("default", "pp", "productpage", "", "{9080: {mode: DISABLE}, 9081: {mode: UNSET}}"),
			want: model.MTLSStrict, wantPorts: map[uint32]model.MTLSMode{9080: model.MTLSDisable, 9081: model.MTLSStrict}},
		{name: "first workload policy by name wins", yaml: peerAuthnYAML("default", "b", "productpage", "DISABLE", "") +
			peerAuthnYAML("default", "a", "productpage", "STRICT", ""), want: model.MTLSStrict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mtlsPushContext(t, tc.yaml).MutualTLSFor("default", pp)
			if got.Mode != tc.want {
				t.Errorf("mode %v, want %v", got.Mode, tc.want)
			}
			for port, m := range tc.wantPorts {
				if got.ForPort(port) != m {
					t.Errorf("port %d: %v, want %v", port, got.ForPort(port), m)
				}
			}
			if len(got.Ports) != len(tc.wantPorts) {
				t.Errorf("ports %v, want %v", got.Ports, tc.wantPorts)
			}
		})
	}
}

func findListener(r *Resources, name string) *listenerv3.Listener {
	for _, l := range r.Listeners {
		if l.GetName() == name {
			return l
		}
	}
	return nil
}

func findCluster(r *Resources, name string) *clusterv3.Cluster {
	for _, c := range r.Clusters {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

func chainNames(l *listenerv3.Listener) []string {
	var out []string
	for _, fc := range l.GetFilterChains() {
		s := fc.GetName() + "/" + fc.GetFilterChainMatch().GetTransportProtocol()
		if fc.GetTransportSocket() != nil {
			s += "+tls"
		}
		out = append(out, s)
	}
	return out
}

// TestExplicitInboundPeerAuthentication: the explicit-mode virtualInbound
// per mode: STRICT takes only mTLS, PERMISSIVE both, DISABLE only
// plaintext; mixed port modes filter each chain's routes; the inbound HCM
// forwards the client certificate's URI in XFCC.
func TestExplicitInboundPeerAuthentication(t *testing.T) {
	for _, tc := range []struct {
		name, yaml    string
		want          []string
		wantInspector bool
	}{
		{name: "default PERMISSIVE", want: []string{"virtualInbound-mtls/tls+tls", "virtualInbound-plaintext/raw_buffer"}, wantInspector: true},
		{name: "STRICT", yaml: peerAuthnYAML("default", "default", "", "STRICT", ""), want: []string{"virtualInbound-mtls/tls+tls"}, wantInspector: true},
		{name: "DISABLE", yaml: peerAuthnYAML("istio-system", "default", "", "DISABLE", ""), want: []string{"/"}},
		{name: "port-level STRICT under DISABLE", yaml: peerAuthnYAML("default", "pp", "productpage", "DISABLE", "{9080: {mode: STRICT}}"),
			want: []string{"virtualInbound-mtls/tls+tls"}, wantInspector: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Generate(mtlsPushContext(t, tc.yaml), productpageSidecar())
			if err != nil {
				t.Fatal(err)
			}
			l := findListener(r, "virtualInbound")
			if got := chainNames(l); !slices.Equal(got, tc.want) {
				t.Errorf("chains %v, want %v", got, tc.want)
			}
			if got := len(l.GetListenerFilters()) == 1 && l.GetListenerFilters()[0].GetName() == tlsInspectorListenerFilter; got != tc.wantInspector {
				t.Errorf("tls_inspector %v, want %v", got, tc.wantInspector)
			}
			for _, fc := range l.GetFilterChains() {
				var h hcmv3.HttpConnectionManager
				if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
					t.Fatal(err)
				}
				if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_APPEND_FORWARD || !h.GetSetCurrentClientCertDetails().GetUri() {
					t.Errorf("chain %q: XFCC %v %v, want APPEND_FORWARD with uri", fc.GetName(), h.GetForwardClientCertDetails(), h.GetSetCurrentClientCertDetails())
				}
				if ts := fc.GetTransportSocket(); ts != nil {
					var dt tlsv3.DownstreamTlsContext
					if err := ts.GetTypedConfig().UnmarshalTo(&dt); err != nil {
						t.Fatal(err)
					}
					if !dt.GetRequireClientCertificate().GetValue() || dt.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != "ROOTCA" ||
						dt.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName() != "default" {
						t.Errorf("chain %q: downstream TLS %v", fc.GetName(), &dt)
					}
				}
			}
		})
	}
}

// TestExplicitInboundMixedPortModes: with one port STRICT and another
// PERMISSIVE, the plaintext chain's routes leave out the STRICT port.
func TestExplicitInboundMixedPortModes(t *testing.T) {
	extra := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage-admin, namespace: default}
spec:
  hosts: [productpage-admin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9443, name: http-admin, protocol: HTTP, targetPort: 9443}]
  workloadSelector: {labels: {app: productpage}}
---
` + peerAuthnYAML("default", "pp", "productpage", "PERMISSIVE", "{9443: {mode: STRICT}}")
	r, err := Generate(mtlsPushContext(t, extra), productpageSidecar())
	if err != nil {
		t.Fatal(err)
	}
	l := findListener(r, "virtualInbound")
	if got, want := chainNames(l), []string{"virtualInbound-mtls/tls+tls", "virtualInbound-plaintext/raw_buffer"}; !slices.Equal(got, want) {
		t.Fatalf("chains %v, want %v", got, want)
	}
	domains := func(fc *listenerv3.FilterChain) string {
		var h hcmv3.HttpConnectionManager
		if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		var ds []string
		for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
			ds = append(ds, vh.GetDomains()...)
		}
		return strings.Join(ds, " ")
	}
	if d := domains(l.GetFilterChains()[0]); !strings.Contains(d, "productpage-admin") || !strings.Contains(d, "productpage.default") {
		t.Errorf("mTLS chain serves %q, want both services", d)
	}
	if d := domains(l.GetFilterChains()[1]); strings.Contains(d, "productpage-admin") || !strings.Contains(d, "productpage.default") {
		t.Errorf("plaintext chain serves %q, want productpage only", d)
	}
}

// TestRedirectInboundPeerAuthentication: virtualInbound's chains for a
// port follow Istio's FilterChainMatchOptions per mode.
func TestRedirectInboundPeerAuthentication(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{name: "PERMISSIVE HTTP", want: []string{"0.0.0.0_9080/tls+tls", "0.0.0.0_9080/raw_buffer"}},
		{name: "STRICT HTTP", yaml: peerAuthnYAML("default", "default", "", "STRICT", ""), want: []string{"0.0.0.0_9080/tls+tls"}},
		{name: "DISABLE HTTP", yaml: peerAuthnYAML("default", "default", "", "DISABLE", ""), want: []string{"0.0.0.0_9080/raw_buffer"}},
		{name: "port STRICT", yaml: peerAuthnYAML("default", "pp", "productpage", "DISABLE", "{9080: {mode: STRICT}}"), want: []string{"0.0.0.0_9080/tls+tls"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Generate(mtlsPushContext(t, tc.yaml), redirectSidecar(productpageSidecar()))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range chainNames(findListener(r, "virtualInbound")) {
				if strings.HasPrefix(s, "0.0.0.0_9080/") {
					got = append(got, s)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("9080 chains %v, want %v", got, tc.want)
			}
		})
	}
	// STRICT passthrough: only TLS chains for ports that are not services'.
	r, err := Generate(mtlsPushContext(t, peerAuthnYAML("default", "default", "", "STRICT", "")), redirectSidecar(productpageSidecar()))
	if err != nil {
		t.Fatal(err)
	}
	for _, fc := range findListener(r, "virtualInbound").GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort() == nil && fc.GetTransportSocket() == nil {
			t.Errorf("STRICT: passthrough chain %q takes plaintext", fc.GetName())
		}
	}
}

func upstreamTLS(t *testing.T, c *clusterv3.Cluster) *tlsv3.UpstreamTlsContext {
	t.Helper()
	ts := c.GetTransportSocket()
	if ms := c.GetTransportSocketMatches(); len(ms) > 0 {
		ts = ms[0].GetTransportSocket()
	}
	if ts == nil {
		return nil
	}
	var u tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&u); err != nil {
		t.Fatal(err)
	}
	return &u
}

// TestAutoMTLSClusters: clusters to sidecars originate ISTIO_MUTUAL by
// endpoint metadata, verifying the service's SPIFFE IDs; a DestinationRule
// tls replaces it; a DISABLE namespace, enableAutoMtls false and no CA
// turn it off.
func TestAutoMTLSClusters(t *testing.T) {
	const details = "outbound|9080||details.default.svc.cluster.local"
	t.Run("auto", func(t *testing.T) {
		r, err := Generate(mtlsPushContext(t, ""), productpageSidecar())
		if err != nil {
			t.Fatal(err)
		}
		c := findCluster(r, details)
		ms := c.GetTransportSocketMatches()
		if len(ms) != 2 || ms[0].GetName() != "tlsMode-istio" || ms[0].GetMatch().GetFields()["tlsMode"].GetStringValue() != "istio" ||
			ms[1].GetName() != "tlsMode-disabled" || len(ms[1].GetMatch().GetFields()) != 0 {
			t.Fatalf("transport_socket_matches %v", ms)
		}
		if got := alpnOverrideMetadata(c); got != "" {
			t.Errorf("ISTIO_MUTUAL cluster: metadata istio.alpn_override %q, want none", got)
		}
		u := upstreamTLS(t, c)
		// Istio's istioMtlsSni, the name AUTO_PASSTHROUGH gateways route by.
		if u.GetSni() != "outbound_.9080_._.details.default.svc.cluster.local" || !slices.Equal(u.GetCommonTlsContext().GetAlpnProtocols(), []string{"istio-peer-exchange", "istio"}) {
			t.Errorf("sni %q alpn %v", u.GetSni(), u.GetCommonTlsContext().GetAlpnProtocols())
		}
		sans := u.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchSubjectAltNames()
		if len(sans) != 1 || sans[0].GetExact() != "spiffe://cluster.local/ns/default/sa/bookinfo-details" {
			t.Errorf("SANs %v", sans)
		}
		for _, cla := range r.Endpoints {
			if cla.GetClusterName() != details {
				continue
			}
			ep := cla.GetEndpoints()[0].GetLbEndpoints()[0]
			if ep.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue() != "istio" {
				t.Errorf("endpoint metadata %v", ep.GetMetadata())
			}
		}
	})
	for _, tc := range []struct {
		name, yaml string
		mesh       *meshv1alpha1.MeshConfig
		o          Options
		wantNone   bool
		wantSNI    string
		wantSANs   []string
	}{
		{name: "no CA", o: Options{WithoutCA: true}, wantNone: true},
		{name: "enableAutoMtls false", o: Options{Mesh: &meshv1alpha1.MeshConfig{EnableAutoMtls: wrapperspbBool(false)}}, wantNone: true},
		{name: "namespace DISABLE", yaml: peerAuthnYAML("default", "default", "", "DISABLE", ""), wantNone: true},
		{name: "ORIGINAL_DST (loadBalancer PASSTHROUGH)", yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: default}\nspec:\n  host: details\n  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n", wantNone: true},
		{name: "DR DISABLE", yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: default}\nspec:\n  host: details\n  trafficPolicy: {tls: {mode: DISABLE}}\n", wantNone: true},
		{name: "DR ISTIO_MUTUAL with sni and SANs", yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: default}\nspec:\n  host: details\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: details.example, subjectAltNames: [spiffe://x/y]}}\n",
			wantSNI: "details.example", wantSANs: []string{"spiffe://x/y"}},
		{name: "DR ISTIO_MUTUAL without sni", yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: default}\nspec:\n  host: details\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
			wantSNI: "outbound_.9080_._.details.default.svc.cluster.local", wantSANs: []string{"spiffe://cluster.local/ns/default/sa/bookinfo-details"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			r, err := GenerateWith(mtlsPushContext(t, tc.yaml), productpageSidecar(), o)
			if err != nil {
				t.Fatal(err)
			}
			c := findCluster(r, details)
			u := upstreamTLS(t, c)
			if tc.wantNone {
				if u != nil {
					t.Errorf("cluster originates TLS: %v", c)
				}
				return
			}
			if len(c.GetTransportSocketMatches()) != 0 || u == nil {
				t.Fatalf("want a cluster transport_socket, got %v", c)
			}
			var sans []string
			for _, m := range u.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchSubjectAltNames() {
				sans = append(sans, m.GetExact())
			}
			if u.GetSni() != tc.wantSNI || !slices.Equal(sans, tc.wantSANs) {
				t.Errorf("sni %q SANs %v", u.GetSni(), sans)
			}
		})
	}
}

// TestDestinationRuleFileTLS: SIMPLE and MUTUAL read their credentials
// from file secrets; without sni and subjectAltNames the SNI and the DNS
// SAN are the host; without caCertificates the system bundle verifies;
// insecureSkipVerify verifies nothing; portLevelSettings replace the
// top-level tls.
func TestDestinationRuleFileTLS(t *testing.T) {
	const dr = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: default}
spec:
  host: details
  trafficPolicy:
    tls: {mode: SIMPLE}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, sni: d.example, subjectAltNames: [d.example]}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      portLevelSettings: [{port: {number: 9080}, tls: {mode: SIMPLE, insecureSkipVerify: true}}]
`
	r, err := Generate(mtlsPushContext(t, dr), productpageSidecar())
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		sni, cert, root, dnsSAN string
		sans                    []string
	}
	see := func(name string) view {
		u := upstreamTLS(t, findCluster(r, name))
		if u == nil {
			t.Fatalf("%s: no TLS", name)
		}
		var v view
		v.sni = u.GetSni()
		if cs := u.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs(); len(cs) > 0 {
			v.cert = cs[0].GetName()
		}
		cvc := u.GetCommonTlsContext().GetCombinedValidationContext()
		v.root = cvc.GetValidationContextSdsSecretConfig().GetName()
		for _, m := range cvc.GetDefaultValidationContext().GetMatchSubjectAltNames() {
			v.sans = append(v.sans, m.GetExact())
		}
		for _, m := range cvc.GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
			v.dnsSAN = m.GetMatcher().GetExact()
		}
		return v
	}
	for name, want := range map[string]view{
		"outbound|9080||details.default.svc.cluster.local":   {sni: "details.default.svc.cluster.local", root: "file-root:system", dnsSAN: "details.default.svc.cluster.local"},
		"outbound|9080|v1|details.default.svc.cluster.local": {sni: "d.example", cert: "file-cert:/c.pem~/k.pem", root: "file-root:/ca.pem", sans: []string{"d.example"}},
		"outbound|9080|v2|details.default.svc.cluster.local": {sni: "details.default.svc.cluster.local"},
	} {
		if got := see(name); !slices.Equal(got.sans, want.sans) || got.sni != want.sni || got.cert != want.cert || got.root != want.root || got.dnsSAN != want.dnsSAN {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
		// Istio's AddALPNOverrideToMetadata: the istio.alpn filter keeps
		// off the ALPN of TLS the user configured.
		if got := alpnOverrideMetadata(findCluster(r, name)); got != "false" {
			t.Errorf("%s: metadata istio.alpn_override %q, want \"false\"", name, got)
		}
	}
}

func alpnOverrideMetadata(c *clusterv3.Cluster) string {
	return c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["alpn_override"].GetStringValue()
}

// TestDestinationRuleCredentialName: a DestinationRule's credentialName
// names the Secret of the proxy's namespace as Istio's SDS names
// ("kubernetes://NAME" for MUTUAL's client certificate,
// "kubernetes://NAME-cacert" for the trust bundle), and loomd serves
// those secrets to that sidecar with the cluster that uses them.
func TestDestinationRuleCredentialName(t *testing.T) {
	ca := testutil.NewCA(t, "upstream CA")
	leaf := ca.Issue(t, testutil.LeafOptions{DNS: []string{"client.example"}})
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	extra := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: client-cred, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s, ca.crt: %s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: default}
spec:
  host: details
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client-cred, sni: d.example}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: SIMPLE, credentialName: client-cred}
`, b64(leaf.CertPEM), b64(leaf.KeyPEM), b64(ca.PEM))
	r, err := Generate(mtlsPushContext(t, extra), productpageSidecar())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][2]string{
		"outbound|9080||details.default.svc.cluster.local":   {"kubernetes://client-cred", "kubernetes://client-cred-cacert"},
		"outbound|9080|v1|details.default.svc.cluster.local": {"", "kubernetes://client-cred-cacert"},
	} {
		u := upstreamTLS(t, findCluster(r, name))
		var cert string
		if cs := u.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs(); len(cs) > 0 {
			cert = cs[0].GetName()
			if cs[0].GetSdsConfig().GetAds() == nil {
				t.Errorf("%s: the certificate does not come over ADS", name)
			}
		}
		root := u.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName()
		if cert != want[0] || root != want[1] {
			t.Errorf("%s: certificate %q, trust bundle %q; want %q, %q", name, cert, root, want[0], want[1])
		}
	}
	served := map[string]bool{}
	for _, s := range r.Secrets {
		served[s.GetName()] = true
	}
	if !served["kubernetes://client-cred"] || !served["kubernetes://client-cred-cacert"] {
		t.Errorf("secrets served to the sidecar: %v, want the Secret's certificate and trust bundle", served)
	}
}

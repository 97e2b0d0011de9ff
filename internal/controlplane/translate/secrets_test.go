package translate

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
	"github.com/loom-mesh/loom/internal/testutil"
)

// yamlBlock prefixes every line of b for a YAML block scalar.
func yamlBlock(b []byte, pad string) string {
	return pad + strings.ReplaceAll(strings.TrimSuffix(string(b), "\n"), "\n", "\n"+pad)
}

// TestCredentialSecrets checks which Secrets a gateway gets over ADS for
// its credentialName servers: the certificate of a kubernetes.io/tls
// Secret (base64 data), the trust bundle of a MUTUAL server from the same
// Secret's ca.crt, or from the NAME-cacert Secret (generic form,
// stringData); only Secrets of the proxy's own namespace; none for a name
// with no Secret.
func TestCredentialSecrets(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	leaf := ca.Issue(t, testutil.LeafOptions{DNS: []string{"a.example.com"}})
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	doc := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: tls-cred, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: %[1]s, tls.key: %[2]s, ca.crt: %[3]s}
---
apiVersion: v1
kind: Secret
metadata: {name: generic, namespace: istio-system}
stringData:
  cert: |
%[4]s
  key: |
%[5]s
---
apiVersion: v1
kind: Secret
metadata: {name: generic-cacert, namespace: istio-system}
stringData:
  cacert: |
%[6]s
---
apiVersion: v1
kind: Secret
metadata: {name: elsewhere, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %[1]s, tls.key: %[2]s}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, credentialName: tls-cred}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: MUTUAL, credentialName: generic}
  - port: {number: 443, name: https-c, protocol: HTTPS}
    hosts: [c.example.com]
    tls: {mode: SIMPLE, credentialName: elsewhere}
  - port: {number: 443, name: https-d, protocol: HTTPS}
    hosts: [d.example.com]
    tls: {mode: SIMPLE, credentialName: missing}
`, b64(leaf.CertPEM), b64(leaf.KeyPEM), b64(ca.PEM), yamlBlock(leaf.CertPEM, "    "), yamlBlock(leaf.KeyPEM, "    "), yamlBlock(ca.PEM, "    "))
	rs, errs := config.Decode("in.yaml", []byte(doc))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	if err := validation.ValidateAll(rs).Err(); err != nil {
		t.Fatal(err)
	}
	r := mustGenerate(t, model.NewPushContext(config.NewSnapshot(1, rs)), ingressRouter())
	got := map[string]string{}
	for _, s := range r.Secrets {
		switch tt := s.GetType().(type) {
		case *tlsv3.Secret_TlsCertificate:
			if string(tt.TlsCertificate.GetPrivateKey().GetInlineBytes()) != string(leaf.KeyPEM) ||
				string(tt.TlsCertificate.GetCertificateChain().GetInlineBytes()) != string(leaf.CertPEM) {
				t.Errorf("%s: not the Secret's certificate and key", s.GetName())
			}
			got[s.GetName()] = "certificate"
		case *tlsv3.Secret_ValidationContext:
			if string(tt.ValidationContext.GetTrustedCa().GetInlineBytes()) != string(ca.PEM) {
				t.Errorf("%s: not the Secret's trust bundle", s.GetName())
			}
			got[s.GetName()] = "bundle"
		}
	}
	want := map[string]string{
		"kubernetes://tls-cred": "certificate", "kubernetes://tls-cred-cacert": "bundle",
		"kubernetes://generic": "certificate", "kubernetes://generic-cacert": "bundle",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("secrets (-want +got):\n%s", diff)
	}
	// A sidecar names no credential: it gets none.
	if r := mustGenerate(t, model.NewPushContext(config.NewSnapshot(1, rs)), productpageSidecar()); len(r.Secrets) != 0 {
		t.Errorf("the sidecar got %d secrets", len(r.Secrets))
	}
}

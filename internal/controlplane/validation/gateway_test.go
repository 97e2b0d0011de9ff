package validation

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/testutil"
)

// TestGatewayTLS checks the tls settings of Gateway servers, as Istio's
// validateServerTLS, and what Loom refuses.
func TestGatewayTLS(t *testing.T) {
	head := "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: ns}\nspec:\n  servers:\n"
	tests := []struct {
		name   string
		server string
		want   []string
	}{
		{"simple with files", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}\n", nil},
		{"simple with credential", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, credentialName: a-cred}\n", nil},
		{"mutual needs a CA", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}\n",
			[]string{"spec.servers[0].tls.caCertificates: Required value: MUTUAL mode requires caCertificates or credentialName"}},
		{"simple without certificate", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE}\n",
			[]string{"spec.servers[0].tls.serverCertificate: Required value: SIMPLE mode requires a server certificate or credentialName",
				"spec.servers[0].tls.privateKey: Required value: SIMPLE mode requires a private key or credentialName"}},
		{"credential and files", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, credentialName: c, serverCertificate: /c, privateKey: /k}\n",
			[]string{`spec.servers[0].tls.credentialName: Invalid value: "c": credentialName and serverCertificate, privateKey or caCertificates are mutually exclusive`}},
		{"credential in another namespace", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, credentialName: other/c}\n",
			[]string{`spec.servers[0].tls.credentialName: Invalid value: "other/c": a credential in another namespace is ` + Unsupported + ` (the Secret must be in the Gateway's namespace)`}},
		{"passthrough with certificate", "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: PASSTHROUGH, credentialName: c}\n",
			[]string{"spec.servers[0].tls.mode: Invalid value: PASSTHROUGH: a server that does not terminate TLS takes no certificates"}},
		{"auto passthrough on HTTPS", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: AUTO_PASSTHROUGH}\n",
			[]string{"spec.servers[0].tls.mode: Invalid value: AUTO_PASSTHROUGH: requires protocol TLS"}},
		{"tls on TCP", "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, credentialName: c}\n",
			[]string{"spec.servers[0].tls: Invalid value: TLS settings on a TCP server: only HTTPS and TLS servers terminate or pass TLS (httpsRedirect aside)"}},
		{"https redirect on HTTP", "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.com]\n    tls: {httpsRedirect: true}\n", nil},
		{"bad cipher and curve", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, credentialName: c, cipherSuites: [\"[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-ECDSA-AES128-GCM-SHA256]\", DES-CBC3-SHA], ecdhCurves: [P-224]}\n",
			[]string{`spec.servers[0].tls.cipherSuites[1]: Unsupported value: "DES-CBC3-SHA": supported cipher suites are those of Envoy that Go's crypto/tls has (` + cipherSuiteList + `)`,
				`spec.servers[0].tls.ecdhCurves[0]: Unsupported value: "P-224": supported values: "X25519", "P-256", "P-384", "P-521", "X25519MLKEM768"`}},
		{"versions reversed", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}\n",
			[]string{"spec.servers[0].tls.maxProtocolVersion: Invalid value: TLSV1_2: below minProtocolVersion TLSV1_3"}},
		{"several certificates", "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, credentialNames: [a, b]}\n",
			[]string{"spec.servers[0].tls.credentialNames: " + Unsupported + " (use credentialName)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, errs := config.Decode("gw.yaml", []byte(head+tt.server))
			if err := errs.Err(); err != nil {
				t.Fatalf("decode: %v", err)
			}
			var got []string
			for _, e := range ValidateAll(rs) {
				got = append(got, e.Field+": "+e.Msg)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCredentialSecretErrors checks that an invalid credential Secret is
// refused with its file, resource and key, and that no error holds any of
// its material.
func TestCredentialSecretErrors(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	a := ca.Issue(t, testutil.LeafOptions{DNS: []string{"a.example.com"}})
	b := ca.Issue(t, testutil.LeafOptions{DNS: []string{"b.example.com"}})
	b64 := func(p []byte) string { return base64.StdEncoding.EncodeToString(p) }
	head := "apiVersion: v1\nkind: Secret\nmetadata: {name: cred, namespace: istio-system}\n"
	tests := []struct {
		name, body string
		want       []string
	}{
		{"valid tls", "type: kubernetes.io/tls\ndata: {tls.crt: " + b64(a.CertPEM) + ", tls.key: " + b64(a.KeyPEM) + "}\n", nil},
		{"key of another certificate", "type: kubernetes.io/tls\ndata: {tls.crt: " + b64(a.CertPEM) + ", tls.key: " + b64(b.KeyPEM) + "}\n",
			[]string{"sec.yaml:1: Secret istio-system/cred: data[tls.key]: Invalid value (not shown): tls: private key does not match public key"}},
		{"tls without key", "type: kubernetes.io/tls\ndata: {tls.crt: " + b64(a.CertPEM) + "}\n",
			[]string{"sec.yaml:1: Secret istio-system/cred: data[tls.key]: Required value: a kubernetes.io/tls Secret needs tls.crt and tls.key"}},
		{"generic key without cert", "data: {key: " + b64(a.KeyPEM) + "}\n",
			[]string{"sec.yaml:1: Secret istio-system/cred: data[cert]: Required value: the certificate of data[key]"}},
		{"key where the certificate goes", "data: {cert: " + b64(a.KeyPEM) + ", key: " + b64(a.KeyPEM) + "}\n",
			[]string{`sec.yaml:1: Secret istio-system/cred: data[cert]: Invalid value (not shown): a PEM block of type "PRIVATE KEY" where certificates were expected`}},
		{"cacert only", "data: {cacert: " + b64(ca.PEM) + "}\n", nil},
		{"garbage bundle", "data: {ca.crt: " + b64([]byte("not a certificate")) + "}\n",
			[]string{"sec.yaml:1: Secret istio-system/cred: data[ca.crt]: Invalid value (not shown): no PEM certificate"}},
		{"not a credential", "type: Opaque\ndata: {password: " + b64([]byte("hunter2")) + "}\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, errs := config.Decode("sec.yaml", []byte(head+tt.body))
			if err := errs.Err(); err != nil {
				t.Fatalf("decode: %v", err)
			}
			var got []string
			for _, e := range ValidateAll(rs) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			for _, e := range got {
				for _, secret := range []string{"PRIVATE KEY-----", b64(a.KeyPEM)[:40], "BEGIN CERTIFICATE"} {
					if strings.Contains(e, secret) {
						t.Errorf("error %q holds Secret material", e)
					}
				}
			}
		})
	}
	// A value that is not base64 is refused by the decoder, naming the
	// key and not the value.
	_, errs := config.Decode("sec.yaml", []byte(head+"data: {tls.key: \"-----BEGIN PRIVATE KEY----- abc\"}\n"))
	if len(errs) != 1 || errs[0].Error() != "sec.yaml:1: Secret istio-system/cred: data[tls.key]: invalid base64 (value not shown); put PEM text under stringData instead" {
		t.Errorf("decode errors: %v", errs)
	}
}

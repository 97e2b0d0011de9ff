package translate

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// TestJWTGolden translates RequestAuthentications and compares, per
// listener, the jwt_authn filter (which must come first in its chain)
// with testdata/jwt/<case>.json. Only the inbound listener of a sidecar
// and the gateway listeners get one.
func TestJWTGolden(t *testing.T) {
	e2eJWKS, err := os.ReadFile(filepath.Join(sharedSamples, "jwt/e2e/jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	fetched := model.NewJwksSet(map[model.JwksKey]string{
		{Issuer: "test-issuer-2@istio.io", URI: "https://jwt-server.istio-system:8443/jwks"}: string(e2eJWKS),
		{Issuer: "test-issuer-1@istio.io", URI: "https://jwt-server.istio-system:8443/jwks"}: string(e2eJWKS),
	})
	tests := []struct {
		name  string
		proxy *model.Proxy
	}{
		{"task", productpageSidecar()},
		{"multi", productpageSidecar()},
		{"required", productpageSidecar()},
		{"gateway", ingressRouter()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := loadPushContext(t, meshFile, filepath.Join("testdata", "jwt", tt.name+".yaml"))
			r, err := GenerateWith(pc, tt.proxy, Options{Jwks: fetched})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]json.RawMessage{}
			for _, l := range r.Listeners {
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						var hcm hcmv3.HttpConnectionManager
						if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
							continue
						}
						for i, hf := range hcm.GetHttpFilters() {
							if hf.GetName() != jwtAuthnFilter {
								continue
							}
							if i != 0 {
								t.Errorf("listener %s: jwt_authn is filter %d, want 0", l.GetName(), i)
							}
							var cfg jwtv3.JwtAuthentication
							if err := hf.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
								t.Fatal(err)
							}
							b, err := protojson.Marshal(&cfg)
							if err != nil {
								t.Fatal(err)
							}
							got[l.GetName()] = b
						}
					}
				}
			}
			b, _ := json.Marshal(got)
			var out bytes.Buffer
			if err := json.Indent(&out, b, "", "  "); err != nil {
				t.Fatal(err)
			}
			out.WriteByte('\n')
			wantFile := filepath.Join("testdata", "jwt", tt.name+".json")
			if *update {
				if err := os.WriteFile(wantFile, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantFile)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), out.String()); diff != "" {
				t.Errorf("%s mismatch (-want +got; run with -update if intended):\n%s", wantFile, diff)
			}
		})
	}
}

// TestJWTNoPolicy: without a RequestAuthentication no listener gets the
// filter, and a fetched JWKS alone changes nothing.
func TestJWTNoPolicy(t *testing.T) {
	pc := loadPushContext(t, meshFile)
	r, err := GenerateWith(pc, productpageSidecar(), Options{Jwks: model.NewJwksSet(map[model.JwksKey]string{{URI: "x"}: "{}"})})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range r.Listeners {
		if b, _ := protojson.Marshal(l); strings.Contains(string(b), jwtAuthnFilter) {
			t.Fatalf("listener %s has jwt_authn without a RequestAuthentication", l.GetName())
		}
	}
}

// TestPublicJWKS: a private key pasted into a jwks reaches the proxy only
// as its public half; a public set is passed as written.
func TestPublicJWKS(t *testing.T) {
	pemData, err := os.ReadFile(filepath.Join(sharedSamples, "jwt/e2e/key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemData)
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		k8, err8 := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err8 != nil {
			t.Fatal(err, err8)
		}
		key = k8.(*rsa.PrivateKey)
	}
	priv, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: "k"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(priv), `"d":`) {
		t.Fatal("test key set has no private part")
	}
	got := publicJWKS(string(priv))
	if strings.Contains(got, `"d":`) || strings.Contains(got, `"p":`) || !strings.Contains(got, `"kid":"k"`) {
		t.Fatalf("publicJWKS kept private parts or lost the key: %s", got)
	}
	pub, _ := os.ReadFile(filepath.Join(sharedSamples, "jwt/e2e/jwks.json"))
	if got := publicJWKS(string(pub)); got != string(pub) {
		t.Fatalf("a public set was rewritten: %s", got)
	}
}

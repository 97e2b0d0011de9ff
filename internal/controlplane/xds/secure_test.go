package xds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/loom-mesh/loom/internal/controlplane/ca"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// TestSecurePortChecksClientIdentity serves ADS on a TLS port with loomd's
// CA: a client without a certificate is served, one whose SPIFFE ID
// matches its node's namespace and service account too, and one whose
// certificate names another service account is refused with
// PermissionDenied.
func TestSecurePortChecksClientIdentity(t *testing.T) {
	authority, err := ca.New(ca.Options{DataDir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerOpts(t, Options{Addr: "127.0.0.1:0", Config: &fakeConfig{}, Generate: fakeGenerate,
		Secure: &SecureOptions{Addr: "127.0.0.1:0", TLS: authority.ServerTLS([]string{ca.ServingDNSName}, nil),
			Authorize: ca.CheckNodeIdentity}})
	if s.SecureAddr() == "" || s.SecureAddr() == s.Addr() {
		t.Fatalf("secure address %q", s.SecureAddr())
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(authority.RootsPEM())
	creds := func(sa string) credentials.TransportCredentials {
		cfg := &tls.Config{RootCAs: roots, ServerName: ca.ServingDNSName}
		if sa != "" {
			cfg.Certificates = []tls.Certificate{clientCert(t, authority, "default", sa)}
		}
		return credentials.NewTLS(cfg)
	}
	node := testNode() // default/bookinfo-reviews

	for _, tc := range []struct {
		name   string
		certSA string
		want   codes.Code
	}{
		{"no client certificate", "", codes.OK},
		{"certificate of the node's service account", "bookinfo-reviews", codes.OK},
		{"certificate of another service account", "bookinfo-ratings", codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialWith(t, s.SecureAddr(), node, creds(tc.certSA))
			c.subscribe(xdsapi.ClusterType)
			select {
			case r := <-c.resps:
				if tc.want != codes.OK {
					t.Fatalf("got a %s response, want %v", xdsapi.ShortType(r.GetTypeUrl()), tc.want)
				}
			case err := <-c.errc:
				if status.Code(err) != tc.want {
					t.Fatalf("stream ended with %v, want %v", err, tc.want)
				}
			case <-time.After(waitFor):
				t.Fatal("no response and no error")
			}
		})
	}
}

// clientCert is a workload certificate of ns/sa issued by c, with its key.
func clientCert(t *testing.T, c *ca.CA, ns, sa string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	id, err := ca.WorkloadID(c.TrustDomain(), ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Sign(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: got.Leaf}
	for _, p := range got.Chain[:len(got.Chain)-1] { // without the root
		b, _ := pem.Decode([]byte(p))
		tc.Certificate = append(tc.Certificate, b.Bytes)
	}
	return tc
}

func TestSecurePortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = New(Options{Addr: "127.0.0.1:0", Config: &fakeConfig{}, Secure: &SecureOptions{Addr: ln.Addr().String(), TLS: &tls.Config{}}})
	if err == nil {
		t.Fatal("New on a secure port in use succeeded")
	}
}

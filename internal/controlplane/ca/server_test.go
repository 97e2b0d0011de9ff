package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
	"github.com/loom-mesh/loom/internal/testutil"
)

// caServer is a CA serving CreateCertificate over TLS on a loopback port,
// as loomd's 15012.
type caServer struct {
	ca     *CA
	addr   string
	tokens string // registry directory
	logs   *testutil.SyncBuffer
}

func startCAServer(t *testing.T, opts Options) *caServer {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	opts.Logger = slogTo(logs)
	c := newTestCA(t, opts)
	auth, err := NewTokenAuthenticator(c.TokenDir(), opts.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(c.ServerTLS([]string{ServingDNSName}, []net.IP{net.IPv4(127, 0, 0, 1)}))))
	NewServer(c, auth, opts.Logger).Register(gs)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return &caServer{ca: c, addr: ln.Addr().String(), tokens: c.TokenDir(), logs: logs}
}

// mint registers a token for ns/sa and returns it.
func (s *caServer) mint(t *testing.T, ns, sa, workload string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), workload+".token")
	if err := bootstraptoken.Mint(s.tokens, file, bootstraptoken.Binding{Namespace: ns, ServiceAccount: sa, Workload: workload}); err != nil {
		t.Fatal(err)
	}
	tok, err := bootstraptoken.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client dials the server trusting only the CA's roots and checking
// loomd's DNS name.
func (s *caServer) client(t *testing.T) pb.IstioCertificateServiceClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.ca.RootsPEM())
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: ServingDNSName})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

func withToken(tok string) context.Context {
	ctx := context.Background()
	if tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	return ctx
}

func TestCreateCertificateOverTLS(t *testing.T) {
	s := startCAServer(t, Options{})
	tokA := s.mint(t, "default", "sa-a", "a-v1")
	s.mint(t, "default", "sa-b", "b-v1")
	idA := "spiffe://cluster.local/ns/default/sa/sa-a"
	idB := "spiffe://cluster.local/ns/default/sa/sa-b"
	c := s.client(t)

	tests := []struct {
		name     string
		token    string
		csr      []byte
		validity int64
		want     codes.Code
		wantSAN  string
		wantTTL  time.Duration
	}{
		{name: "good token, CSR with the caller's ID", token: tokA, csr: csrPEM(t, ecKey(t), idA), want: codes.OK, wantSAN: idA, wantTTL: DefaultWorkloadCertTTL},
		{name: "good token, CSR without a SAN: the caller's ID", token: tokA, csr: csrPEM(t, ecKey(t)), want: codes.OK, wantSAN: idA, wantTTL: DefaultWorkloadCertTTL},
		{name: "requested validity", token: tokA, csr: csrPEM(t, ecKey(t), idA), validity: 3600, want: codes.OK, wantSAN: idA, wantTTL: time.Hour},
		{name: "no token", csr: csrPEM(t, ecKey(t), idA), want: codes.Unauthenticated},
		{name: "unknown token", token: bootstraptoken.Generate(), csr: csrPEM(t, ecKey(t), idA), want: codes.Unauthenticated},
		{name: "token of sa-a asks for sa-b", token: tokA, csr: csrPEM(t, ecKey(t), idB), want: codes.PermissionDenied},
		{name: "token of sa-a asks for sa-a and sa-b", token: tokA, csr: csrPEM(t, ecKey(t), idA, idB), want: codes.PermissionDenied},
		{name: "malformed CSR", token: tokA, csr: []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), want: codes.InvalidArgument},
		{name: "not PEM", token: tokA, csr: []byte("hello"), want: codes.InvalidArgument},
		{name: "validity above the max", token: tokA, csr: csrPEM(t, ecKey(t), idA), validity: 365 * 24 * 3600, want: codes.InvalidArgument},
		{name: "absurd validity", token: tokA, csr: csrPEM(t, ecKey(t), idA), validity: 1 << 62, want: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(withToken(tt.token), 10*time.Second)
			defer cancel()
			resp, err := c.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(tt.csr), ValidityDuration: tt.validity})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if tt.want != codes.OK {
				return
			}
			certs := parseChain(t, resp.GetCertChain())
			roots := parseChain(t, splitPEM(s.ca.RootsPEM()))
			if san := verifySVID(t, certs, roots); san != tt.wantSAN {
				t.Errorf("SAN %q, want %q", san, tt.wantSAN)
			}
			if d := certs[0].NotAfter.Sub(certs[0].NotBefore); d < tt.wantTTL-time.Second || d > tt.wantTTL+time.Second {
				t.Errorf("lifetime %v, want %v", d, tt.wantTTL)
			}
		})
	}
	st := s.ca.Stats()
	if st.CSRs != uint64(len(tests)) || st.Issued != 3 || st.AuthnFailures != 2 {
		t.Errorf("stats %+v: want %d CSRs, 3 issued, 2 authentication failures", st, len(tests))
	}
	if logs := s.logs.String(); strings.Contains(logs, tokA) || strings.Contains(logs, "PRIVATE KEY") {
		t.Errorf("a token or a key reached the logs:\n%s", logs)
	}
}

func TestTokenRevocationAndNewTokens(t *testing.T) {
	s := startCAServer(t, Options{})
	c := s.client(t)
	call := func(tok string) codes.Code {
		ctx, cancel := context.WithTimeout(withToken(tok), 10*time.Second)
		defer cancel()
		_, err := c.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csrPEM(t, ecKey(t)))})
		return status.Code(err)
	}
	// A token minted after the server read the registry is honoured.
	tok := s.mint(t, "default", "sa-a", "a-v1")
	if got := call(tok); got != codes.OK {
		t.Fatalf("new token: %v", got)
	}
	// Minting again for the workload replaces (revokes) the old token.
	tok2 := s.mint(t, "default", "sa-a", "a-v1")
	deadline := time.Now().Add(tokenMaxAge + 5*time.Second)
	for call(tok) != codes.Unauthenticated {
		if time.Now().After(deadline) {
			t.Fatal("a replaced token is still honoured")
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	if got := call(tok2); got != codes.OK {
		t.Fatalf("replacement token: %v", got)
	}
	// Removing the entry revokes it.
	if err := os.Remove(filepath.Join(s.tokens, "default.a-v1.json")); err != nil {
		t.Fatal(err)
	}
	for call(tok2) != codes.Unauthenticated {
		if time.Now().After(deadline.Add(tokenMaxAge)) {
			t.Fatal("a removed token is still honoured")
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

func TestServingCertificate(t *testing.T) {
	s := startCAServer(t, Options{WorkloadCertTTL: 2 * time.Second})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.ca.RootsPEM())
	handshake := func(name string) (*x509.Certificate, error) {
		conn, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: pool, ServerName: name, NextProtos: []string{"h2"}})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	first, err := handshake(ServingDNSName)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.IPAddresses) != 1 || !first.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("serving IPs %v", first.IPAddresses)
	}
	if _, err := handshake("127.0.0.1"); err != nil {
		t.Errorf("the bind IP is not a name of the serving certificate: %v", err)
	}
	if _, err := handshake("istiod.other.svc"); err == nil {
		t.Error("another name verified")
	}
	// Renewed at half its life: a later handshake sees a new serial.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := handshake(ServingDNSName)
		if err != nil {
			t.Fatalf("handshake during renewal: %v", err)
		}
		if c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			if c.NotAfter.Before(first.NotAfter) {
				t.Error("renewed certificate expires before the first")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serving certificate not renewed")
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

func TestServingRequiresValidClientCertIfGiven(t *testing.T) {
	s := startCAServer(t, Options{})
	other := newTestCA(t, Options{}) // another mesh's CA
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.ca.RootsPEM())
	clientCert := func(c *CA) tls.Certificate {
		key := ecKey(t)
		csr, _ := ParseCSR(csrPEM(t, key))
		got, err := c.Sign(csr, spiffeIDFor(t, "default", "x"), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Certificate{PrivateKey: key}
		for _, p := range got.Chain[:len(got.Chain)-1] {
			b, _ := pem.Decode([]byte(p))
			tc.Certificate = append(tc.Certificate, b.Bytes)
		}
		return tc
	}
	dial := func(cert *tls.Certificate) error {
		cfg := &tls.Config{RootCAs: pool, ServerName: ServingDNSName, NextProtos: []string{"h2"}}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		conn, err := tls.Dial("tcp", s.addr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3: the server's verdict on the client certificate arrives
		// with the first read.
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err = conn.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil
		}
		return err
	}
	if err := dial(nil); err != nil {
		t.Errorf("no client certificate: %v", err)
	}
	good := clientCert(s.ca)
	if err := dial(&good); err != nil {
		t.Errorf("client certificate of the mesh: %v", err)
	}
	bad := clientCert(other)
	if err := dial(&bad); err == nil {
		t.Error("a client certificate of another CA was accepted")
	}
}

func spiffeIDFor(t *testing.T, ns, sa string) spiffeID {
	id, err := WorkloadID(spiffeTD, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

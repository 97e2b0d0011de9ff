package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
	"github.com/loom-mesh/loom/internal/controlplane/ca"
	"github.com/loom-mesh/loom/internal/dataplane/agent"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startCA serves loomd's CA (CreateCertificate over TLS) on a loopback
// port until the test ends.
func startCA(t *testing.T, opts ca.Options) (*ca.CA, string) {
	t.Helper()
	c, err := ca.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := ca.NewTokenAuthenticator(c.TokenDir(), opts.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(c.ServerTLS([]string{ca.ServingDNSName}, nil))))
	ca.NewServer(c, auth, opts.Logger).Register(gs)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return c, ln.Addr().String()
}

// startAgent mints a token for default/sa and runs an agent for it until
// the test ends.
func startAgent(t *testing.T, c *ca.CA, addr, sa string, logs io.Writer) (*agent.Agent, *secret.Store) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), sa+".token")
	if err := bootstraptoken.Mint(c.TokenDir(), tokenFile, bootstraptoken.Binding{Namespace: "default", ServiceAccount: sa, Workload: sa + "-v1"}); err != nil {
		t.Fatal(err)
	}
	store := secret.NewStore()
	a, err := agent.New(agent.Options{CAAddr: addr, TokenFile: tokenFile, RootCertFile: c.RootCertFile(),
		Namespace: "default", ServiceAccount: sa, Store: store, Logger: logTo(logs),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
	return a, store
}

// verifyPeer checks a peer's chain against the ROOTCA of store and that its
// SPIFFE ID is want, at each handshake (so a new bundle applies at once).
func verifyPeer(store *secret.Store, want string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		roots := store.Get(secret.RootCA)
		if roots == nil {
			return errors.New("no ROOTCA")
		}
		var certs []*x509.Certificate
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs = append(certs, c)
		}
		b, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString("cluster.local"), roots.RootsPEM)
		if err != nil {
			return err
		}
		id, _, err := x509svid.Verify(certs, b)
		if err != nil {
			return err
		}
		if id.String() != want {
			return fmt.Errorf("peer is %s, want %s", id, want)
		}
		return nil
	}
}

// TestAgentRotatesWithoutFailedRequests runs loomd's CA with 2 s
// certificates and two agents, a server workload and a client workload.
// The server's tls.Server and the client both take their certificate and
// trust bundle from their Store at each handshake, with mTLS and SPIFFE ID
// checks both ways. A bounded loop of requests, each on a new connection,
// runs while each agent rotates at least three times: no request may fail,
// and the client must have seen the server's certificates change.
func TestAgentRotatesWithoutFailedRequests(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	c, addr := startCA(t, ca.Options{DataDir: filepath.Join(t.TempDir(), "data"), WorkloadCertTTL: 2 * time.Second, Logger: logTo(logs)})
	srvAgent, srvStore := startAgent(t, c, addr, "httpbin", logs)
	cliAgent, cliStore := startAgent(t, c, addr, "sleep", logs)
	for _, a := range []*agent.Agent{srvAgent, cliAgent} {
		select {
		case <-a.Ready():
		case <-time.After(10 * time.Second):
			t.Fatalf("no first certificate\n%s", logs)
		}
	}

	srvCfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return srvStore.Get(secret.WorkloadCertificate).Certificate, nil
		},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: verifyPeer(srvStore, "spiffe://cluster.local/ns/default/sa/sleep"),
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second}
	srvDone := make(chan struct{})
	go func() { defer close(srvDone); _ = srv.Serve(ln) }()
	defer func() { srv.Close(); <-srvDone }()

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true, // a handshake per request
		TLSClientConfig: &tls.Config{
			MinVersion:         tls.VersionTLS13,
			InsecureSkipVerify: true, // verified by VerifyPeerCertificate against ROOTCA
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return cliStore.Get(secret.WorkloadCertificate).Certificate, nil
			},
			VerifyPeerCertificate: verifyPeer(cliStore, "spiffe://cluster.local/ns/default/sa/httpbin"),
		},
	}}
	defer client.CloseIdleConnections()
	url := "https://" + ln.Addr().String() + "/"

	var (
		mu           sync.Mutex
		ok, failed   int
		firstErr     error
		serverSerial = map[string]bool{}
	)
	stop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for i := 0; i < 100000; i++ { // bounded; stop ends it first
			select {
			case <-stop:
				return
			default:
			}
			resp, err := client.Get(url)
			mu.Lock()
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
			} else {
				ok++
				serverSerial[resp.TLS.PeerCertificates[0].SerialNumber.String()] = true
			}
			mu.Unlock()
		}
	}()

	// Each agent rotates at least three times, and the Store holds each
	// new certificate.
	deadline := time.Now().Add(30 * time.Second)
	for srvAgent.Status().Rotations < 4 || cliAgent.Status().Rotations < 4 {
		if time.Now().After(deadline) {
			close(stop)
			<-loopDone
			t.Fatalf("rotations after 30 s: server %d, client %d; want 4 each\n%s",
				srvAgent.Status().Rotations, cliAgent.Status().Rotations, logs)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	// Certificates keep rotating (TTL 2 s): on a loaded machine the
	// request loop may have stalled through some, so let it go on until
	// it has seen three of the server's, for at most 10 s more. Without
	// rotation on new handshakes it never sees a second one.
	seen := func() int { mu.Lock(); defer mu.Unlock(); return len(serverSerial) }
	for more := time.Now().Add(10 * time.Second); seen() < 3 && time.Now().Before(more); {
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	close(stop)
	<-loopDone

	for _, s := range []struct {
		a     *agent.Agent
		store *secret.Store
	}{{srvAgent, srvStore}, {cliAgent, cliStore}} {
		st := s.a.Status()
		if got := s.store.Get(secret.WorkloadCertificate).Certificate.Leaf.SerialNumber.Text(16); got != st.Serial {
			t.Errorf("Store holds serial %s, agent status says %s", got, st.Serial)
		}
		if st.LastError != "" {
			t.Errorf("agent error: %s", st.LastError)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests, %d failed, %d server certificates seen; CA issued %d", ok+failed, failed, len(serverSerial), c.Stats().Issued)
	if failed != 0 {
		t.Errorf("%d of %d requests failed across rotations; first: %v", failed, ok+failed, firstErr)
	}
	if len(serverSerial) < 3 {
		t.Errorf("the client saw %d server certificates, want 3 or more (rotation not applied to new handshakes)", len(serverSerial))
	}
}

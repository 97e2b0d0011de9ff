package jwks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/loom-mesh/loom/internal/testutil"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const samples = "../../../../shared/istio-samples"

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samples, name))
	if err != nil {
		t.Fatalf("Istio's samples are missing (%v): shared/istio-samples must be beside the module", err)
	}
	return string(b)
}

// jwksServer is an HTTPS JWKS server with Istio's jwt-server test
// certificate (SANs localhost, jwt-server...), serving body at /jwks and
// a discovery document at /.well-known/openid-configuration. Its answers
// can be changed while it runs.
type jwksServer struct {
	srv   *httptest.Server
	url   string // https://localhost:PORT
	mu    sync.Mutex
	body  string
	code  int
	hits  atomic.Int64
	roots *x509.CertPool
}

func startJWKSServer(t *testing.T, body string) *jwksServer {
	t.Helper()
	s := &jwksServer{body: body, code: 200}
	cert, err := tls.X509KeyPair([]byte(read(t, "jwt-server/testdata/server.crt")), []byte(read(t, "jwt-server/testdata/server.key")))
	if err != nil {
		t.Fatal(err)
	}
	s.roots = x509.NewCertPool()
	if !s.roots.AppendCertsFromPEM([]byte(read(t, "jwt-server/testdata/ca.crt"))) {
		t.Fatal("no CA in ca.crt")
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, code := s.body, s.code
		s.mu.Unlock()
		if r.URL.Path == "/.well-known/openid-configuration" {
			w.Write([]byte(`{"issuer":"` + s.url + `","jwks_uri":"` + s.url + `/jwks"}`))
			return
		}
		w.WriteHeader(code)
		w.Write([]byte(body))
	}))
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	_, port, _ := net.SplitHostPort(s.srv.Listener.Addr().String())
	s.url = "https://localhost:" + port
	return s
}

func (s *jwksServer) set(code int, body string) {
	s.mu.Lock()
	s.code, s.body = code, body
	s.mu.Unlock()
}

func snapshot(t *testing.T, yaml string) *config.Snapshot {
	t.Helper()
	rs, errs := config.Decode("ra.yaml", []byte(yaml))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	return config.NewSnapshot(1, rs)
}

func raYAML(issuer, uri string) string {
	return "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra}\nspec:\n  jwtRules:\n  - issuer: " + issuer + "\n    jwksUri: " + uri + "\n"
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond)
	}
}

func start(t *testing.T, r *Resolver) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestFetchRefreshKeep: a jwksUri on an HTTPS server is fetched (the
// server's CA given as root), published and announced; a changed key set
// is picked up on the refresh interval; a failing server leaves the last
// good set serving; a rule no policy names any more is dropped.
func TestFetchRefreshKeep(t *testing.T) {
	task, e2e := read(t, "jwt/jwks.json"), read(t, "jwt/e2e/jwks.json")
	s := startJWKSServer(t, task)
	var changes atomic.Int64
	r := New(Options{RootCAs: s.roots, RefreshInterval: 100 * time.Millisecond, RetryInterval: 20 * time.Millisecond,
		OnChange: func() { changes.Add(1) }})
	start(t, r)
	key := model.JwksKey{Issuer: "testing@secure.istio.io", URI: s.url + "/jwks"}
	r.Update(snapshot(t, raYAML(key.Issuer, key.URI)))
	get := func() string { v, _ := r.Current().Get(key); return v }
	waitFor(t, "the first fetch", func() bool { return get() == task })
	if changes.Load() != 1 {
		t.Fatalf("%d change notifications, want 1", changes.Load())
	}

	s.set(200, e2e)
	waitFor(t, "the refreshed key set", func() bool { return get() == e2e })

	s.set(503, "down")
	before := s.hits.Load()
	waitFor(t, "failed refreshes", func() bool { return s.hits.Load() >= before+3 })
	if get() != e2e {
		t.Fatalf("after failed refreshes the set is %q, want the last good one", get())
	}
	s.set(200, "not a jwks")
	before = s.hits.Load()
	waitFor(t, "refreshes with a bad body", func() bool { return s.hits.Load() >= before+2 })
	if get() != e2e {
		t.Fatal("a body that is not a JWKS replaced the last good set")
	}

	r.Update(snapshot(t, ""))
	if r.Current().Len() != 0 {
		t.Fatalf("the set still has %d entries after the policy went", r.Current().Len())
	}
}

// TestUntrustedAndDiscovery: a server whose CA is not trusted is never
// used; without jwksUri the issuer's OpenID discovery document leads to
// the key set; a rule with inline jwks is not fetched.
func TestUntrustedAndDiscovery(t *testing.T) {
	task := read(t, "jwt/jwks.json")
	s := startJWKSServer(t, task)

	var logs testutil.SyncBuffer
	untrusted := New(Options{RetryInterval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	start(t, untrusted)
	untrusted.Update(snapshot(t, raYAML("i", "'"+s.url+"/jwks?access=s3cret'")))
	waitFor(t, "two refused fetches", func() bool { return strings.Count(logs.String(), "jwks fetch failed") >= 2 })
	if untrusted.Current().Len() != 0 || s.hits.Load() != 0 {
		t.Fatal("a key set from an untrusted server was used")
	}
	if strings.Contains(logs.String(), "s3cret") || !strings.Contains(logs.String(), "certificate") {
		t.Fatalf("the failure log leaks the URI's query or hides the cause:\n%s", logs.String())
	}

	r := New(Options{RootCAs: s.roots})
	start(t, r)
	r.Update(snapshot(t, "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra}\nspec:\n  jwtRules:\n  - issuer: "+s.url+
		"\n  - issuer: inline\n    jwks: '"+strings.TrimSpace(task)+"'\n"))
	waitFor(t, "the discovered key set", func() bool {
		v, ok := r.Current().Get(model.JwksKey{Issuer: s.url})
		return ok && v == task
	})
	if r.Current().Len() != 1 {
		t.Fatalf("%d key sets fetched, want 1 (inline jwks is not fetched)", r.Current().Len())
	}
}

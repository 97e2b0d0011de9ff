package admin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestAdmin(t *testing.T) {
	var gen atomic.Pointer[config.Generation]
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "loom_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	s, err := New(Options{Generation: &gen, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if code, _ := get(t, h, "/ready"); code != 503 {
		t.Errorf("/ready before a generation = %d, want 503", code)
	}
	g, err := config.Build(config.Resources{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Clusters["outbound|9080||reviews"] = &config.Cluster{Name: "outbound|9080||reviews", Endpoints: []config.Endpoint{
		{Address: "127.0.0.13:15006", Weight: 1}, {Address: "127.0.0.14:15006", Health: config.Unhealthy, Weight: 1}}}
	gen.Store(g)
	if code, body := get(t, h, "/ready"); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready = %d %q", code, body)
	}
	code, body := get(t, h, "/config_dump")
	if code != 200 || !json.Valid([]byte(body)) {
		t.Errorf("/config_dump = %d, valid JSON %v: %.200s", code, json.Valid([]byte(body)), body)
	}
	_, body = get(t, h, "/clusters")
	for _, want := range []string{
		"outbound|9080||reviews::127.0.0.13:15006::health_flags::healthy\n",
		"outbound|9080||reviews::127.0.0.14:15006::health_flags::/failed_eds_health\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/clusters lacks %q:\n%s", want, body)
		}
	}
	if _, body := get(t, h, "/stats/prometheus"); !strings.Contains(body, "loom_test_total 1") {
		t.Errorf("/stats/prometheus:\n%s", body)
	}
}

// TestPprof: the admin port serves Go's profiler, the counterpart of
// Envoy's /cpuprofiler and /heapprofiler.
func TestPprof(t *testing.T) {
	var gen atomic.Pointer[config.Generation]
	s, err := New(Options{Generation: &gen, Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if code, body := get(t, h, "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ = %d, %.80q; want 200 listing the profiles", code, body)
	}
	if code, body := get(t, h, "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("/debug/pprof/goroutine = %d, %.80q; want 200 with a goroutine profile", code, body)
	}
}

func TestCerts(t *testing.T) {
	var gen atomic.Pointer[config.Generation]
	store := secret.NewStore()
	status := map[string]string{"serial": "abc"}
	s, err := New(Options{Generation: &gen, Secrets: store, AgentStatus: func() any { return status }})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if code, body := get(t, h, "/certs"); code != 200 || strings.Join(strings.Fields(body), "") != `{"certificates":[]}` {
		t.Errorf("/certs with no secret = %d %q", code, body)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://cluster.local/ns/default/sa/reviews")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0xbeef), URIs: []*url.URL{u}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(49 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	store.Set(&secret.Secret{Name: secret.WorkloadCertificate, Certificate: &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}})
	store.Set(&secret.Secret{Name: secret.RootCA, RootsPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})})

	code, body := get(t, h, "/certs")
	var got adminv3.Certificates
	if err := protojson.Unmarshal([]byte(body), &got); code != 200 || err != nil {
		t.Fatalf("/certs = %d, %v: %s", code, err, body)
	}
	if len(got.Certificates) != 2 {
		t.Fatalf("/certs lists %d secrets, want 2: %s", len(got.Certificates), body)
	}
	// Name order: ROOTCA, then default.
	if ca := got.Certificates[0].GetCaCert(); len(ca) != 1 || ca[0].GetPath() != secret.RootCA {
		t.Errorf("ROOTCA entry %v", got.Certificates[0])
	}
	chain := got.Certificates[1].GetCertChain()
	if len(chain) != 1 || chain[0].GetPath() != secret.WorkloadCertificate || chain[0].GetSerialNumber() != "beef" ||
		chain[0].GetDaysUntilExpiration() != 2 || chain[0].GetSubjectAltNames()[0].GetUri() != u.String() ||
		!chain[0].GetExpirationTime().AsTime().Equal(leaf.NotAfter) {
		t.Errorf("default entry %v", chain)
	}
	if strings.Contains(body, "PRIVATE") {
		t.Error("/certs shows a key")
	}
	if code, body := get(t, h, "/agent"); code != 200 || !strings.Contains(body, `"serial": "abc"`) {
		t.Errorf("/agent = %d %q", code, body)
	}
}

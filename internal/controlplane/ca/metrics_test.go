package ca

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/loom-mesh/loom/internal/testutil/promtest"
)

// TestCollector: after one issuance and one refused TTL, the Citadel
// metrics scraped over HTTP carry the counts and the expiries.
func TestCollector(t *testing.T) {
	c := newTestCA(t, Options{PluginDir: samples})
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(c))
	hs := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer hs.Close()

	fams, err := promtest.Scrape(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fams.Value("loom_ca_last_issued_cert_expiry_timestamp", nil); ok {
		t.Error("loom_ca_last_issued_cert_expiry_timestamp exported before any issuance")
	}
	csr, _ := ParseCSR(csrPEM(t, ecKey(t)))
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b")
	got, err := c.Sign(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(csr, id, 1000*24*time.Hour); err == nil {
		t.Fatal("TTL above max accepted")
	}
	fams, err = promtest.Scrape(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	for name, want := range map[string]float64{
		"citadel_server_success_cert_issuance_count":  1,
		"citadel_server_csr_sign_err_count":           1,
		"citadel_server_csr_count":                    0, // Sign is not the CSR API
		"citadel_server_authentication_failure_count": 0,
		"citadel_server_csr_parsing_err_count":        0,
		"citadel_server_root_cert_expiry_timestamp":   float64(st.RootNotAfter.Unix()),
		"citadel_server_cert_chain_expiry_timestamp":  float64(st.SignerNotAfter.Unix()),
		"loom_ca_last_issued_cert_expiry_timestamp":   float64(got.Leaf.NotAfter.Unix()),
	} {
		if v, ok := fams.Value(name, nil); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if typ := fams["citadel_server_success_cert_issuance_count"].GetType().String(); typ != "COUNTER" {
		t.Errorf("citadel_server_success_cert_issuance_count is a %s, want a counter", typ)
	}
	// The sample root expires in 2117: about 90 years left.
	if v, _ := fams.Value("citadel_server_root_cert_expiry_seconds", nil); v < 80*365*24*3600 {
		t.Errorf("citadel_server_root_cert_expiry_seconds = %v, want the sample root's ~90 years", v)
	}
}

package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSidecarEgressScope: a Sidecar in namespace default importing only
// "./alpha.default.svc.cluster.local" gives the client's sidecar alpha's
// cluster and not beta's (its /config_dump on IP:15000 says so), and
// alpha answers 200 through it.
func TestSidecarEgressScope(t *testing.T) {
	alpha, beta := &nameApp{name: "alpha-v1"}, &nameApp{name: "beta-v1"}
	m := startAppMesh(t, "127.64.0", []appWorkload{
		{Name: "alpha-v1", App: "alpha", Version: "v1", Octet: 11, Handler: alpha},
		{Name: "beta-v1", App: "beta", Version: "v1", Octet: 12, Handler: beta},
	}, "")
	const alphaCluster, betaCluster = "outbound|9080||alpha.default.svc.cluster.local", "outbound|9080||beta.default.svc.cluster.local"
	dump := configDump(t, m.ip(clientOctet))
	if !strings.Contains(dump, alphaCluster) || !strings.Contains(dump, betaCluster) {
		t.Fatalf("before the Sidecar the client's config_dump lacks %q or %q", alphaCluster, betaCluster)
	}

	m.apply(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - hosts: ["./alpha.default.svc.cluster.local"]
`)
	dump = configDump(t, m.ip(clientOctet))
	if !strings.Contains(dump, alphaCluster) {
		t.Errorf("the client's config_dump lacks the imported %q", alphaCluster)
	}
	if strings.Contains(dump, betaCluster) {
		t.Errorf("the client's config_dump has %q, which the Sidecar does not import", betaCluster)
	}
	hc := m.client(5 * time.Second)
	if code, body, _ := getBody(t, hc, "http://alpha:9080/", nil); code != http.StatusOK || body != "alpha-v1" {
		t.Errorf("GET alpha through the scoped sidecar = %d %q, want 200 alpha-v1", code, body)
	}
}

// configDump returns the /config_dump of the proxy whose admin listens
// on ip:15000; a failure fails the test.
func configDump(t *testing.T, ip string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":15000/config_dump", nil)
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatalf("GET config_dump of %s: %v", ip, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET config_dump of %s: %d, %v", ip, resp.StatusCode, err)
	}
	return string(body)
}

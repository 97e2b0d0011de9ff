package translate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestGatewayTLSDigest translates testdata/gateway-tls for the ingress
// gateway and compares the readable digest (listeners, chains with their
// SNI and secrets, route tables) with testdata/gateway-tls/digest.txt:
//
//   - port 80 with httpsRedirect: require_tls ALL on its host;
//   - port 443: an HTTPS chain per server (credential over ADS; files over
//     sds-grpc with a required client certificate for MUTUAL), a duplicate
//     host dropped, and PASSTHROUGH chains by the tls routes' sniHosts
//     within the server's hosts (a weighted one; an SNI outside the
//     server's hosts and an SNI an earlier route took left out);
//   - a TCP server and a TLS-terminating server routed by tcp routes;
//   - tcp_proxy hash_policy source_ip (hash=1) wherever the first
//     destination is tls-a, whose DestinationRule sets useSourceIp.
func TestGatewayTLSDigest(t *testing.T) {
	dir := filepath.Join("testdata", "gateway-tls")
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "input.yaml"))
	var b strings.Builder
	digestResources(&b, mustGenerate(t, pc, ingressRouter()))
	// Only the gateway's own part: listeners and route tables.
	var lines []string
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if strings.HasPrefix(l, "cluster ") || strings.HasPrefix(l, "endpoints ") {
			continue
		}
		lines = append(lines, l)
	}
	got := strings.Join(lines, "")
	want := filepath.Join(dir, "digest.txt")
	if *update {
		if err := os.WriteFile(want, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	golden, err := os.ReadFile(want)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(golden), got); diff != "" {
		t.Errorf("%s mismatch (-want +got; run with -update if intended):\n%s", want, diff)
	}
}

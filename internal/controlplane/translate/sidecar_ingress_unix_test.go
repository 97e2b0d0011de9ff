package translate

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// pipeClusterSummary is "name TYPE pipe=PATH bind=ADDR" per inbound
// cluster of r with a pipe endpoint, in order.
func pipeClusterSummary(r *Resources) []string {
	var out []string
	for _, c := range r.Clusters {
		if !strings.HasPrefix(c.GetName(), "inbound|") {
			continue
		}
		s := c.GetName() + " " + c.GetType().String()
		for _, lle := range c.GetLoadAssignment().GetEndpoints() {
			for _, lb := range lle.GetLbEndpoints() {
				a := lb.GetEndpoint().GetAddress()
				if p := a.GetPipe(); p != nil {
					s += " pipe=" + p.GetPath()
				} else {
					s += " socket=" + a.GetSocketAddress().GetAddress()
				}
			}
		}
		if b := c.GetUpstreamBindConfig().GetSourceAddress().GetAddress(); b != "" {
			s += " bind=" + b
		}
		out = append(out, s)
	}
	return out
}

// TestSidecarIngressUnixDefaultEndpoint: a unix:// defaultEndpoint makes
// the port's inbound cluster STATIC to a pipe whose path is the socket's
// (scheme dropped, "@" kept for the abstract namespace), with no
// upstream_bind_config, as Istio's buildInboundClustersFromSidecar; under
// REDIRECT the NONE port gets its bound listener (the socket is never the
// port's) and the other port stays a virtualInbound chain; in explicit
// mode the same clusters.
func TestSidecarIngressUnixDefaultEndpoint(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "sidecar-ingress-unix", "input.yaml"))
	want := []string{
		"inbound|7070|| STATIC pipe=@pp-tcp",
		"inbound|9080|| STATIC pipe=/var/run/pp/http.sock",
	}
	for _, tt := range []struct {
		name     string
		redirect bool
		bound    string // the NONE port's listener (ingressBind's name)
	}{{"redirect", true, "0.0.0.0_9080"}, {"explicit", false, "127.0.0.11_9080"}} {
		t.Run(tt.name, func(t *testing.T) {
			p := productpageSidecar()
			if tt.redirect {
				p = redirectSidecar(p)
			}
			r := mustGenerate(t, pc, p)
			if diff := cmp.Diff(want, pipeClusterSummary(r)); diff != "" {
				t.Errorf("inbound clusters (-want +got):\n%s", diff)
			}
			if findListener(r, tt.bound) == nil {
				t.Fatalf("no bound listener %s for the captureMode NONE port", tt.bound)
			}
			if !tt.redirect {
				return
			}
			if got := simulateConn(t, r, xdsapi.VirtualInboundListener, conn{dst: "127.0.0.11:7070"}); got != "virtualInbound/0.0.0.0_7070 -> inbound|7070||" {
				t.Errorf("TCP 7070: got %s", got)
			}
		})
	}
}

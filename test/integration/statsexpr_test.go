package integration

import (
	"testing"

	"github.com/loom-mesh/loom/internal/controlplane/validation"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
)

// TestStatsExprAgrees keeps loomd's check of tag override values
// (validation.StatsExpr, which decides what translation sends) in step
// with what the proxy's stats filter parses: every shape loomd sends must
// parse in the proxy, and what loomd replaces by 'unknown' must be what
// the proxy would refuse.
func TestStatsExprAgrees(t *testing.T) {
	for _, e := range validation.StatsExprSamples() {
		if err := validation.StatsExpr(e); err != nil {
			t.Errorf("loomd refuses its own sample %q: %v", e, err)
		}
		if _, err := istiostats.ParseExpr(e); err != nil {
			t.Errorf("loomd sends %q, the proxy refuses it: %v", e, err)
		}
	}
	for _, e := range []string{"add", "request.host + 'x'", "has(request.host)", "upstream_peer.nope", "request.headers[x]", "request.time"} {
		_, perr := istiostats.ParseExpr(e)
		if (validation.StatsExpr(e) != nil) != (perr != nil) {
			t.Errorf("%q: loomd and the proxy disagree (proxy: %v)", e, perr)
		}
	}
}

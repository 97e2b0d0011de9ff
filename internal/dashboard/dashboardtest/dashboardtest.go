// Package dashboardtest reads the dashboard page's service graph in a
// chromedp-driven browser, for the dashboard's browser tests and the
// end-to-end suite's.
package dashboardtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Colors the page draws edges in (ui/src/graph.js GREEN and RED), as
// cytoscape reports them.
const (
	ColorOK    = "rgb(46,125,50)"
	ColorError = "rgb(211,47,47)"
)

// GraphState is what the page's window.loomGraph.state() reports: the
// workload and service nodes, and each edge with its rate, error share,
// state and drawn color.
type GraphState struct {
	Refreshes int      `json:"refreshes"`
	Nodes     []string `json:"nodes"`
	Edges     []struct {
		ID        string   `json:"id"`
		Source    string   `json:"source"`
		Target    string   `json:"target"`
		RPS       float64  `json:"rps"`
		ErrorRate float64  `json:"error_rate"`
		State     string   `json:"state"`
		MTLS      *float64 `json:"mtls"`
		Color     string   `json:"color"`
		Label     string   `json:"label"`
	} `json:"edges"`
}

// PollGraph waits up to timeout until the page's graph satisfies cond, a
// JavaScript expression over s (the graph's state), and returns the
// state; it fails the test with the last state otherwise.
func PollGraph(t testing.TB, ctx context.Context, what, cond string, timeout time.Duration) GraphState {
	t.Helper()
	expr := fmt.Sprintf(`(() => { const g = window.loomGraph; if (!g) return false; const s = g.state(); return (%s) ? s : false; })()`, cond)
	st, err := chromedp.Run(ctx, chromedp.Poll[GraphState](expr, chromedp.WithPollingTimeout(timeout),
		chromedp.WithPollingInterval(200*time.Millisecond)))
	if err != nil {
		last, _ := chromedp.Run(ctx, chromedp.Evaluate[any](`window.loomGraph ? window.loomGraph.state() : "no graph"`))
		t.Fatalf("the dashboard's graph never showed %s: %v\nlast state: %+v", what, err, last)
	}
	return st
}

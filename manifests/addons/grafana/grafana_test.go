package grafana

import (
	"encoding/json"
	"io/fs"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/loom-mesh/loom/internal/metricnames"
)

// dashboard is the part of Grafana's dashboard JSON model the test reads.
type dashboard struct {
	UID           string          `json:"uid"`
	Title         string          `json:"title"`
	SchemaVersion int             `json:"schemaVersion"`
	Time          *struct{}       `json:"time"`
	Panels        []panel         `json:"panels"`
	Templating    json.RawMessage `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct {
		H, W, X, Y *int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

type variable struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Query any    `json:"query"`
}

// grafanaVar matches Grafana's template variables: $name, ${name},
// [[name]].
var grafanaVar = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\[\[[A-Za-z_][A-Za-z0-9_]*\]\]`)

// substitute replaces Grafana's variables so that PromQL's parser reads
// the expression: interval variables by a duration, others by a label
// value.
func substitute(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		if strings.Contains(v, "interval") || strings.Contains(v, "range") {
			return "1m"
		}
		return "x"
	})
}

// metricsOf parses a PromQL expression and returns the metric names of
// its selectors.
func metricsOf(t *testing.T, where, expr string) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(substitute(expr))
	if err != nil {
		t.Errorf("%s: PromQL %q: %v", where, expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// labelValuesMetric reads the metric of a label_values(METRIC{...}, LABEL)
// variable query.
var labelValuesMetric = regexp.MustCompile(`^label_values\(\s*(.+),\s*[A-Za-z_]+\s*\)$`)

func TestDashboards(t *testing.T) {
	files, err := fs.Glob(Dashboards, "loom-*.json")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	want := []string{"loom-control-plane.json", "loom-mesh.json", "loom-service.json", "loom-workload.json"}
	if !slices.Equal(files, want) {
		t.Fatalf("dashboards %v, want %v", files, want)
	}
	used := map[string]bool{}
	uids := map[string]bool{}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			b, err := fs.ReadFile(Dashboards, f)
			if err != nil {
				t.Fatal(err)
			}
			var d dashboard
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if d.UID == "" || len(d.UID) > 40 || d.Title == "" || d.SchemaVersion < 30 || d.Time == nil || len(d.Panels) == 0 {
				t.Fatalf("uid %q (1-40 chars), title %q, schemaVersion %d (>= 30), time %v, %d panels: a Grafana dashboard has them all",
					d.UID, d.Title, d.SchemaVersion, d.Time != nil, len(d.Panels))
			}
			if uids[d.UID] {
				t.Errorf("uid %q used twice", d.UID)
			}
			uids[d.UID] = true
			var tmpl struct {
				List []variable `json:"list"`
			}
			if err := json.Unmarshal(d.Templating, &tmpl); err != nil {
				t.Fatalf("templating: %v", err)
			}
			vars := map[string]bool{}
			for _, v := range tmpl.List {
				if v.Name == "" || v.Type == "" {
					t.Errorf("template variable %+v lacks a name or type", v)
				}
				vars[v.Name] = true
				if v.Type != "query" {
					continue
				}
				q, _ := v.Query.(map[string]any)
				qs, _ := q["query"].(string)
				m := labelValuesMetric.FindStringSubmatch(qs)
				if m == nil {
					t.Errorf("variable %s: query %q is not label_values(METRIC, LABEL)", v.Name, qs)
					continue
				}
				for _, n := range metricsOf(t, "variable "+v.Name, m[1]) {
					used[n] = true
					if _, _, ok := metricnames.Lookup(n); !ok {
						t.Errorf("variable %s queries %s, which Loom does not emit", v.Name, n)
					}
				}
			}
			if !vars["datasource"] {
				t.Error("no datasource variable: the dashboard must not name one Prometheus")
			}
			ids := map[int]bool{}
			targets := 0
			for _, p := range d.Panels {
				where := d.UID + " panel " + p.Title
				if p.ID == 0 || ids[p.ID] || p.Type == "" || p.Title == "" || p.GridPos == nil ||
					p.GridPos.H == nil || p.GridPos.W == nil || p.GridPos.X == nil || p.GridPos.Y == nil {
					t.Errorf("%s: id %d (unique, non-zero), type %q, title and gridPos {h,w,x,y} are required", where, p.ID, p.Type)
				}
				ids[p.ID] = true
				if p.Type == "row" {
					continue
				}
				if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
					t.Errorf("%s: datasource %+v, want the ${datasource} variable", where, p.Datasource)
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: no queries", where)
				}
				for _, tg := range p.Targets {
					targets++
					if tg.RefID == "" || tg.Expr == "" {
						t.Errorf("%s: a target without refId or expr", where)
					}
					for _, n := range metricsOf(t, where, tg.Expr) {
						used[n] = true
						if _, _, ok := metricnames.Lookup(n); !ok {
							t.Errorf("%s queries %s, which Loom does not emit (internal/metricnames)", where, n)
						}
					}
				}
			}
			if targets == 0 {
				t.Error("no queries at all")
			}
		})
	}
	// Between them, the dashboards show every metric Loom emits.
	for _, m := range []map[string]metricnames.Type{metricnames.Proxy, metricnames.ControlPlane} {
		for name, typ := range m {
			series := name
			if typ == metricnames.Histogram {
				series += "_bucket"
			}
			if !used[series] && !used[name] {
				t.Errorf("no dashboard shows %s", name)
			}
		}
	}
}

// TestMetricsOf: the check finds the metrics of an expression, through
// functions, aggregations and Grafana's variables, and not label names.
func TestMetricsOf(t *testing.T) {
	got := metricsOf(t, "test", `histogram_quantile(0.95, sum(rate(istio_request_duration_milliseconds_bucket{destination_service="$service"}[$__rate_interval])) by (le)) / sum(up{job="${job}"})`)
	if !slices.Equal(got, []string{"istio_request_duration_milliseconds_bucket", "up"}) {
		t.Errorf("metricsOf = %v", got)
	}
	if _, _, ok := metricnames.Lookup("up"); ok {
		t.Error("Lookup knows up: the list must hold only Loom's metrics")
	}
}

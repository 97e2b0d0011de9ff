package validation

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// vsDoc is a VirtualService ns/name with spec body (indented two spaces).
func vsDoc(ns, name, body string) string {
	return fmt.Sprintf("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: %s, namespace: %s}\nspec:\n%s", name, ns, body)
}

const (
	delegateRoute = "  http:\n  - route: [{destination: {host: reviews}}]\n"
	rootToReviews = "  hosts: [bookinfo.example.com]\n  http:\n  - match: [{uri: {prefix: /reviews}}]\n    delegate: {name: reviews, namespace: team}\n"
)

// TestDelegates checks the delegate rules: each case's errors as
// "namespace/name field", each with a word of the message.
func TestDelegates(t *testing.T) {
	type fieldErr struct{ at, msg string }
	tests := []struct {
		name string
		docs string
		want []fieldErr
	}{
		{"root and delegate in another namespace",
			vsDoc("web", "root", rootToReviews) + vsDoc("team", "reviews", "  exportTo: [web]\n"+delegateRoute), nil},
		{"delegate in the root's namespace by default",
			vsDoc("web", "root", "  hosts: [a.example.com]\n  http:\n  - delegate: {name: d}\n") + vsDoc("web", "d", "  exportTo: [.]\n"+delegateRoute), nil},
		{"missing delegate",
			vsDoc("web", "root", rootToReviews),
			[]fieldErr{{"web/root spec.http[0].delegate.name", `"reviews": no VirtualService team/reviews`}}},
		{"delegate with hosts",
			vsDoc("web", "root", rootToReviews) + vsDoc("team", "reviews", "  hosts: [reviews]\n"+delegateRoute),
			[]fieldErr{{"web/root spec.http[0].delegate.name", "has hosts; a delegate must have none"}}},
		{"delegate not exported to the root",
			vsDoc("web", "root", rootToReviews) + vsDoc("team", "reviews", "  exportTo: [.]\n"+delegateRoute),
			[]fieldErr{{"web/root spec.http[0].delegate.namespace", `not exported to namespace "web"`}}},
		{"delegate delegating further",
			vsDoc("web", "root", rootToReviews) + vsDoc("team", "reviews", "  http:\n  - delegate: {name: deeper}\n") + vsDoc("team", "deeper", delegateRoute),
			[]fieldErr{{"team/reviews spec.http[0].delegate", "only one level"}}},
		{"chain that comes back",
			vsDoc("web", "root", "  hosts: [a.example.com]\n  http:\n  - delegate: {name: d}\n") +
				vsDoc("web", "d", "  http:\n  - delegate: {name: root}\n"),
			[]fieldErr{
				{"web/d spec.http[0].delegate", "only one level"},
				{"web/root spec.http[0].delegate", "delegate cycle: web/root -> web/d -> web/root: a chain"},
				{"web/d spec.http[0].delegate", "delegate cycle: web/d -> web/root -> web/d: a chain"},
			}},
		{"root delegating to itself",
			vsDoc("web", "root", "  hosts: [a.example.com]\n  http:\n  - delegate: {name: root}\n"),
			[]fieldErr{{"web/root spec.http[0].delegate", "delegate cycle: web/root -> web/root"}}},
		{"delegate with route",
			vsDoc("web", "root", rootToReviews+"    route: [{destination: {host: reviews}}]\n    redirect: {uri: /x}\n") + vsDoc("team", "reviews", delegateRoute),
			[]fieldErr{
				{"web/root spec.http[0].route", "with delegate must not set route"},
				{"web/root spec.http[0].redirect", "with delegate must not set redirect"},
			}},
		{"delegate with gateways and tcp",
			vsDoc("team", "reviews", "  gateways: [gw]\n  tcp: [{route: [{destination: {host: reviews}}]}]\n"),
			[]fieldErr{
				{"team/reviews spec.gateways", "must have no gateways"},
				{"team/reviews spec.tcp", "must have no tcp routes"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := keyedErrors(t, tt.docs)
			var gotAt, wantAt []string
			for _, g := range got {
				at, _, _ := strings.Cut(g, ": ")
				gotAt = append(gotAt, at)
			}
			for _, w := range tt.want {
				wantAt = append(wantAt, w.at)
			}
			if diff := cmp.Diff(wantAt, gotAt); diff != "" {
				t.Fatalf("errors (-want +got):\n%s\nerrors: %q", diff, got)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w.msg) {
					t.Errorf("error %q does not say %q", got[i], w.msg)
				}
			}
		})
	}
}

// drSelectorDoc is a DestinationRule in web with a workloadSelector and
// exportTo (a YAML flow sequence).
func drSelectorDoc(exportTo string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: web}\nspec:\n  host: reviews\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: " + exportTo + "\n"
}

func TestExportTo(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // "field: message" substrings, in order
	}{
		{"virtual service accepted", vsDoc("web", "r", "  hosts: [r]\n  exportTo: [., team]\n"+delegateRoute), nil},
		{"virtual service bad entries", vsDoc("web", "r", "  hosts: [r]\n  exportTo: [Team, ., web, \"~\"]\n"+delegateRoute), []string{
			`spec.exportTo[0]: Invalid value: "Team": must be ".", "*" or a namespace name`,
			`spec.exportTo[2]: Duplicate value: "web"`,
			`spec.exportTo[3]: Invalid value: "~": "~" (export to no namespace) is only allowed on a ServiceEntry`,
			`spec.exportTo: Invalid value: ["Team" "." "web" "~"]: cannot export to no namespace (~) and to some`,
		}},
		{"public and more", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: web}\nspec:\n  host: reviews\n  exportTo: [\"*\", team]\n", []string{
			`spec.exportTo: Invalid value: ["*" "team"]: cannot have both public (*) and non-public`,
		}},
		{"selector rule to its namespace", drSelectorDoc("[web]"), nil},
		{"selector rule to everyone", drSelectorDoc(`["*"]`), []string{
			`spec.exportTo: Invalid value: ["*"]: a DestinationRule with workloadSelector cannot be exported beyond its namespace`,
		}},
		{"selector rule to its namespace and more", drSelectorDoc("[., team]"), []string{
			`spec.exportTo: Invalid value: ["." "team"]: a DestinationRule with workloadSelector cannot have multiple entries in exportTo`,
		}},
		{"service entry to no one", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s, namespace: web}\nspec:\n  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n  exportTo: [\"~\"]\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, tt.doc)
			if len(got) != len(tt.want) {
				t.Fatalf("got errors %q, want %d: %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("error %d = %q, want it to start with %q", i, got[i], w)
				}
			}
		})
	}
}

// keyedErrors validates docs and returns each error as
// "namespace/name field: message".
func keyedErrors(t *testing.T, docs string) []string {
	t.Helper()
	rs, errs := config.Decode("in.yaml", []byte(docs))
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	var got []string
	for _, e := range ValidateAll(rs) {
		got = append(got, e.Key.Namespace+"/"+e.Key.Name+" "+e.Field+": "+e.Msg)
	}
	return got
}

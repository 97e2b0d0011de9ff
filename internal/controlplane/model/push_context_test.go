package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

const testConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.0.13, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: default}
spec: {host: "*.default.svc.cluster.local"}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wildcard, namespace: default}
spec:
  hosts: ["*.default.svc.cluster.local"]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: web}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway, istio-system/shared, mesh]
  http: [{route: [{destination: {host: productpage.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: web}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
`

func pushContext(t *testing.T) *PushContext {
	t.Helper()
	rs, errs := config.Decode("test.yaml", []byte(testConfig))
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return NewPushContext(config.NewSnapshot(1, rs))
}

func TestDestinationRule(t *testing.T) {
	pc := pushContext(t)
	tests := []struct{ host, want string }{
		{"reviews.default.svc.cluster.local", "default/reviews"}, // short name resolved, exact beats wildcard
		{"ratings.default.svc.cluster.local", "default/all"},
		{"ratings.other.svc.cluster.local", ""},
	}
	for _, tt := range tests {
		got := ""
		if dr := pc.DestinationRule(tt.host); dr != nil {
			got = dr.Namespace + "/" + dr.Name
		}
		if got != tt.want {
			t.Errorf("DestinationRule(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
	if pc.DestinationRule("reviews.default.svc.cluster.local").Subset("v1") == nil {
		t.Error("subset v1 of reviews not found")
	}
}

func TestVirtualServices(t *testing.T) {
	pc := pushContext(t)
	name := func(vs *VirtualService) string {
		if vs == nil {
			return ""
		}
		return vs.Namespace + "/" + vs.Name
	}
	tests := []struct{ gateway, host, want string }{
		{MeshGateway, "reviews.default.svc.cluster.local", "default/reviews"},
		{MeshGateway, "ratings.default.svc.cluster.local", "default/wildcard"},
		{MeshGateway, "example.com", "web/front"},
		{"web/bookinfo-gateway", "example.com", "web/front"},
		{"istio-system/shared", "anything", "web/front"},
		{"default/bookinfo-gateway", "example.com", ""},
	}
	for _, tt := range tests {
		if got := name(pc.VirtualServiceForHost(tt.gateway, tt.host)); got != tt.want {
			t.Errorf("VirtualServiceForHost(%q, %q) = %q, want %q", tt.gateway, tt.host, got, tt.want)
		}
	}
	var mesh []string
	for _, vs := range pc.VirtualServicesForGateway(MeshGateway) {
		mesh = append(mesh, name(vs))
	}
	if diff := cmp.Diff([]string{"default/reviews", "default/wildcard", "web/front"}, mesh); diff != "" {
		t.Errorf("mesh virtual services (-want +got):\n%s", diff)
	}
}

func TestProxyLookups(t *testing.T) {
	pc := pushContext(t)
	gw := &Proxy{Type: RouterProxy, IP: "127.0.0.10", Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway", "app": "x"}}
	var gws []string
	for _, g := range pc.GatewaysForProxy(gw) {
		gws = append(gws, g.Ref())
	}
	if diff := cmp.Diff([]string{"web/bookinfo-gateway"}, gws); diff != "" {
		t.Errorf("GatewaysForProxy (-want +got):\n%s", diff)
	}

	sc := &Proxy{Type: SidecarProxy, IP: "127.0.0.13", Name: "reviews-v1", Namespace: "default"}
	var hosts []string
	for _, s := range pc.ServicesForProxy(sc) {
		hosts = append(hosts, s.Hostname)
	}
	if diff := cmp.Diff([]string{"reviews.default.svc.cluster.local"}, hosts); diff != "" {
		t.Errorf("ServicesForProxy (-want +got):\n%s", diff)
	}
	if w := pc.WorkloadForProxy(sc); w == nil || w.Name != "reviews-v1" {
		t.Errorf("WorkloadForProxy = %+v, want reviews-v1", w)
	}
	if w := pc.WorkloadForProxy(gw); w != nil {
		t.Errorf("WorkloadForProxy(gateway) = %+v, want nil", w)
	}
	if got := len(pc.InstancesForProxy(sc)); got != 1 {
		t.Errorf("InstancesForProxy: %d instances, want 1", got)
	}
}

func TestNames(t *testing.T) {
	short := []struct{ in, ns, want string }{
		{"reviews", "default", "reviews.default.svc.cluster.local"},
		{"reviews.default", "x", "reviews.default"},
		{"*", "default", "*"},
		{"*.example.com", "default", "*.example.com"},
	}
	for _, tt := range short {
		if got := ResolveShortName(tt.in, tt.ns); got != tt.want {
			t.Errorf("ResolveShortName(%q, %q) = %q, want %q", tt.in, tt.ns, got, tt.want)
		}
	}
	gws := []struct{ in, ns, want string }{
		{"mesh", "default", "mesh"},
		{"bookinfo-gateway", "default", "default/bookinfo-gateway"},
		{"istio-system/gw", "default", "istio-system/gw"},
		{"gw.istio-system.svc.cluster.local", "default", "istio-system/gw"},
	}
	for _, tt := range gws {
		if got := ResolveGatewayName(tt.in, tt.ns); got != tt.want {
			t.Errorf("ResolveGatewayName(%q, %q) = %q, want %q", tt.in, tt.ns, got, tt.want)
		}
	}
	matches := []struct {
		pattern, host string
		want          bool
	}{
		{"*", "a.b", true},
		{"a.b", "a.b", true},
		{"*.b", "a.b", true},
		{"*.b", "b", false},
		{"*.b", "*.a.b", true},
		{"a.b", "*.b", false},
	}
	for _, tt := range matches {
		if got := HostMatches(tt.pattern, tt.host); got != tt.want {
			t.Errorf("HostMatches(%q, %q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
	}
}

// TestDestinationRuleWorkloadSelector: as Istio's
// SidecarScope.DestinationRule, a rule with a workloadSelector applies
// outbound to the proxies of its namespace it selects, before the
// namespace's rule without one; never to other proxies, never inbound.
func TestDestinationRuleWorkloadSelector(t *testing.T) {
	const drs = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-for-frontend, namespace: default}
spec:
  host: reviews
  workloadSelector: {matchLabels: {app: frontend}}
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-for-frontend, namespace: default}
spec:
  host: ratings
  workloadSelector: {matchLabels: {app: frontend}}
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details-for-frontend, namespace: default}
spec:
  host: details.default.svc.cluster.local
  workloadSelector: {matchLabels: {app: frontend}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: default}
spec:
  hosts: [details.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: details}}
`
	rs, errs := config.Decode("test.yaml", []byte(testConfig+"---\n"+drs))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	pc := NewPushContext(config.NewSnapshot(1, rs))
	frontend := &Proxy{Type: SidecarProxy, Namespace: "default", Labels: map[string]string{"app": "frontend", "version": "v2"}}
	other := &Proxy{Type: SidecarProxy, Namespace: "default", Labels: map[string]string{"app": "backend"}}
	elsewhere := &Proxy{Type: SidecarProxy, Namespace: "web", Labels: map[string]string{"app": "frontend"}}
	name := func(dr *DestinationRule) string {
		if dr == nil {
			return ""
		}
		return dr.Namespace + "/" + dr.Name
	}
	tests := []struct {
		name  string
		pc    *PushContext
		host  string
		want  string
		wantI string // InboundDestinationRule
	}{
		{"selected proxy takes the selector rule", pc.ForProxy(frontend), "reviews.default.svc.cluster.local", "default/a-for-frontend", "default/reviews"},
		{"unselected proxy takes the rule without selector", pc.ForProxy(other), "reviews.default.svc.cluster.local", "default/reviews", "default/reviews"},
		{"proxy of another namespace", pc.ForProxy(elsewhere), "reviews.default.svc.cluster.local", "default/reviews", "default/reviews"},
		{"mesh-wide context", pc, "reviews.default.svc.cluster.local", "default/reviews", "default/reviews"},
		// The exact host's rules shadow the wildcard rule, as Istio's
		// MostSpecificHostMatch: an unselected proxy gets none.
		{"selected proxy, selector rule only", pc.ForProxy(frontend), "ratings.default.svc.cluster.local", "default/ratings-for-frontend", ""},
		{"unselected proxy, selector rule only", pc.ForProxy(other), "ratings.default.svc.cluster.local", "", ""},
		// A rule with a workloadSelector is never exported, whatever its
		// exportTo: it does not hide the wildcard rule from another
		// namespace's proxy.
		{"selector rule not exported", pc.ForProxy(elsewhere), "details.default.svc.cluster.local", "default/all", "default/all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := name(tt.pc.DestinationRule(tt.host)); got != tt.want {
				t.Errorf("DestinationRule(%q) = %q, want %q", tt.host, got, tt.want)
			}
			if got := name(tt.pc.InboundDestinationRule(tt.host)); got != tt.wantI {
				t.Errorf("InboundDestinationRule(%q) = %q, want %q", tt.host, got, tt.wantI)
			}
		})
	}
	if pc.ForProxy(frontend) != pc.ForProxy(&Proxy{Type: SidecarProxy, Namespace: "default", Labels: map[string]string{"app": "frontend"}}) {
		t.Error("two proxies selected by the same rules get two views")
	}
}

// TestDestinationRuleMerge: rules of one namespace and host merge as
// Istio's mergeDestinationRule: subsets are appended unless their name is
// taken, the first rule's trafficPolicy stays unless it has none; rules
// whose exportTo differ (neither wider) or whose selectors differ stay
// apart, the last without selector applying.
func TestDestinationRuleMerge(t *testing.T) {
	dr := func(name, ns, body string) string {
		return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n" + body + "---\n"
	}
	docs := dr("a", "default", "  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}]\n") +
		dr("b", "default", "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n  subsets: [{name: v1, labels: {version: other}}, {name: v2, labels: {version: v2}}]\n") +
		dr("c", "default", "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n  subsets: [{name: v3, labels: {version: v3}}]\n") +
		// Private: not merged with the public ones; the last applies.
		dr("a", "web", "  host: ratings.default.svc.cluster.local\n  subsets: [{name: v1, labels: {version: v1}}]\n") +
		dr("b", "web", "  host: ratings.default.svc.cluster.local\n  exportTo: [.]\n  subsets: [{name: v2, labels: {version: v2}}]\n") +
		// Same selector: merged; another selector: apart.
		dr("s1", "web", "  host: details.default.svc.cluster.local\n  workloadSelector: {matchLabels: {app: x}}\n  exportTo: [.]\n  subsets: [{name: v1, labels: {version: v1}}]\n") +
		dr("s2", "web", "  host: details.default.svc.cluster.local\n  workloadSelector: {matchLabels: {app: x}}\n  exportTo: [.]\n  subsets: [{name: v2, labels: {version: v2}}]\n") +
		dr("s3", "web", "  host: details.default.svc.cluster.local\n  workloadSelector: {matchLabels: {app: y}}\n  exportTo: [.]\n  subsets: [{name: v3, labels: {version: v3}}]\n")
	rs, errs := config.Decode("test.yaml", []byte(testConfig+"---\n"+docs))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	pc := NewPushContext(config.NewSnapshot(1, rs))
	// Apart, so the counts below stay those of docs.
	more := dr("a", "sup", "  host: reviews.default.svc.cluster.local\n  exportTo: [.]\n  subsets: [{name: v1, labels: {version: v1}}]\n") +
		// exportTo a strict superset of a's: merged into a, and not kept
		// on its own (both without selector), as Istio's superset branch.
		dr("b", "sup", "  host: reviews.default.svc.cluster.local\n  exportTo: [., default]\n  subsets: [{name: v2, labels: {version: v2}}]\n") +
		// One without selector, one with, same exportTo: the second is
		// merged into the first and also kept for the proxies it selects.
		dr("m1", "web", "  host: details.web.svc.cluster.local\n  exportTo: [.]\n  subsets: [{name: v1, labels: {version: v1}}]\n") +
		dr("m2", "web", "  host: details.web.svc.cluster.local\n  workloadSelector: {matchLabels: {app: x}}\n  subsets: [{name: v2, labels: {version: v2}}]\n") +
		// Root namespace, public and private, not merged: another
		// namespace gets the public one though the private is later.
		dr("r1", "istio-system", "  host: mesh.example.com\n  subsets: [{name: v1, labels: {version: v1}}]\n") +
		dr("r2", "istio-system", "  host: mesh.example.com\n  exportTo: [.]\n  subsets: [{name: v2, labels: {version: v2}}]\n")
	rs2, errs := config.Decode("more.yaml", []byte(testConfig+"---\n"+more))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	pc2 := NewPushContext(config.NewSnapshot(1, rs2))
	summary := func(dr *DestinationRule) string {
		if dr == nil {
			return "none"
		}
		out := dr.Namespace + "/" + dr.Name + " lb=" + dr.Spec.GetTrafficPolicy().GetLoadBalancer().GetSimple().String()
		for _, s := range dr.Spec.GetSubsets() {
			out += " " + s.GetName() + "=" + s.GetLabels()["version"]
		}
		return out
	}
	x := &Proxy{Type: SidecarProxy, Namespace: "web", Labels: map[string]string{"app": "x"}}
	tests := []struct {
		name string
		pc   *PushContext
		host string
		want string
	}{
		{"merged", pc.ForNamespace("default"), "reviews.default.svc.cluster.local", "default/a lb=RANDOM v1=v1 v2=v2 v3=v3"},
		{"merged, mesh-wide", pc, "reviews.default.svc.cluster.local", "default/a lb=RANDOM v1=v1 v2=v2 v3=v3"},
		{"private and public apart, own namespace", pc.ForNamespace("web"), "ratings.default.svc.cluster.local", "web/b lb=UNSPECIFIED v2=v2"},
		{"same selector merged", pc.ForProxy(x), "details.default.svc.cluster.local", "web/s1 lb=UNSPECIFIED v1=v1 v2=v2"},
		{"exportTo superset merged", pc2.ForNamespace("sup"), "reviews.default.svc.cluster.local", "sup/a lb=UNSPECIFIED v1=v1 v2=v2"},
		{"selector merged into no selector", pc2.ForNamespace("web"), "details.web.svc.cluster.local", "web/m1 lb=UNSPECIFIED v1=v1 v2=v2"},
		{"selector kept apart for its proxy", pc2.ForProxy(x), "details.web.svc.cluster.local", "web/m2 lb=UNSPECIFIED v2=v2"},
		{"root namespace, exported only", pc2.ForNamespace("web"), "mesh.example.com", "istio-system/r1 lb=UNSPECIFIED v1=v1"},
		{"root namespace, own", pc2.ForNamespace("istio-system"), "mesh.example.com", "istio-system/r2 lb=UNSPECIFIED v2=v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summary(tt.pc.DestinationRule(tt.host)); got != tt.want {
				t.Errorf("DestinationRule(%q) = %q, want %q", tt.host, got, tt.want)
			}
		})
	}
	if got := len(pc.DestinationRules()); got != 10 {
		t.Errorf("DestinationRules() has %d rules, want the 10 as written", got)
	}
	if got := len(pc.DestinationRule("reviews.default.svc.cluster.local").Spec.GetSubsets()); got != 3 {
		t.Errorf("merged rule has %d subsets, want 3", got)
	}
	for _, d := range pc.DestinationRules() {
		if d.Namespace == "default" && d.Name == "a" && len(d.Spec.GetSubsets()) != 1 {
			t.Error("merging modified the rule as written")
		}
	}
}

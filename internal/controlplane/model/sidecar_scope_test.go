package model

import (
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// sidecarServices are five services: a, b and c in default, d in prod,
// e.example.com in prod, and a VirtualService for a that routes 10 % to c.
const sidecarServices = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: default}
spec: {hosts: [a.default.svc.cluster.local], ports: [{number: 80, name: http, protocol: HTTP}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: default}
spec: {hosts: [b.default.svc.cluster.local], ports: [{number: 80, name: http, protocol: HTTP}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: c, namespace: default}
spec: {hosts: [c.default.svc.cluster.local], ports: [{number: 80, name: http, protocol: HTTP}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: d, namespace: prod}
spec: {hosts: [d.prod.svc.cluster.local], ports: [{number: 80, name: http, protocol: HTTP}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: e, namespace: prod}
spec: {hosts: [e.example.com], ports: [{number: 80, name: http, protocol: HTTP}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: default}
spec:
  hosts: [a]
  http:
  - route:
    - {destination: {host: a}, weight: 90}
    - {destination: {host: c}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: default}
spec:
  hosts: [b]
  http: [{route: [{destination: {host: b}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec: {host: a, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: default}
spec: {host: b, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all-prod, namespace: prod}
spec: {host: "*.prod.svc.cluster.local"}
`

func sidecarPushContext(t *testing.T, sidecars string) *PushContext {
	t.Helper()
	rs, errs := config.Decode("sidecar.yaml", []byte(sidecarServices+"---\n"+sidecars))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	return NewPushContext(config.NewSnapshot(1, rs))
}

func sidecarProxy(ns string, labels map[string]string) *Proxy {
	return &Proxy{Type: SidecarProxy, ID: "sidecar~10.0.0.1~x." + ns + "~" + ns + ".svc.cluster.local", IP: "10.0.0.1", Namespace: ns, Labels: labels}
}

func sidecarYAML(name, ns, body string) string {
	return "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n" + body + "---\n"
}

// TestSidecarForProxy checks Istio's choice of Sidecar: a matching
// workloadSelector in the proxy's namespace, then the namespace's Sidecar
// without selector, then the root namespace's, else none.
func TestSidecarForProxy(t *testing.T) {
	const egress = "  egress: [{hosts: [\"./*\"]}]\n"
	all := sidecarYAML("ns-default", "default", egress) +
		sidecarYAML("ratings", "default", "  workloadSelector: {labels: {app: ratings}}\n"+egress) +
		sidecarYAML("reviews", "default", "  workloadSelector: {labels: {app: reviews, version: v2}}\n"+egress) +
		sidecarYAML("root", RootNamespace, egress) +
		sidecarYAML("root-selected", RootNamespace, "  workloadSelector: {labels: {app: ratings}}\n"+egress) +
		sidecarYAML("other", "other", "  workloadSelector: {labels: {app: ratings}}\n"+egress)
	tests := []struct {
		name     string
		sidecars string
		proxy    *Proxy
		want     string // "namespace/name", "" for none
	}{
		{"selector matches", all, sidecarProxy("default", map[string]string{"app": "ratings", "version": "v1"}), "default/ratings"},
		{"selector needs every label", all, sidecarProxy("default", map[string]string{"app": "reviews", "version": "v1"}), "default/ns-default"},
		{"namespace default", all, sidecarProxy("default", map[string]string{"app": "x"}), "default/ns-default"},
		{"root default, not root's selector nor another namespace's", all, sidecarProxy("other2", map[string]string{"app": "ratings"}), RootNamespace + "/root"},
		{"another namespace's selector applies there", all, sidecarProxy("other", map[string]string{"app": "ratings"}), "other/other"},
		{"none", sidecarYAML("ns-default", "default", egress), sidecarProxy("prod", nil), ""},
		{"not for routers", all, &Proxy{Type: RouterProxy, Namespace: "default", Labels: map[string]string{"app": "ratings"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := sidecarPushContext(t, tt.sidecars)
			got := ""
			if sc := pc.SidecarForProxy(tt.proxy); sc != nil {
				got = sc.Namespace + "/" + sc.Name
			}
			if got != tt.want {
				t.Errorf("SidecarForProxy = %q, want %q", got, tt.want)
			}
			v := pc.ForProxy(tt.proxy)
			gotView := ""
			if sc := v.Sidecar(); sc != nil {
				gotView = sc.Namespace + "/" + sc.Name
			}
			if gotView != tt.want {
				t.Errorf("ForProxy(...).Sidecar() = %q, want %q", gotView, tt.want)
			}
		})
	}
}

// TestForProxyScope checks what a Sidecar's view holds: services,
// VirtualServices and DestinationRules of the imported hosts only.
func TestForProxyScope(t *testing.T) {
	type view struct {
		Services, VirtualServices, DestinationRules []string
	}
	tests := []struct {
		name     string
		sidecars string
		ns       string
		want     view
	}{
		{"no sidecar: the namespace's view", "", "default", view{
			Services:         []string{"a.default.svc.cluster.local", "b.default.svc.cluster.local", "c.default.svc.cluster.local", "d.prod.svc.cluster.local", "e.example.com"},
			VirtualServices:  []string{"default/a", "default/b"},
			DestinationRules: []string{"default/a", "default/b", "prod/all-prod"},
		}},
		{"one host, and the destinations of its VirtualService", sidecarYAML("s", "default", "  egress: [{hosts: [\"./a.default.svc.cluster.local\"]}]\n"), "default", view{
			Services:         []string{"a.default.svc.cluster.local", "c.default.svc.cluster.local"},
			VirtualServices:  []string{"default/a"},
			DestinationRules: []string{"default/a"},
		}},
		{"namespace wildcard and a wildcard host", sidecarYAML("s", "default", "  egress: [{hosts: [\"prod/*\", \"*/*.example.com\"]}]\n"), "default", view{
			Services:         []string{"d.prod.svc.cluster.local", "e.example.com"},
			DestinationRules: []string{"prod/all-prod"},
		}},
		{"the namespace must match", sidecarYAML("s", "default", "  egress: [{hosts: [\"prod/b.default.svc.cluster.local\", \"~/*\"]}]\n"), "default", view{}},
		{"root sidecar: \".\" is the proxy's namespace", sidecarYAML("s", RootNamespace, "  egress: [{hosts: [\"./*\"]}]\n"), "prod", view{
			Services:         []string{"d.prod.svc.cluster.local", "e.example.com"},
			DestinationRules: []string{"prod/all-prod"},
		}},
		{"no egress: everything", sidecarYAML("s", "default", "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"), "default", view{
			Services:         []string{"a.default.svc.cluster.local", "b.default.svc.cluster.local", "c.default.svc.cluster.local", "d.prod.svc.cluster.local", "e.example.com"},
			VirtualServices:  []string{"default/a", "default/b"},
			DestinationRules: []string{"default/a", "default/b", "prod/all-prod"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := sidecarPushContext(t, tt.sidecars)
			v := pc.ForProxy(sidecarProxy(tt.ns, nil))
			var got view
			for _, s := range v.Services() {
				got.Services = append(got.Services, s.Hostname)
				if v.ServiceForHost(s.Hostname) != s {
					t.Errorf("ServiceForHost(%q) is not the listed service", s.Hostname)
				}
			}
			for _, vs := range v.VirtualServices() {
				got.VirtualServices = append(got.VirtualServices, vs.Namespace+"/"+vs.Name)
			}
			// A view's DestinationRules are the merged rules its lookups read.
			for _, dr := range v.DestinationRules() {
				got.DestinationRules = append(got.DestinationRules, dr.Namespace+"/"+dr.Name)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("view (-want +got):\n%s", diff)
			}
			if got := len(v.VirtualServicesForGateway(MeshGateway)); got != len(tt.want.VirtualServices) {
				t.Errorf("VirtualServicesForGateway(mesh) has %d, want %d", got, len(tt.want.VirtualServices))
			}
			if tt.sidecars == "" && v != pc.ForNamespace(tt.ns) {
				t.Error("without a Sidecar ForProxy is not the namespace view")
			}
		})
	}
}

// TestForProxyCached: one view per (namespace, Sidecar), shared by
// concurrent callers and by ForProxy on a view.
func TestForProxyCached(t *testing.T) {
	pc := sidecarPushContext(t, sidecarYAML("s", RootNamespace, "  egress: [{hosts: [\"./*\"]}]\n"))
	views := make([]*PushContext, 8)
	var wg sync.WaitGroup
	for i := range views {
		wg.Add(1)
		go func() {
			defer wg.Done()
			views[i] = pc.ForProxy(sidecarProxy("default", map[string]string{"i": "x"}))
		}()
	}
	wg.Wait()
	for _, v := range views[1:] {
		if v != views[0] {
			t.Fatal("ForProxy built more than one view for one namespace and Sidecar")
		}
	}
	if pc.ForNamespace("prod").ForProxy(sidecarProxy("default", nil)) != views[0] {
		t.Error("ForProxy on a namespace view gives another view")
	}
	if pc.ForProxy(sidecarProxy("prod", nil)) == views[0] {
		t.Error("a root Sidecar gives one view for two namespaces")
	}
}

// TestForEgressPort: with an egress listener on port 80 importing b and a
// port-less one importing d, ForProxy holds both (clusters are the union)
// while port 80 sees b alone and any other port d alone, as Istio's
// per-listener services; without a port-less listener other ports see
// nothing, and without port listeners every port sees the ForProxy view.
func TestForEgressPort(t *testing.T) {
	hosts := func(v *PushContext) []string {
		var out []string
		for _, s := range v.Services() {
			out = append(out, s.Hostname)
		}
		return out
	}
	p := sidecarProxy("default", nil)
	pc := sidecarPushContext(t, sidecarYAML("s", "default", `  egress:
  - port: {number: 80, protocol: HTTP, name: http}
    bind: 127.0.0.2
    hosts: ["./b.default.svc.cluster.local"]
  - hosts: ["prod/d.prod.svc.cluster.local"]
`)).ForProxy(p)
	for _, tt := range []struct {
		name string
		v    *PushContext
		want []string
	}{
		{"union", pc, []string{"b.default.svc.cluster.local", "d.prod.svc.cluster.local"}},
		{"port 80", pc.ForEgressPort(80), []string{"b.default.svc.cluster.local"}},
		{"port 8080", pc.ForEgressPort(8080), []string{"d.prod.svc.cluster.local"}},
	} {
		if diff := cmp.Diff(tt.want, hosts(tt.v)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	if l := pc.Sidecar().EgressListenerForPort(80); l == nil || l.Bind != "127.0.0.2" {
		t.Errorf("EgressListenerForPort(80) = %+v, want bind 127.0.0.2", l)
	}
	if pc.ForEgressPort(80).Sidecar() != pc.Sidecar() {
		t.Error("a port's view does not carry the Sidecar")
	}
	b := pc.ServiceForHost("b.default.svc.cluster.local")
	if !pc.EgressServes(b, 80) || pc.EgressServes(b, 8080) {
		t.Error("EgressServes(b): want port 80 only")
	}

	noCatchAll := sidecarPushContext(t, sidecarYAML("s", "default", "  egress: [{port: {number: 80, protocol: HTTP, name: http}, hosts: [\"./a.default.svc.cluster.local\"]}]\n")).ForProxy(p)
	if got := hosts(noCatchAll.ForEgressPort(8080)); len(got) != 0 {
		t.Errorf("no port-less listener: port 8080 sees %v, want nothing", got)
	}
	plain := sidecarPushContext(t, sidecarYAML("s", "default", "  egress: [{hosts: [\"./a.default.svc.cluster.local\"]}]\n")).ForProxy(p)
	if plain.ForEgressPort(80) != plain {
		t.Error("without port listeners ForEgressPort must be the ForProxy view")
	}

	// A port's view prefers the DestinationRule selecting the proxy, as
	// the ForProxy view does.
	selected := sidecarPushContext(t, sidecarYAML("s", "default", "  egress: [{port: {number: 80, protocol: HTTP, name: http}, hosts: [\"./b.default.svc.cluster.local\"]}]\n")+
		"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b-x, namespace: default}\nspec: {host: b, workloadSelector: {matchLabels: {app: x}}}\n---\n",
	).ForProxy(sidecarProxy("default", map[string]string{"app": "x"}))
	for _, port := range []uint32{0, 80} {
		v := selected
		if port != 0 {
			v = selected.ForEgressPort(port)
		}
		if dr := v.DestinationRule("b.default.svc.cluster.local"); dr == nil || dr.Name != "b-x" {
			t.Errorf("port %d: DestinationRule(b) = %+v, want default/b-x (it selects the proxy)", port, dr)
		}
	}
}

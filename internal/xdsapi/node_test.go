package xdsapi

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNodeIDRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    NodeID
		wantErr bool
	}{
		{name: "sidecar", in: "sidecar~127.0.0.5~reviews-v1-1.default~default.svc.cluster.local",
			want: NodeID{Type: Sidecar, IP: "127.0.0.5", Name: "reviews-v1-1", Namespace: "default", Domain: "default.svc.cluster.local"}},
		{name: "router", in: "router~127.0.0.2~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
			want: NodeID{Type: Router, IP: "127.0.0.2", Name: "istio-ingressgateway-1", Namespace: "istio-system", Domain: "istio-system.svc.cluster.local"}},
		{name: "three parts", in: "sidecar~1.2.3.4~a.b", wantErr: true},
		{name: "bad type", in: "proxy~1.2.3.4~a.b~b.svc", wantErr: true},
		{name: "no namespace", in: "sidecar~1.2.3.4~a~b.svc", wantErr: true},
		{name: "ipv6", in: "sidecar~fd00::5~a.b~b.svc.cluster.local",
			want: NodeID{Type: Sidecar, IP: "fd00::5", Name: "a", Namespace: "b", Domain: "b.svc.cluster.local"}},
		{name: "empty IP", in: "sidecar~~a.b~b.svc", wantErr: true},
		{name: "IP is a name", in: "sidecar~reviews~a.b~b.svc", wantErr: true},
		{name: "IP out of range", in: "sidecar~10.0.0.256~a.b~b.svc", wantErr: true},
		{name: "IP with port", in: "sidecar~10.0.0.1:80~a.b~b.svc", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNodeID(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("(-want +got)\n%s", d)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestClusterName(t *testing.T) {
	n := ClusterName(Outbound, 9080, "v2", "reviews.default.svc.cluster.local")
	if n != "outbound|9080|v2|reviews.default.svc.cluster.local" {
		t.Fatalf("got %q", n)
	}
	dir, port, subset, host, ok := ParseClusterName(n)
	if !ok || dir != Outbound || port != 9080 || subset != "v2" || host != "reviews.default.svc.cluster.local" {
		t.Fatalf("parse: %v %v %v %v %v", dir, port, subset, host, ok)
	}
	if _, _, _, _, ok := ParseClusterName(BlackHoleCluster); ok {
		t.Fatal("BlackHoleCluster parsed as an Istio name")
	}
}

func TestNodeMetaRoundTrip(t *testing.T) {
	id := NodeID{Type: Sidecar, IP: "127.0.0.9", Name: "ratings-v1-1", Namespace: "default", Domain: "default.svc.cluster.local"}
	m := NodeMeta{Labels: map[string]string{"app": "ratings", "version": "v1"}, Namespace: "default",
		ServiceAccount: "bookinfo-ratings", ClusterID: "Kubernetes", WorkloadName: "ratings-v1", InterceptionMode: InterceptionNone, ProxyVersion: "1.2.3"}
	n, err := BuildNode(id, m)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(m, ParseNodeMeta(n)); d != "" {
		t.Fatalf("(-want +got)\n%s", d)
	}
}

func TestBuildNodeInvalidUTF8(t *testing.T) {
	id := NodeID{Type: Sidecar, IP: "127.0.0.9", Name: "ratings-v1-1", Namespace: "default", Domain: "default.svc.cluster.local"}
	tests := []struct {
		name string
		meta NodeMeta
	}{
		{name: "label value", meta: NodeMeta{Labels: map[string]string{"app": "rat\xffings"}}},
		{name: "label key", meta: NodeMeta{Labels: map[string]string{"\xfe": "ratings"}}},
		{name: "service account", meta: NodeMeta{ServiceAccount: "\xc3\x28"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := BuildNode(id, tt.meta)
			if err == nil {
				t.Fatalf("BuildNode = %v, want an error", n)
			}
		})
	}
}

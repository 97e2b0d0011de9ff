package xdsapi

import "testing"

func TestEndpointWorkload(t *testing.T) {
	w := EndpointWorkload{Name: "reviews-v1", Namespace: "default", CanonicalService: "reviews", CanonicalRevision: "v1", ClusterID: "Kubernetes"}
	s := w.String()
	if s != "reviews-v1;default;reviews;v1;Kubernetes" {
		t.Fatalf("encoded %q", s)
	}
	if got, ok := ParseEndpointWorkload(s); !ok || got != w {
		t.Fatalf("decoded %+v, %v", got, ok)
	}
	if got, ok := ParseEndpointWorkload(s + ";extra"); !ok || got != w {
		t.Fatalf("with an extra field: %+v, %v", got, ok)
	}
	if _, ok := ParseEndpointWorkload("reviews-v1;default;reviews;v1"); ok {
		t.Fatal("four fields decoded")
	}
}

func TestCanonicalService(t *testing.T) {
	for _, tc := range []struct {
		labels    map[string]string
		name, rev string
	}{
		{map[string]string{"app": "reviews", "version": "v2"}, "reviews", "v2"},
		{map[string]string{"app.kubernetes.io/name": "ratings", "app": "x", "app.kubernetes.io/version": "1.2"}, "ratings", "1.2"},
		{map[string]string{"service.istio.io/canonical-name": "c", "service.istio.io/canonical-revision": "r", "app": "x", "version": "y"}, "c", "r"},
		{nil, "wl", "latest"},
	} {
		if n, r := CanonicalService(tc.labels, "wl"); n != tc.name || r != tc.rev {
			t.Errorf("%v: %s %s, want %s %s", tc.labels, n, r, tc.name, tc.rev)
		}
	}
}

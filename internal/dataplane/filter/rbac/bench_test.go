package rbac

import (
	"net/http"
	"net/http/httptest"
	"testing"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// BenchmarkRBACChain is Istio's AUDIT, DENY and ALLOW filters (the fuzz
// target's policies) on one allowed GET: what authorization adds to a
// request.
func BenchmarkRBACChain(b *testing.B) {
	deny, allow, audit := fuzzPolicies()
	fs := []filter.Filter{
		buildHTTP(b, &rbachttpv3.RBAC{Rules: audit}),
		buildHTTP(b, &rbachttpv3.RBAC{Rules: deny}),
		buildHTTP(b, &rbachttpv3.RBAC{Rules: allow}),
	}
	r := httptest.NewRequest("GET", "/productpage?u=normal", nil)
	r.RemoteAddr = "10.1.2.3:4000"
	passed := 0
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { passed++ })
	third := http.HandlerFunc(func(w http.ResponseWriter, rr *http.Request) { fs[2].ServeHTTP(w, rr, ok) })
	second := http.HandlerFunc(func(w http.ResponseWriter, rr *http.Request) { fs[1].ServeHTTP(w, rr, third) })
	w := httptest.NewRecorder()
	var st filter.State
	rr := r.WithContext(filter.NewContext(r.Context(), &st)) // once per request in the connection manager too
	b.ReportAllocs()
	for b.Loop() {
		st = filter.State{}
		fs[0].ServeHTTP(w, rr, second)
	}
	if passed == 0 {
		b.Fatal("the request was denied")
	}
}

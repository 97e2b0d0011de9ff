package ratelimit

import (
	"testing"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// TestFromPolicies: the generated domain gives each global limit to the
// descriptor its proxies send (model's keys), one count per header value,
// and nothing to local limits.
func TestFromPolicies(t *testing.T) {
	rs, errs := config.Decode("p.yaml", []byte(`apiVersion: loom.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api, namespace: shop}
spec:
  limits:
  - {requestsPerUnit: 100, unit: second}
  - match: {path: {prefix: /api}, header: X-User}
    requestsPerUnit: 10
    unit: minute
    scope: global
  - {requestsPerUnit: 1000, unit: hour, scope: global, shadowMode: true}
`))
	if errs.Err() != nil {
		t.Fatal(errs)
	}
	d := FromPolicies(model.RateLimitPolicies(config.NewSnapshot(1, rs)))
	c, err := NewConfig([]*DomainConfig{d}, []string{"policies"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		d       []string
		wantKey string
	}{
		{[]string{"ratelimitpolicy=shop/api/1", "path=/api", "x-user=bob"}, "loom.ratelimitpolicy_shop/api/1.path_/api.x-user"},
		{[]string{"ratelimitpolicy=shop/api/2"}, "loom.ratelimitpolicy_shop/api/2"},
		{[]string{"ratelimitpolicy=shop/api/0"}, ""}, // local
		{[]string{"ratelimitpolicy=shop/api/1", "path=/api"}, ""},
	}
	for _, tt := range tests {
		l := c.Limit(model.RateLimitDomain, desc(tt.d...))
		switch {
		case tt.wantKey == "" && l != nil:
			t.Errorf("%v: limit %q, want none", tt.d, l.Key)
		case tt.wantKey != "" && (l == nil || l.Key != tt.wantKey):
			t.Errorf("%v: limit %v, want %q", tt.d, l, tt.wantKey)
		}
	}
	if l := c.Limit(model.RateLimitDomain, desc("ratelimitpolicy=shop/api/2")); !l.ShadowMode || l.Limit.GetRequestsPerUnit() != 1000 {
		t.Errorf("limit 2 = %+v, want 1000/hour in shadow mode", l)
	}
	if FromPolicies(nil) != nil {
		t.Error("no policies made a domain")
	}
}

package ratelimit

import (
	"strings"
	"testing"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
)

// desc builds a request descriptor from "k=v" pairs.
func desc(kvs ...string) *ratelimitcommonv3.RateLimitDescriptor {
	d := &ratelimitcommonv3.RateLimitDescriptor{}
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		d.Entries = append(d.Entries, &ratelimitcommonv3.RateLimitDescriptor_Entry{Key: k, Value: v})
	}
	return d
}

func mustConfig(t *testing.T, yaml string) *Config {
	t.Helper()
	docs, err := ParseConfig("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConfig(docs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// istioSample is the rate limit service config of Istio's global rate
// limit task (the ConfigMap beside productpage_envoy_ratelimit.yaml).
const istioSample = `
domain: productpage-ratelimit
descriptors:
  - key: PATH
    value: "/productpage"
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: PATH
    rate_limit:
      unit: minute
      requests_per_unit: 100
`

// readmeExamples are envoyproxy/ratelimit's documented examples 2 to 4, 6
// and 9, one domain each.
const readmeExamples = `
domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit: {unit: day, requests_per_unit: 5}
  - key: to_number
    rate_limit: {unit: day, requests_per_unit: 100}
---
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 0}
---
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit: {requests_per_unit: 300, unit: second}
---
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit: {requests_per_unit: 10, unit: second}
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit: {requests_per_unit: 20, unit: second}
---
domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: ldap
    rate_limit: {unlimited: true}
`

// TestConfigLimit: envoyproxy/ratelimit's matching: key_value before a
// prefix wildcard before the key alone, at the level of the descriptor's
// last entry only.
func TestConfigLimit(t *testing.T) {
	c := mustConfig(t, istioSample+"---\n"+readmeExamples)
	tests := []struct {
		name    string
		domain  string
		d       *ratelimitcommonv3.RateLimitDescriptor
		wantKey string // "" for no limit
		wantRPU uint32
	}{
		{"istio: exact value", "productpage-ratelimit", desc("PATH=/productpage"), "productpage-ratelimit.PATH_/productpage", 1},
		{"istio: any other value", "productpage-ratelimit", desc("PATH=/api/v1/products"), "productpage-ratelimit.PATH", 100},
		{"unknown domain", "nope", desc("PATH=/productpage"), "", 0},
		{"unknown key", "productpage-ratelimit", desc("METHOD=GET"), "", 0},
		{"nested key-only entry: per number", "messaging", desc("message_type=marketing", "to_number=2061111111"), "messaging.message_type_marketing.to_number", 5},
		{"top-level key-only", "messaging", desc("to_number=2061111111"), "messaging.to_number", 100},
		{"placeholder has no limit", "messaging", desc("message_type=marketing"), "", 0},
		{"most specific first", "edge_proxy_per_ip", desc("remote_address=50.0.0.5"), "edge_proxy_per_ip.remote_address_50.0.0.5", 0},
		{"key default", "edge_proxy_per_ip", desc("remote_address=50.0.0.1"), "edge_proxy_per_ip.remote_address", 10},
		{"deeper request than config", "example4", desc("key=value", "subkey=subvalue"), "", 0},
		{"same depth", "example4", desc("key=value"), "example4.key_value", 300},
		{"shadow", "example6", desc("service=auth-service", "user=user-a"), "example6.service.user_user-a", 10},
		{"wildcard prefix", "example9", desc("key1=value2"), "example9.key1_value*", 20},
		{"wildcard does not match others", "example9", desc("key1=other"), "", 0},
		{"unlimited", "example9", desc("ldap=x"), "example9.ldap", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := c.Limit(tt.domain, tt.d)
			if tt.wantKey == "" {
				if l != nil {
					t.Fatalf("limit %q, want none", l.Key)
				}
				return
			}
			if l == nil {
				t.Fatalf("no limit, want %q", tt.wantKey)
			}
			if l.Key != tt.wantKey || l.Limit.GetRequestsPerUnit() != tt.wantRPU {
				t.Fatalf("limit %q %d/unit, want %q %d", l.Key, l.Limit.GetRequestsPerUnit(), tt.wantKey, tt.wantRPU)
			}
		})
	}
	if l := c.Limit("example6", desc("service=s", "user=user-a")); !l.ShadowMode {
		t.Error("user-a's limit is not in shadow mode")
	}
	if l := c.Limit("example9", desc("ldap=x")); !l.Unlimited {
		t.Error("ldap is not unlimited")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "domain: d\ndescriptors:\n- key: k\n  rate_limt: {unit: second}\n", "field rate_limt not found"},
		{"no domain", "descriptors: []\n", "domain: must not be empty"},
		{"empty key", "domain: d\ndescriptors:\n- value: v\n", "empty key"},
		{"bad unit", "domain: d\ndescriptors:\n- key: k\n  rate_limit: {unit: week, requests_per_unit: 1}\n", `rate_limit.unit = "week"`},
		{"unlimited with unit", "domain: d\ndescriptors:\n- key: k\n  rate_limit: {unit: second, unlimited: true}\n", "should not specify a unit"},
		{"duplicate", "domain: d\ndescriptors:\n- key: k\n  value: v\n- key: k\n  value: v\n", `duplicate descriptor composite key "d.k_v"`},
		{"duplicate domain", "domain: d\n---\ndomain: d\n", `domain "d": defined twice`},
		{"replaces itself", "domain: d\ndescriptors:\n- key: k\n  rate_limit: {unit: second, name: a, replaces: [{name: a}]}\n", "should not name its own limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := ParseConfig("f.yaml", []byte(tt.yaml))
			if err == nil {
				_, err = NewConfig(docs, nil)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

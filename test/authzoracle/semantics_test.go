package authzoracle

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/controlplane/translate"
)

// want is an expected outcome: passed, denied with details, or checked by
// the CUSTOM provider.
func passed() outcome { return outcome{passed: true} }
func deniedBy(d string) outcome {
	return outcome{details: "rbac_access_denied_matched_policy[" + d + "]"}
}
func checked() outcome { return outcome{extAuthz: true} }

func req(method, path, principal string) probe {
	return probe{method: method, path: path, host: "httpbin.foo:8000", principal: principal,
		src: netip.MustParseAddr("10.0.0.7"), dst: netip.MustParseAddrPort("10.0.0.1:8000")}
}

func conn(port uint16, principal string) probe {
	return probe{principal: principal, src: netip.MustParseAddr("10.0.0.7"), dst: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)}
}

func withClaims(p probe, claims map[string]any) probe { p.claims = claims; return p }

// TestAuthzSemantics states Istio's documented decisions on requests
// and connections, for oracle cases and for policies of Istio's tasks,
// and checks the proxy decides them so from Loom's translation.
func TestAuthzSemantics(t *testing.T) {
	cases := map[string]AuthzOracleCase{}
	for _, c := range AuthzOracleCases() {
		cases[c.Name] = c
	}
	type check struct {
		p    probe
		want outcome
	}
	tests := []struct {
		name   string
		oracle string // an oracle case, or
		policy string // an inline policy in namespace foo
		tcp    bool
		checks []check
	}{
		{name: "DENY before ALLOW", oracle: "deny-and-allow", checks: []check{
			{req("GET", "/", "spiffe://deny"), deniedBy("ns[foo]-policy[httpbin-deny]-rule[0]")},
			{req("GET", "/", "spiffe://allow"), passed()},
			{req("GET", "/", ""), deniedBy("none")},
			{req("GET", "/", "spiffe://other"), deniedBy("none")},
		}},
		{name: "trust domain alias", oracle: "trust-domain-one-alias", checks: []check{
			{req("rule[0]-to[0]-method[0]", "/", "spiffe://cluster.local/ns/rule[0]/sa/from[0]-principal[0]"), passed()},
			{req("rule[0]-to[0]-method[0]", "/", "spiffe://td1/ns/rule[0]/sa/from[0]-principal[0]"), passed()},
			{req("rule[0]-to[0]-method[0]", "/", "spiffe://some-td/ns/rule[0]/sa/from[0]-principal[0]"), deniedBy("none")},
			{req("GET", "/", "spiffe://td1/ns/rule[0]/sa/from[0]-principal[0]"), deniedBy("none")},
		}},
		{name: "trust domains", oracle: "trust-domains-field", checks: []check{
			{req("GET", "/", "spiffe://cluster.local/ns/a/sa/b"), passed()},
			{req("GET", "/", "spiffe://other/ns/a/sa/b"), passed()},
			{req("GET", "/", "spiffe://badx/ns/a/sa/b"), deniedBy("none")},
			{req("GET", "/", "spiffe://untrusted/ns/a/sa/b"), deniedBy("none")},
			// notTrustDomains holds for a peer without an identity.
			{req("GET", "/", ""), passed()},
		}},
		{name: "CUSTOM checks what its rules match", oracle: "custom-grpc-provider", checks: []check{
			{req("GET", "/httpbin1", ""), checked()},
			{req("POST", "/httpbin2?x=1", ""), checked()},
			{req("GET", "/httpbin3", ""), passed()},
		}},
		{name: "a bad CUSTOM provider fails closed", oracle: "custom-bad-invalid-config", checks: []check{
			{req("GET", "/httpbin1", ""), deniedBy("istio-ext-authz-default-ns[foo]-policy[httpbin-1]-rule[0]-deny-due-to-bad-CUSTOM-action")},
			{req("GET", "/other", ""), passed()},
		}},
		{name: "TCP: ALLOW keeps only its TCP rule", oracle: "tcp/allow-both-http-tcp", tcp: true, checks: []check{
			{conn(80, "spiffe://cluster.local/ns/ns-1/sa/x"), passed()},
			{conn(81, "spiffe://cluster.local/ns/ns-1/sa/x"), deniedBy("none")},
			{conn(80, ""), deniedBy("none")},
		}},
		{name: "TCP: an HTTP-only DENY rule denies every connection", oracle: "tcp/deny-both-http-tcp", tcp: true, checks: []check{
			{conn(12345, ""), deniedBy("ns[foo]-policy[httpbin-deny]-rule[0]")},
		}},
		{name: "Istio's TCP task: ALLOW ports 9000 and 9001", tcp: true, policy: `
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules: [{to: [{operation: {ports: ["9000", "9001"]}}]}]`, checks: []check{
			{conn(9000, ""), passed()}, {conn(9001, ""), passed()}, {conn(9002, ""), deniedBy("none")},
		}},
		{name: "Istio's TCP task: ALLOW GET on 9000 is invalid for TCP", tcp: true, policy: `
spec:
  action: ALLOW
  rules: [{to: [{operation: {methods: ["GET"], ports: ["9000"]}}]}]`, checks: []check{
			{conn(9000, ""), deniedBy("none")}, {conn(9001, ""), deniedBy("none")},
		}},
		{name: "Istio's TCP task: DENY GET denies all TCP", tcp: true, policy: `
spec:
  action: DENY
  rules: [{to: [{operation: {methods: ["GET"]}}]}]`, checks: []check{
			{conn(9000, ""), deniedBy("ns[foo]-policy[p]-rule[0]")}, {conn(9001, ""), deniedBy("ns[foo]-policy[p]-rule[0]")},
		}},
		{name: "Istio's TCP task: DENY GET on 9000", tcp: true, policy: `
spec:
  action: DENY
  rules: [{to: [{operation: {methods: ["GET"], ports: ["9000"]}}]}]`, checks: []check{
			{conn(9000, ""), deniedBy("ns[foo]-policy[p]-rule[0]")}, {conn(9001, ""), passed()},
		}},
		{name: "path templates", policy: `
spec:
  rules: [{to: [{operation: {paths: ["/foo/{*}", "/bar/{**}/baz", "/files/*"]}}]}]`, checks: []check{
			{req("GET", "/foo/a", ""), passed()},
			{req("GET", "/foo/a?q=/x", ""), passed()},
			{req("GET", "/foo/a/b", ""), deniedBy("none")},
			{req("GET", "/foo/", ""), deniedBy("none")},
			{req("GET", "/bar//baz", ""), passed()},
			{req("GET", "/bar/a/b/baz", ""), passed()},
			{req("GET", "/bar/baz", ""), deniedBy("none")},
			{req("GET", "/files/a/b", ""), passed()},
			{req("GET", "/files/../etc/passwd", ""), deniedBy("none")},
		}},
		{name: "Istio's JWT task: require a request principal and a group", policy: `
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["group1"]}]`, checks: []check{
			{withClaims(req("GET", "/headers", ""), map[string]any{"iss": "testing@secure.istio.io", "sub": "testing@secure.istio.io",
				"groups": []any{"group1", "group2"}}), passed()},
			{withClaims(req("GET", "/headers", ""), map[string]any{"iss": "testing@secure.istio.io", "sub": "testing@secure.istio.io", "foo": "bar"}), deniedBy("none")},
			{req("GET", "/headers", ""), deniedBy("none")},
		}},
		{name: "Istio's HTTP task: productpage-viewer", policy: `
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules: [{to: [{operation: {methods: ["GET"]}}]}]`, checks: []check{
			{req("GET", "/productpage", ""), passed()}, {req("POST", "/productpage", ""), deniedBy("none")},
		}},
		{name: "Istio's HTTP task: details-viewer by service account", policy: `
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: ["GET"]}}]`, checks: []check{
			{req("GET", "/details/0", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"), passed()},
			{req("GET", "/details/0", "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"), deniedBy("none")},
			{req("GET", "/details/0", ""), deniedBy("none")},
		}},
		{name: "allow nothing", policy: "spec: {}", checks: []check{
			{req("GET", "/", ""), deniedBy("none")}, // its one policy never matches
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fs []proto.Message
			if tt.oracle != "" {
				c, ok := cases[tt.oracle]
				if !ok {
					t.Fatalf("no oracle case %q", tt.oracle)
				}
				fs = oracleFilters(t, c)
			} else {
				f := filepath.Join(t.TempDir(), "policy.yaml")
				doc := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\n" + tt.policy + "\n"
				if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
					t.Fatal(err)
				}
				got, err := translate.AuthorizationFilters(loadPushContext(t, f), oracleProxy(), nil)
				if err != nil {
					t.Fatal(err)
				}
				fs = asMessages(got, tt.tcp)
			}
			ch := compile(t, tt.tcp, fs)
			for _, c := range tt.checks {
				got := ch.decide(c.p, tt.tcp)
				got.shadow = ""
				if got != c.want {
					t.Errorf("%s: got %+v, want %+v", c.p, got, c.want)
				}
			}
		})
	}
}

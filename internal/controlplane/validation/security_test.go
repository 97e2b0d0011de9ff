package validation

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// policyDoc is an AuthorizationPolicy "p" in namespace foo whose spec is body.
func policyDoc(body string) string {
	return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n" + body
}

func peerAuthDoc(body string) string {
	return "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: foo}\nspec:\n" + body
}

func TestAuthorizationPolicy(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"allow nothing (empty spec)", policyDoc("  {}\n"), nil},
		{"istio's http task policies", policyDoc(`  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/reviews/{*}", "/api/{**}"], ports: ["9080"]}}]
    when:
    - {key: "request.auth.claims[groups]", values: [group1]}
    - {key: "request.headers[x-token]", notValues: [bad]}
    - {key: source.ip, values: [10.0.0.0/8, "::1"]}
    - {key: destination.port, values: ["0", "65535"]}
    - {key: "experimental.envoy.filters.a.b[c]", values: [x]}
`), nil},
		{"deny and custom need rules", policyDoc("  action: DENY\n"), []string{
			"spec.rules: Required value: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
		}},
		{"custom without rules", policyDoc("  action: CUSTOM\n  provider: {name: ext}\n"), []string{
			"spec.rules: Required value: CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
		}},
		{"custom without provider", policyDoc("  action: CUSTOM\n  rules: [{}]\n"), []string{
			"spec.provider.name: Required value: `provider.name` must not be empty",
		}},
		{"custom refuses identity fields", policyDoc(`  action: CUSTOM
  provider: {name: ext}
  rules:
  - from: [{source: {namespaces: [a], principals: [b], requestPrincipals: [c], ipBlocks: [1.2.3.4]}}]
    when:
    - {key: "request.auth.claims[iss]", values: [x]}
    - {key: source.principal, values: [x]}
    - {key: "request.headers[a]", values: [x]}
`), []string{
			"spec.rules[0].from[0].source.namespaces: Invalid value: From.Namespaces is currently not supported with CUSTOM action",
			"spec.rules[0].from[0].source.principals: Invalid value: From.Principals is currently not supported with CUSTOM action",
			"spec.rules[0].from[0].source.requestPrincipals: Invalid value: From.RequestPrincipals is currently not supported with CUSTOM action",
			"spec.rules[0].when[0].key: Invalid value: request.auth.claims[iss] is currently not supported with CUSTOM action",
			"spec.rules[0].when[1].key: Invalid value: source.principal is currently not supported with CUSTOM action",
		}},
		{"provider with another action", policyDoc("  action: DENY\n  provider: {name: ext}\n  rules: [{}]\n"), []string{
			"spec.provider: Invalid value: `provider` must not be with non CUSTOM action, found DENY",
		}},
		// An empty list decodes as unset, as in Istio: "from: []" is no
		// from, which matches every source.
		{"empty from, to, source and operation", policyDoc(`  rules:
  - from: []
    to: []
  - from: [{}]
    to: [{}]
  - from: [{source: {}}]
    to: [{operation: {}}]
`), []string{
			"spec.rules[1].from[0].source: Required value: `from.source` must not be nil, found at rule 1",
			"spec.rules[1].to[0].operation: Required value: `to.operation` must not be nil, found at rule 1",
			"spec.rules[2].from[0].source: Required value: `from.source` must not be empty, found at rule 2",
			"spec.rules[2].to[0].operation: Required value: `to.operation` must not be empty, found at rule 2",
		}},
		{"bad values", policyDoc(`  rules:
  - from: [{source: {ipBlocks: ["1.2.3.4/33", "1.2.3"], notRemoteIpBlocks: [""], principals: [""]}}]
    to: [{operation: {ports: ["80", "http", "65536", "-1"], notPorts: ["1.5"], paths: ["/a/{*}/b*", "/{**}/x/{*}", "/x{*}", "/{foo}"]}}]
`), []string{
			`spec.rules[0].from[0].source.principals[0]: Invalid value: "": empty value not allowed`,
			`spec.rules[0].from[0].source.notRemoteIpBlocks[0]: Invalid value: "": empty value not allowed`,
			`spec.rules[0].from[0].source.ipBlocks[0]: Invalid value: "1.2.3.4/33": bad CIDR range: netip.ParsePrefix("1.2.3.4/33"): prefix length out of range`,
			`spec.rules[0].from[0].source.ipBlocks[1]: Invalid value: "1.2.3": bad IP address`,
			`spec.rules[0].to[0].operation.ports[1]: Invalid value: "http": bad port: must be a number 0-65535`,
			`spec.rules[0].to[0].operation.ports[2]: Invalid value: "65536": bad port: must be a number 0-65535`,
			`spec.rules[0].to[0].operation.ports[3]: Invalid value: "-1": bad port: must be a number 0-65535`,
			`spec.rules[0].to[0].operation.notPorts[0]: Invalid value: "1.5": bad port: must be a number 0-65535`,
			`spec.rules[0].to[0].operation.paths[0]: Invalid value: "/a/{*}/b*": invalid or unsupported path: contains '*' beyond a supported path template`,
			`spec.rules[0].to[0].operation.paths[1]: Invalid value: "/{**}/x/{*}": invalid or unsupported path: {**} is not the last operator`,
			`spec.rules[0].to[0].operation.paths[2]: Invalid value: "/x{*}": invalid or unsupported path: contains '{' or '}' beyond a supported path template`,
			`spec.rules[0].to[0].operation.paths[3]: Invalid value: "/{foo}": invalid or unsupported path: contains '{' or '}' beyond a supported path template`,
		}},
		{"conditions", policyDoc(`  rules:
  - when:
    - {key: "", values: [a]}
    - {key: source.ip}
    - {key: request.headers, values: [a]}
    - {key: "request.headers[]", values: [a]}
    - {key: "request.auth.claims[a", values: [a]}
    - {key: source.user, values: [a]}
    - {key: remote.ip, notValues: [not-an-ip]}
    - {key: destination.port, values: ["99999"]}
`), []string{
			"spec.rules[0].when[0].key: Required value: `key` must not be empty",
			"spec.rules[0].when[1]: Required value: at least one of `values` or `notValues` must be set for key source.ip",
			`spec.rules[0].when[2].key: Invalid value: "request.headers": bad key: should have format a[b]`,
			`spec.rules[0].when[3].key: Invalid value: "request.headers[]": bad key: should have format a[b]`,
			`spec.rules[0].when[4].key: Invalid value: "request.auth.claims[a": bad key: should have format a[b]`,
			`spec.rules[0].when[5].key: Unsupported value: "source.user": unknown attribute (see https://istio.io/docs/reference/config/security/conditions/)`,
			`spec.rules[0].when[6].notValues[0]: Invalid value: "not-an-ip": bad IP address`,
			`spec.rules[0].when[7].values[0]: Invalid value: "99999": bad port: must be a number 0-65535`,
		}},
		{"service accounts", policyDoc(`  rules:
  - from:
    - source: {serviceAccounts: ["ns/sa", sa, "*", "a/b/c", "/x"], notServiceAccounts: [ns/]}
    - source: {serviceAccounts: [sa], namespaces: [a]}
`), []string{
			`spec.rules[0].from[0].source.serviceAccounts[2]: Invalid value: "*": wildcard is not supported in serviceAccounts`,
			`spec.rules[0].from[0].source.serviceAccounts[3]: Invalid value: "a/b/c": must be <namespace>/<serviceaccount> or <serviceaccount>`,
			`spec.rules[0].from[0].source.serviceAccounts[4]: Invalid value: "/x": must be <namespace>/<serviceaccount> or <serviceaccount>`,
			`spec.rules[0].from[0].source.notServiceAccounts[0]: Invalid value: "ns/": must be <namespace>/<serviceaccount> or <serviceaccount>`,
			"spec.rules[0].from[1].source: Invalid value: Cannot set serviceAccounts with namespaces or principals",
		}},
		{"selector", policyDoc("  selector: {matchLabels: {\"app*\": a}}\n  rules: [{}]\n"), []string{
			"spec.selector.matchLabels[app*]: Invalid value: wildcard is not supported in selector",
		}},
		{"target refs are not served", policyDoc(`  selector: {matchLabels: {app: a}}
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}, {kind: Service, namespace: other}]
`), []string{
			"spec: Invalid value: only one of targetRefs or selector can be set",
			"spec.targetRefs[0]: " + Unsupported,
			"spec.targetRefs[1].name: Required value",
			`spec.targetRefs[1].namespace: Invalid value: "other": cross namespace referencing is not currently supported`,
			"spec.targetRefs[1]: " + Unsupported,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, tt.doc)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPeerAuthentication(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"mesh-wide strict", peerAuthDoc("  mtls: {mode: STRICT}\n"), nil},
		{"workload with port level", peerAuthDoc(`  selector: {matchLabels: {app: a}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {"8080": {mode: DISABLE}, "9000": {mode: UNSET}}
`), nil},
		{"port level needs a selector", peerAuthDoc("  selector: {}\n  portLevelMtls: {\"80\": {mode: STRICT}}\n"), []string{
			"spec.portLevelMtls: Invalid value: portLevelMtls requires selector: mesh and namespace peer authentication cannot have port level mTLS",
		}},
		{"port range", peerAuthDoc("  selector: {matchLabels: {app: a}}\n  portLevelMtls: {\"0\": {mode: STRICT}, \"70000\": {mode: STRICT}}\n"), []string{
			"spec.portLevelMtls[0]: Invalid value: 0: port must be between 1-65535",
			"spec.portLevelMtls[70000]: Invalid value: 70000: port must be between 1-65535",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, tt.doc)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

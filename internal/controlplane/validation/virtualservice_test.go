package validation

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestVirtualServiceHTTPRoute checks the HTTPRoute rules of Istio's
// validateHTTPRoute that issue 3 serves: each case's errors by field path,
// each with a word of Istio's message.
func TestVirtualServiceHTTPRoute(t *testing.T) {
	const route = "    route: [{destination: {host: reviews}}]\n"
	type fieldErr struct{ field, msg string } // msg: a substring of the message
	tests := []struct {
		name string
		http string // the spec.http list
		want []fieldErr
	}{
		{"redirect and directResponse accepted", `  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: example.com, port: 8443, scheme: https, redirectCode: 308}
  - match: [{uri: {prefix: /p}}]
    redirect: {prefixRewrite: /q, derivePort: FROM_REQUEST_PORT}
  - directResponse: {status: 418, body: {string: teapot}}
`, nil},
		{"redirect with route", "  - redirect: {uri: /x}\n" + route,
			[]fieldErr{{"spec.http[0]", "only one of route, redirect"}}},
		{"redirect with directResponse", "  - redirect: {uri: /x}\n    directResponse: {status: 200}\n",
			[]fieldErr{{"spec.http[0]", "only one of route, redirect"}}},
		{"redirect with rewrite and fault", "  - redirect: {uri: /x}\n    rewrite: {uri: /y}\n    fault: {abort: {httpStatus: 500}}\n",
			[]fieldErr{{"spec.http[0].fault", "both fault and redirect"}, {"spec.http[0].rewrite", "both rewrite and redirect"}}},
		{"redirect with nothing to redirect to", "  - redirect: {redirectCode: 302}\n",
			[]fieldErr{{"spec.http[0].redirect", "redirect must specify"}}},
		{"redirect uri and prefixRewrite", "  - redirect: {uri: /a, prefixRewrite: /b}\n",
			[]fieldErr{{"spec.http[0].redirect", "only one of uri or prefixRewrite"}}},
		{"redirect code not 3xx", "  - redirect: {uri: /a, redirectCode: 200}\n",
			[]fieldErr{{"spec.http[0].redirect.redirectCode", "must be 3xx"}}},
		{"redirect code Envoy cannot send", "  - redirect: {uri: /a, redirectCode: 304}\n",
			[]fieldErr{{"spec.http[0].redirect.redirectCode", "Unsupported value: 304"}}},
		{"redirect scheme and port", "  - redirect: {scheme: ftp, port: 70000}\n",
			[]fieldErr{{"spec.http[0].redirect.scheme", `must be "http" or "https"`}, {"spec.http[0].redirect.port", "1-65535"}}},
		{"directResponse status", "  - directResponse: {status: 700}\n",
			[]fieldErr{{"spec.http[0].directResponse.status", "between 200 and 599"}}},
		{"rewrite accepted", "  - rewrite: {uri: /v2, authority: new.example.com}\n" + route +
			"  - rewrite: {uriRegexRewrite: {match: \"^/a/(.*)\", rewrite: \"/b/\\\\1\"}}\n" + route, nil},
		{"rewrite uri and regex", "  - rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}\n" + route,
			[]fieldErr{{"spec.http[0].rewrite", "only contain one of uri or uriRegexRewrite"}}},
		{"rewrite empty", "  - rewrite: {}\n" + route,
			[]fieldErr{{"spec.http[0].rewrite", "at least one of uri, uriRegexRewrite or authority"}}},
		{"rewrite bad regex", "  - rewrite: {uriRegexRewrite: {match: \"(\", rewrite: b}}\n" + route,
			[]fieldErr{{"spec.http[0].rewrite.uriRegexRewrite.match", "not an RE2 regular expression"}}},
		{"regex too large", "  - match: [{uri: {regex: \"/a" + strings.Repeat("b", 1023) + "\"}}]\n" + route +
			"  - match: [{uri: {regex: \"/" + strings.Repeat("b", 1023) + "\"}}]\n    rewrite: {uriRegexRewrite: {match: \"/" + strings.Repeat("c", 1024) + "\", rewrite: b}}\n" + route,
			[]fieldErr{{"spec.http[0].match[0].uri.regex", "regex is too large (1025 bytes), max length allowed is 1024"},
				{"spec.http[1].rewrite.uriRegexRewrite.match", "regex is too large (1025 bytes), max length allowed is 1024"}}},
		{"rewrite regex without rewrite", "  - rewrite: {uriRegexRewrite: {match: a}}\n" + route,
			[]fieldErr{{"spec.http[0].rewrite.uriRegexRewrite.rewrite", "requires both rewrite and match"}}},
		{"authority rewritten twice", "  - rewrite: {authority: a.example.com}\n    headers: {request: {set: {host: b.example.com}}}\n" + route,
			[]fieldErr{{"spec.http[0].headers.request.set[host]", "authority header cannot be set multiple times"}}},
		{"headers accepted", `  - headers:
      request: {set: {x-a: "1", ":authority": a.example.com}, add: {x-b: "2"}, remove: [x-c]}
      response: {set: {x-d: "3"}, add: {x-e: "4"}, remove: [x-f]}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
      headers: {request: {set: {x-g: "5"}}, response: {remove: [x-h]}}
    - destination: {host: reviews, subset: v2}
      weight: 50
`, nil},
		{"invalid header names", `  - headers:
      request: {set: {"bad header": x}, remove: [":path"]}
      response: {set: {":status": "200"}, add: {host: x}}
    route:
    - destination: {host: reviews}
      headers: {request: {remove: ["a b"]}}
`, []fieldErr{
			{"spec.http[0].route[0].headers.request.remove[0]", "invalid header name"},
			{"spec.http[0].headers.request.set[bad header]", "invalid header name"},
			{"spec.http[0].headers.request.remove[0]", "pseudo-headers and host cannot be modified"},
			{"spec.http[0].headers.response.set[:status]", "pseudo-headers and host cannot be modified"},
			{"spec.http[0].headers.response.add[host]", "pseudo-headers and host cannot be modified"},
		}},
		{"mirror accepted", "  - mirror: {host: ratings}\n    mirrorPercentage: {value: 12.5}\n" + route, nil},
		{"mirrors accepted", "  - mirrors: [{destination: {host: details}, percentage: {value: 0}}, {destination: {host: ratings}}]\n" + route, nil},
		{"mirror and mirrors", "  - mirror: {host: ratings}\n    mirrors: [{destination: {host: details}}]\n" + route,
			[]fieldErr{{"spec.http[0].mirrors", "cannot contain both mirror and mirrors"}}},
		{"mirrorPercentage out of range", "  - mirror: {host: ratings}\n    mirrorPercentage: {value: 101}\n" + route,
			[]fieldErr{{"spec.http[0].mirrorPercentage.value", "between 0 and 100"}}},
		{"mirrors percentage out of range", "  - mirrors: [{destination: {host: details}, percentage: {value: -1}}]\n" + route,
			[]fieldErr{{"spec.http[0].mirrors[0].percentage.value", "between 0 and 100"}}},
		{"directResponse with fault and rewrite", "  - directResponse: {status: 200}\n    fault: {abort: {httpStatus: 500, percentage: {value: 1}}}\n    rewrite: {uri: /x}\n",
			[]fieldErr{{"spec.http[0].fault", "directResponse cannot be used with fault"}, {"spec.http[0].rewrite", "directResponse cannot be used with rewrite"}}},
		{"header values", "  - headers:\n      request:\n        set: {x-a: \"100%%\", x-b: \"%DOWNSTREAM_REMOTE_ADDRESS%\"}\n      response:\n        add: {x-c: \"50%\"}\n" + route,
			[]fieldErr{{"spec.http[0].headers.request.set[x-b]", "%DOWNSTREAM_REMOTE_ADDRESS% is not supported"}, {"spec.http[0].headers.response.add[x-c]", "lone % must be written %%"}}},
		{"cors any method", "  - corsPolicy: {allowOrigins: [{exact: \"*\"}], allowMethods: [\"*\"]}\n" + route, nil},
		{"mirrors without destination", "  - mirrors: [{percentage: {value: 5}}]\n" + route,
			[]fieldErr{{"spec.http[0].mirrors[0].destination", "destination is required for mirrors"}}},
		{"corsPolicy accepted", `  - corsPolicy:
      allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\.example\\.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a, "*"]
      exposeHeaders: [x-b]
      maxAge: 86400s
      allowCredentials: true
      unmatchedPreflights: IGNORE
` + route, nil},
		{"corsPolicy invalid", `  - corsPolicy:
      allowOrigins: [{exact: ""}, {regex: "("}]
      allowMethods: [FETCH]
      allowHeaders: ["a b"]
      maxAge: 1.5s
` + route, []fieldErr{
			{"spec.http[0].corsPolicy.allowOrigins[0]", "not a valid match type for CORS allow origins"},
			{"spec.http[0].corsPolicy.allowOrigins[1].regex", "not an RE2 regular expression"},
			{"spec.http[0].corsPolicy.allowMethods[0]", "not a supported HTTP method"},
			{"spec.http[0].corsPolicy.allowHeaders[0]", "invalid header name"},
			{"spec.http[0].corsPolicy.maxAge", "seconds precision"},
		}},
		{"retries with zero attempts and a perTryTimeout", "  - retries: {attempts: 0, perTryTimeout: 1s}\n" + route,
			[]fieldErr{{"spec.http[0].retries", "attempts are set to 0"}}},
		{"retries with zero attempts and retryOn", "  - retries: {attempts: 0, retryOn: 5xx}\n" + route,
			[]fieldErr{{"spec.http[0].retries", "attempts are set to 0"}}},
		{"retries with zero attempts alone disable", "  - retries: {attempts: 0}\n" + route, nil},
		{"retries gRPC conditions and remote localities", "  - retries: {attempts: 3, retryOn: \"cancelled,deadline-exceeded,internal,resource-exhausted,unavailable\", retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 0.025s}\n" + route, nil},
		{"weights out of range", "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 120}\n    - {destination: {host: reviews, subset: v2}, weight: -20}\n",
			[]fieldErr{{"spec.http[0].route[1].weight", "must not be negative"}}},
		// Weights are relative, as in Istio: 1/1 is an even split,
		// and one destination may carry any weight.
		{"relative weights", "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 1}\n    - {destination: {host: reviews, subset: v2}, weight: 1}\n" +
			"  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 33}\n    - {destination: {host: reviews, subset: v2}, weight: 33}\n    - {destination: {host: reviews, subset: v1}, weight: 33}\n" +
			"  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 50}\n", nil},
		{"match fields accepted", `  - match:
    - uri: {prefix: /a}
      scheme: {exact: http}
      method: {exact: GET}
      authority: {prefix: reviews}
      headers: {end-user: {exact: jason}}
      withoutHeaders: {x-debug: {}}
      queryParams: {v: {regex: "[0-9]+"}}
      port: 9080
      sourceLabels: {app: productpage}
      sourceNamespace: default
      gateways: [mesh, istio-system/ingress]
      ignoreUriCase: true
` + route, nil},
		// Istio's JWT claim routing (jwt-route task): "." or "[]"
		// separated claim paths, the prefix in any case.
		{"JWT claim matches accepted", `  - match:
    - headers:
        "@request.auth.claims.groups": {exact: group1}
        "@request.auth.claims.nested.key1": {prefix: v}
        "@Request.Auth.Claims[dotted.name][KEY2]": {regex: "a.*"}
      withoutHeaders:
        "@request.auth.claims.groups": {exact: group2}
` + route, nil},
		{"JWT claim matches refused", `  - match:
    - headers:
        "@request.auth.claims.": {exact: a}
        "@request.auth.claims[a][]": {exact: a}
        "@request.auth.claims.a..b": {exact: a}
        "@request.auth.claims.present": {}
        "@request.auth.claims.prefix": {prefix: ""}
        "@request.auth.claims.regex": {regex: "("}
        "@request.auth.claims": {exact: a}
        "@request.auth.claims[a": {exact: a}
      withoutHeaders:
        "@request.auth.claims.b": {}
` + route, []fieldErr{
			{"spec.http[0].match[0].headers[@request.auth.claims]", "invalid header name"},
			{"spec.http[0].match[0].headers[@request.auth.claims.]", "claim name must not be empty"},
			{"spec.http[0].match[0].headers[@request.auth.claims.a..b]", "claim name must not be empty"},
			{"spec.http[0].match[0].headers[@request.auth.claims.prefix].prefix", "empty prefix"},
			{"spec.http[0].match[0].headers[@request.auth.claims.present]", "must set exact, prefix or regex"},
			{"spec.http[0].match[0].headers[@request.auth.claims.regex].regex", "not an RE2 regular expression"},
			{"spec.http[0].match[0].headers[@request.auth.claims[a]", "invalid header name"},
			{"spec.http[0].match[0].headers[@request.auth.claims[a][]]", "claim name must not be empty"},
			{"spec.http[0].match[0].withoutHeaders[@request.auth.claims.b]", "must set exact, prefix or regex"},
		}},
		{"match sourceNamespace and port", "  - match: [{sourceNamespace: Not_A_Label, port: 70000}]\n" + route,
			[]fieldErr{{"spec.http[0].match[0].port", "1-65535"}, {"spec.http[0].match[0].sourceNamespace", "DNS-1123 label"}}},
		// Istio validates no statPrefix value; loomd serves it as the
		// Envoy route's stat_prefix.
		{"match statPrefix is accepted", "  - match: [{uri: {prefix: /a}, statPrefix: reviews-a}, {uri: {prefix: /b}}]\n" + route, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := vsHead + "  http:\n" + tt.http
			if strings.Contains(tt.http, "subset:") {
				doc += reviewsSubsets
			}
			got := fieldErrors(t, doc)
			var gotFields []string
			for _, g := range got {
				field, _, _ := strings.Cut(g, ": ")
				gotFields = append(gotFields, field)
			}
			var wantFields []string
			for _, w := range tt.want {
				wantFields = append(wantFields, w.field)
			}
			if diff := cmp.Diff(wantFields, gotFields); diff != "" {
				t.Fatalf("error fields (-want +got):\n%s\nerrors: %q", diff, got)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w.msg) {
					t.Errorf("error %q does not say %q", got[i], w.msg)
				}
			}
		})
	}
}

// reviewsSubsets defines the subsets the cases route to.
const reviewsSubsets = `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// TestVirtualServiceHosts checks Istio's rules on a VirtualService's hosts:
// "*" is refused when the mesh gateway applies (no gateways, or "mesh"
// among them), and a host matching another of the list (equal, or under
// its wildcard) is a duplicate.
func TestVirtualServiceHosts(t *testing.T) {
	const head = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
	const route = "  http:\n  - route: [{destination: {host: reviews}}]\n"
	tests := []struct {
		name, spec string
		want       []string
	}{
		{"* on a gateway", "  hosts: [\"*\"]\n  gateways: [ingress]\n", nil},
		{"* on the mesh", "  hosts: [\"*\"]\n", []string{
			`spec.hosts[0]: Invalid value: "*": wildcard host * is not allowed for virtual services bound to the mesh gateway`}},
		{"* on the mesh and a gateway", "  hosts: [\"*\"]\n  gateways: [ingress, mesh]\n", []string{
			`spec.hosts[0]: Invalid value: "*": wildcard host * is not allowed for virtual services bound to the mesh gateway`}},
		{"distinct hosts", "  hosts: [a.foo.com, b.foo.com, \"*.bar.com\", foo.com]\n", nil},
		{"duplicates", "  hosts: [\"*.foo.com\", a.foo.com, reviews, reviews, \"*.b.foo.com\"]\n", []string{
			`spec.hosts[1]: Duplicate value: "a.foo.com": duplicate hosts in virtual service: *.foo.com & a.foo.com`,
			`spec.hosts[4]: Duplicate value: "*.b.foo.com": duplicate hosts in virtual service: *.foo.com & *.b.foo.com`,
			`spec.hosts[3]: Duplicate value: "reviews": duplicate hosts in virtual service: reviews & reviews`,
		}},
		{"* covers every other host on a gateway", "  hosts: [\"*\", a.com]\n  gateways: [ingress]\n", []string{
			`spec.hosts[1]: Duplicate value: "a.com": duplicate hosts in virtual service: * & a.com`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, head+tt.spec+route)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

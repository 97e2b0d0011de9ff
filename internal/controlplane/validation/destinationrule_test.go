package validation

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// drDoc is a DestinationRule for reviews whose spec continues with body.
func drDoc(body string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n  host: reviews\n" + body
}

func TestDestinationRuleTrafficPolicy(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"circuit breaking task", `  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 180s, maxEjectionPercent: 100}
`, nil},
		{"consistent hash kinds and sizes", `  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 10s}, ringHash: {minimumRingSize: 1024}}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}
`, nil},
		{"httpCookie attributes", `  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          ttl: 10s
          attributes: [{name: SameSite, value: Lax}, {name: Secure}, {name: "Same Site"}, {name: Domain, value: "a; Secure"}]
`, []string{
			`spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[2].name: Invalid value: "Same Site": must be a non-empty token`,
			`spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[3].value: Invalid value: "a; Secure": must be a header value without ';'`,
		}},
		{"PASSTHROUGH", "  trafficPolicy:\n    loadBalancer: {simple: PASSTHROUGH}\n", nil},
		{"tunnel and proxyProtocol", `  trafficPolicy:
    tunnel: {protocol: CONNECT, targetHost: api.example.com, targetPort: 443}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 5432}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      proxyProtocol: {version: V2}
`, nil},
		{"tunnel target host and proxyProtocol together", `  trafficPolicy:
    tunnel: {targetHost: "bad_host", targetPort: 443}
    proxyProtocol: {}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tunnel: {targetHost: 1.2.3, targetPort: 443}
`, []string{
			"spec.trafficPolicy: Invalid value: tunnel and proxyProtocol must not be set together",
			`spec.trafficPolicy.tunnel.targetHost: Invalid value: "bad_host": must be a valid FQDN or IP address: domain name label "bad_host" is not a DNS-1123 label`,
			`spec.subsets[0].trafficPolicy.tunnel.targetHost: Invalid value: "1.2.3": must be a valid FQDN or IP address: top level domain "3" cannot be all-numeric`,
		}},
		{"tls credentialName", `  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client-cred}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: SIMPLE, credentialName: client-cred, caCertificates: /ca.pem}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: MUTUAL, credentialName: other/client-cred}
`, []string{
			`spec.subsets[0].trafficPolicy.tls.credentialName: Invalid value: "client-cred": cannot specify client certificates or CA certificate if credentialName is set`,
			`spec.subsets[1].trafficPolicy.tls.credentialName: Invalid value: "other/client-cred": a credential in another namespace is ` + Unsupported + ` (the Secret must be in the proxy's namespace)`,
		}},
		{"useClientProtocol", "  trafficPolicy:\n    connectionPool:\n      http: {useClientProtocol: true}\n", nil},
		{"ring and table sizes", `  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, minimumRingSize: 8388609}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 9000000}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65536}}
`, []string{
			"spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: Invalid value: 8388609: must be at most 8388608",
			"spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize: Invalid value: 9000000: must be at most 8388608",
			"spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: Invalid value: 65536: must be a prime number less than 5000011",
		}},
		{"ranges and durations", `  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 0s, tcpKeepalive: {time: 0.5s, interval: 10s}}
      http: {maxRetries: -1}
    outlierDetection: {maxEjectionPercent: 101, minHealthPercent: -1, interval: 0s}
`, []string{
			"spec.trafficPolicy.connectionPool.tcp.connectTimeout: Invalid value: 0s: duration must be positive",
			"spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time: Invalid value: 500ms: must be at least 1s",
			"spec.trafficPolicy.connectionPool.http.maxRetries: Invalid value: -1: must not be negative",
			"spec.trafficPolicy.outlierDetection.interval: Invalid value: 0s: duration must be positive",
			"spec.trafficPolicy.outlierDetection.maxEjectionPercent: Invalid value: 101: must be between 0 and 100",
			"spec.trafficPolicy.outlierDetection.minHealthPercent: Invalid value: -1: must be between 0 and 100",
		}},
		{"retryBudget", `  trafficPolicy:
    retryBudget: {percent: 25, minRetryConcurrency: 2, budgetInterval: 0s}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      retryBudget: {percent: 101, budgetInterval: 10s}
`, []string{
			"spec.subsets[0].trafficPolicy.retryBudget.percent: Invalid value: 101: must be between 0 and 100",
			"spec.subsets[0].trafficPolicy.retryBudget.budgetInterval: " + Unsupported + " (only 0s: the budget counts the requests outstanding now)",
		}},
		{"http2KeepAlive", `  trafficPolicy:
    connectionPool:
      http: {http2KeepAlive: {interval: 30s, timeout: 5s}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool:
        http: {http2KeepAlive: {interval: 0s}}
`, []string{
			"spec.subsets[0].trafficPolicy.connectionPool.http.http2KeepAlive.interval: Invalid value: 0s: duration must be positive",
			"spec.subsets[0].trafficPolicy.connectionPool.http.http2KeepAlive.timeout: Required value",
		}},
		{"fields the proxy does not serve", `  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      zoneAwareLbSetting: {enabled: true}
    outlierDetection: {consecutive5xxErrors: 3, failurePercentageThreshold: 50, outlierDetectionHttpErrorCodes: [500, 503]}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        backendUtilization: {}
`, []string{
			"spec.trafficPolicy.loadBalancer.zoneAwareLbSetting: " + Unsupported + " (use localityLbSetting)",
			"spec.trafficPolicy.outlierDetection.failurePercentageThreshold: " + Unsupported + " (only consecutive-error ejection is)",
			"spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes: " + Unsupported + " (5xx responses are the errors)",
			"spec.subsets[0].trafficPolicy.loadBalancer.backendUtilization: " + Unsupported,
		}},
		{"useClientProtocol with UPGRADE", "  trafficPolicy:\n    connectionPool:\n      http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}\n", []string{
			"spec.trafficPolicy.connectionPool.http.useClientProtocol: Invalid value: use client protocol must not be true when H2UpgradePolicy is UPGRADE",
		}},
		{"consistentHash minimumRingSize with an algorithm, maglev tableSize", `  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, minimumRingSize: 1024, ringHash: {minimumRingSize: 1024}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, maglev: {}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 5000011}}
`, []string{
			"spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: Invalid value: only one of minimumRingSize or maglev/ringHash can be specified",
			"spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: Required value: tableSize must be set for maglev",
			"spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: Invalid value: 5000011: must be a prime number less than 5000011",
		}},
		{"localityLbSetting distribute", `  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-east/*
          to: {"us-east/zone1/*": 80, "us-west/zone1": 20}
        - from: us-east/zone1
          to: {"us-east/zone1": 0, "us-west": 100}
        - from: "*/zone1"
          to: {"us-east//sub": 60, "us-*/z": 40}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        localityLbSetting:
          distribute:
          - from: "*"
            to: {"us-east": 101}
          - from: us-west
            to: {"us-east": 50, "us-east/zone1": 50}
`, []string{
			`spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[1].to[us-east/zone1]: Invalid value: 0: locality weight must be in range [1, 100]`,
			`spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[2].to[us-*/z]: Invalid value: "us-*/z": locality wildcard '*' can appear only once, at the end`,
			`spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[2].to[us-east//sub]: Invalid value: "us-east//sub": locality must not contain an empty region, zone or subzone`,
			`spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[1].from: Invalid value: "us-east/zone1": locality overlaps with previously specified ones`,
			`spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[2].from: Invalid value: "*/zone1": locality wildcard '*' can appear only once, at the end`,
			`spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[us-east]: Invalid value: 101: locality weight must be in range [1, 100]`,
			`spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting.distribute[1].to[us-east/zone1]: Invalid value: "us-east/zone1": locality overlaps with previously specified ones`,
			`spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting.distribute[1].from: Invalid value: "us-west": locality overlaps with previously specified ones`,
		}},
		{"localityLbSetting failover", `  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
    loadBalancer:
      localityLbSetting:
        failover: [{from: us-east, to: us-east}, {from: us-east/zone1, to: us-west}, {from: "us-*", to: eu-west}]
        failoverPriority: [topology.kubernetes.io/zone, app]
`, []string{
			`spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[0]: Invalid value: "topology.kubernetes.io/zone": can not simultaneously set 'failover' and a topology label in 'failoverPriority'`,
			`spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: Invalid value: "us-east": locality lb failover settings must specify different regions`,
			`spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1]: Invalid value: from "us-east/zone1" to "us-west": locality lb failover must only specify regions`,
			`spec.trafficPolicy.loadBalancer.localityLbSetting.failover[2]: Invalid value: from "us-*" to "eu-west": locality lb failover region should not contain '*' wildcard`,
		}},
		{"localityLbSetting without outlierDetection", `  trafficPolicy:
    loadBalancer:
      localityLbSetting: {failover: [{from: us-east, to: us-west}]}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        localityLbSetting: {enabled: true}
`, []string{
			"spec.trafficPolicy.loadBalancer.localityLbSetting: Required value: outlierDetection must be set with localityLbSetting, or traffic never fails over",
			"spec.trafficPolicy.portLevelSettings[0].loadBalancer.localityLbSetting: Required value: outlierDetection must be set with localityLbSetting, or traffic never fails over",
		}},
		{"localityLbSetting with outlierDetection, inherited by a subset, or disabled", `  trafficPolicy:
    loadBalancer:
      localityLbSetting: {failover: [{from: us-east, to: us-west}]}
    outlierDetection: {consecutive5xxErrors: 3}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        localityLbSetting: {enabled: false}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        localityLbSetting: {enabled: true}
`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, drDoc(tt.body))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConsistentHashWithSimple: Istio's schema makes simple and
// consistentHash a oneof, so a document with both never decodes; the error
// names the loadBalancer that sets both.
func TestConsistentHashWithSimple(t *testing.T) {
	const both = "loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}"
	tests := []struct{ name, body, wantPath string }{
		{"trafficPolicy", "  trafficPolicy:\n    " + both + "\n", "spec.trafficPolicy.loadBalancer"},
		{"subset", "  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      " + both + "\n",
			"spec.subsets[1].trafficPolicy.loadBalancer"},
		{"portLevelSettings", "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 9080}\n      " + both + "\n",
			"spec.trafficPolicy.portLevelSettings[0].loadBalancer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := config.Decode("in.yaml", []byte(drDoc(tt.body)))
			want := "in.yaml:1: DestinationRule default/reviews: " + tt.wantPath +
				": Invalid value: consistentHash and simple are both set: only one of simple, consistentHash or backendUtilization may be set"
			if err := errs.Err(); err == nil || err.Error() != want {
				t.Fatalf("decode error = %v, want %s", err, want)
			}
		})
	}
}

// An empty (null) member sets nothing: protojson skips it and Istio
// accepts `simple:` left blank beside consistentHash (a commented-out
// value, an empty Helm value).
func TestOneofNullMemberIsUnset(t *testing.T) {
	body := "  trafficPolicy:\n    loadBalancer:\n      simple:\n      consistentHash: {httpHeaderName: x-user}\n"
	rs, errs := config.Decode("in.yaml", []byte(drDoc(body)))
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(rs) != 1 {
		t.Fatalf("%d resources", len(rs))
	}
}

package validation

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// sidecarDoc is a Sidecar "s" in namespace default whose spec is body.
func sidecarDoc(body string) string {
	return "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: default}\nspec:\n" + body
}

func TestSidecar(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"istio's namespace-scoped default", sidecarDoc(`  egress:
  - hosts: ["./*", "istio-system/*", "*/*.example.com", "~/*", "prod/reviews.prod.svc.cluster.local"]
`), nil},
		{"selector, ingress defaultEndpoints and outbound policy", sidecarDoc(`  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9081, protocol: HTTP}
    defaultEndpoint: 0.0.0.0:8081
  - port: {number: 9082, protocol: GRPC}
    defaultEndpoint: "[::1]:8082"
    captureMode: NONE
  - port: {number: 9083, protocol: TCP}
    captureMode: IPTABLES
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`), nil},
		{"egressProxy under ALLOW_ANY", sidecarDoc(`  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.example.com, subset: v1, port: {number: 3128}}
`), nil},
		{"empty", sidecarDoc("  workloadSelector: {labels: {app: a}}\n"),
			[]string{"spec: Invalid value: sidecar: empty configuration provided"}},
		{"egress hosts", sidecarDoc(`  egress:
  - hosts: ["reviews.default.svc.cluster.local", "/x.com", "Bad_NS/x.com", "./reviews", "*/foo*.com", "*/a..b", "./*.*.com"]
`), []string{
			`spec.egress[0].hosts[0]: Invalid value: "reviews.default.svc.cluster.local": host must be of form namespace/dnsName`,
			`spec.egress[0].hosts[1]: Invalid value: "/x.com": config namespace and dnsName in host entry cannot be empty`,
			`spec.egress[0].hosts[2]: Invalid value: "Bad_NS/x.com": invalid namespace value "Bad_NS" in sidecar`,
			`spec.egress[0].hosts[3]: Invalid value: "./reviews": short names (non FQDN) are not allowed`,
			`spec.egress[0].hosts[4]: Invalid value: "*/foo*.com": partial wildcard "foo*.com" not allowed`,
			`spec.egress[0].hosts[5]: Invalid value: "*/a..b": domain name label "" is not a DNS-1123 label`,
			`spec.egress[0].hosts[6]: Invalid value: "./*.*.com": partial wildcard "*.*.com" not allowed`,
		}},
		{"egress listeners without port", sidecarDoc(`  egress:
  - hosts: ["./*"]
  - hosts: ["*/*"]
  - hosts: []
`), []string{
			"spec.egress[0]: Invalid value: sidecar: the egress listener with empty port should be the last listener in the list",
			"spec.egress[1]: Invalid value: sidecar: egress can have only one listener with empty port",
			"spec.egress[2]: Invalid value: sidecar: egress can have only one listener with empty port",
			"spec.egress[2].hosts: Required value: sidecar: egress listener must contain at least one host",
		}},
		{"egress port, bind and captureMode are served", sidecarDoc(`  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
  - port: {number: 3306, protocol: TCP, name: tcp}
    captureMode: IPTABLES
    hosts: ["./*"]
  - port: {number: 3307, protocol: TCP, name: tcp-none}
    captureMode: NONE
    hosts: ["./*"]
  - captureMode: IPTABLES
    hosts: ["*/*"]
`), nil},
		{"HTTP_PROXY on egress and ingress ports, as Istio's ValidateProtocol", sidecarDoc(`  egress:
  - port: {number: 15080, protocol: HTTP_PROXY, name: http-proxy}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
  ingress:
  - port: {number: 9080, protocol: HTTP_PROXY, name: http}
    defaultEndpoint: 127.0.0.1:8080
`), nil},
		{"egress listener without port: bind and captureMode NONE are served", sidecarDoc(`  egress:
  - bind: 127.0.0.1
    captureMode: NONE
    hosts: ["*/*"]
`), nil},
		{"egress port, bind and captureMode values", sidecarDoc(`  egress:
  - port: {number: 9080, protocol: HTTP}
    bind: not-an-ip
    hosts: ["./*"]
  - port: {number: 9080, protocol: TCP}
    bind: unix:///var/run/egress.sock
    hosts: ["./*"]
  - port: {number: 0, protocol: SMTP, name: Bad_Name}
    hosts: ["./*"]
`), []string{
			`spec.egress[0].bind: Invalid value: "not-an-ip": not-an-ip is not a valid IP`,
			"spec.egress[1].port.number: Duplicate value: 9080: sidecar: ports on IP bound listeners must be unique",
			`spec.egress[1].bind: Invalid value: "unix:///var/run/egress.sock": unix:///var/run/egress.sock is not a valid IP`,
			`spec.egress[2].port.name: Invalid value: "Bad_Name": port name must be a DNS-1123 label`,
			`spec.egress[2].port.protocol: Unsupported value: "SMTP": supported protocols are ` + protocolList,
			`spec.egress[2].bind: Invalid value: "": sidecar: ports with 0 value must have a unix domain socket bind address`,
		}},
		{"unix domain socket egress listeners", sidecarDoc(`  egress:
  - port: {number: 0, protocol: HTTP, name: http-uds}
    bind: unix:///var/run/egress.sock
    hosts: ["./*"]
  - port: {number: 0, protocol: GRPC}
    bind: unix://@egress-grpc
    captureMode: NONE
    hosts: ["./*"]
  - hosts: ["*/*"]
`), nil},
		{"unix domain socket egress listener values", sidecarDoc(`  egress:
  - port: {number: 0, protocol: HTTP}
    bind: unix://var/run/egress.sock
    captureMode: IPTABLES
    hosts: ["./*"]
  - port: {number: 0, protocol: HTTP}
    bind: unix:///var/run/a.sock
    hosts: ["./*"]
  - port: {number: 0, protocol: HTTP}
    bind: unix:///var/run/a.sock
    hosts: ["./*"]
  - port: {number: 0, protocol: TCP}
    bind: "unix://"
    hosts: ["./*"]
  - port: {number: 0, protocol: HTTP}
    bind: 127.0.0.1
    hosts: ["./*"]
  - bind: unix:///var/run/catch-all.sock
    hosts: ["./*"]
`), []string{
			`spec.egress[0].bind: Invalid value: "unix://var/run/egress.sock": var/run/egress.sock is not an absolute path to a file`,
			`spec.egress[0].captureMode: Invalid value: "IPTABLES": sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners`,
			`spec.egress[2].bind: Duplicate value: "unix:///var/run/a.sock": sidecar: unix domain socket values for listeners must be unique`,
			`spec.egress[3].bind: Invalid value: "unix://": unix address must not be empty`,
			`spec.egress[3].port.protocol: ` + Unsupported + `: "TCP" on a unix domain socket listener (supported: HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB)`,
			`spec.egress[4].bind: Invalid value: "127.0.0.1": sidecar: ports with 0 value must have a unix domain socket bind address`,
			`spec.egress[5].bind: Invalid value: "unix:///var/run/catch-all.sock": unix:///var/run/catch-all.sock is not a valid IP`,
		}},
		{"ingress listeners", sidecarDoc(`  ingress:
  - port: {number: 9080, protocol: HTTP, name: Http_1}
    defaultEndpoint: 10.0.0.1:8080
  - port: {number: 9080, protocol: SMTP, targetPort: 1}
    defaultEndpoint: 127.0.0.1:http
  - port: {number: 0, protocol: HTTP}
    defaultEndpoint: 127.0.0.1:70000
  - defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9090, protocol: HTTP}
    defaultEndpoint: 127.0.0.1
`), []string{
			`spec.ingress[0].port.name: Invalid value: "Http_1": port name must be a DNS-1123 label`,
			`spec.ingress[0].defaultEndpoint: Invalid value: "10.0.0.1:8080": sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset`,
			`spec.ingress[1].port.protocol: Unsupported value: "SMTP": supported protocols are ` + protocolList,
			"spec.ingress[1].port.targetPort: Invalid value: 1: targetPort has no impact on Sidecars",
			"spec.ingress[1].port.number: Duplicate value: 9080: sidecar: ports on IP bound listeners must be unique",
			`spec.ingress[1].defaultEndpoint: Invalid value: "127.0.0.1:http": sidecar: defaultEndpoint port (http) is not a number`,
			"spec.ingress[2].port.number: Invalid value: 0: port must be between 1-65535",
			`spec.ingress[2].defaultEndpoint: Invalid value: "127.0.0.1:70000": port must be between 1-65535`,
			"spec.ingress[3].port: Required value: sidecar: port is required for ingress listeners",
			`spec.ingress[4].defaultEndpoint: Invalid value: "127.0.0.1": sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset`,
		}},
		{"connection pools", sidecarDoc(`  inboundConnectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 1024}}
  ingress:
  - port: {number: 9080, protocol: HTTP}
    connectionPool: {tcp: {maxConnections: 1, connectTimeout: 1s}, http: {http1MaxPendingRequests: 1, idleTimeout: 30s}}
`), nil},
		{"bad connection pools", sidecarDoc(`  inboundConnectionPool: {}
  ingress:
  - port: {number: 9080, protocol: HTTP}
    connectionPool: {tcp: {maxConnections: -1}, http: {http1MaxPendingRequests: -2, idleTimeout: 0s}}
`), []string{
			"spec.inboundConnectionPool: Invalid value: must set either tcp or http settings",
			"spec.ingress[0].connectionPool.tcp.maxConnections: Invalid value: -1: must not be negative",
			"spec.ingress[0].connectionPool.http.http1MaxPendingRequests: Invalid value: -2: must not be negative",
			"spec.ingress[0].connectionPool.http.idleTimeout: Invalid value: 0s: duration must be positive",
		}},
		{"ingress bind", sidecarDoc(`  ingress:
  - port: {number: 9080, protocol: HTTP}
    bind: 0.0.0.0
  - port: {number: 9081, protocol: HTTP}
    bind: 10.0.0.5
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:8081
  - port: {number: 9082, protocol: HTTP}
    bind: "::1"
`), nil},
		{"bad ingress bind", sidecarDoc(`  ingress:
  - port: {number: 9080, protocol: HTTP}
    bind: localhost
  - port: {number: 9081, protocol: HTTP}
    bind: unix:///var/run/app.sock
  - port: {number: 9082, protocol: HTTP}
    bind: 10.0.0.5:80
`), []string{
			`spec.ingress[0].bind: Invalid value: "localhost": localhost is not a valid IP`,
			`spec.ingress[1].bind: Invalid value: "unix:///var/run/app.sock": unix:///var/run/app.sock is not a valid IP`,
			`spec.ingress[2].bind: Invalid value: "10.0.0.5:80": 10.0.0.5:80 is not a valid IP`,
		}},
		{"ingress tls", sidecarDoc(`  ingress:
  - port: {number: 9443, protocol: HTTPS}
    defaultEndpoint: 127.0.0.1:8443
    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, minProtocolVersion: TLSV1_3}
  - port: {number: 9444, protocol: TLS}
    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, subjectAltNames: [client.example.com]}
`), nil},
		{"bad ingress tls", sidecarDoc(`  ingress:
  - port: {number: 9443, protocol: HTTPS}
    tls: {mode: SIMPLE}
  - port: {number: 9444, protocol: TLS}
    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}
  - port: {number: 9445, protocol: HTTPS}
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 9446, protocol: HTTPS}
    tls: {mode: PASSTHROUGH, httpsRedirect: true}
  - port: {number: 9447, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: web-cred, caCrl: /crl.pem, cipherSuites: [NOPE]}
`), []string{
			"spec.ingress[0].tls.serverCertificate: Required value: SIMPLE mode requires a server certificate file",
			"spec.ingress[0].tls.privateKey: Required value: SIMPLE mode requires a private key file",
			"spec.ingress[1].tls.caCertificates: Required value: MUTUAL mode requires a caCertificates file",
			`spec.ingress[2].tls.mode: Unsupported value: "ISTIO_MUTUAL": sidecar ingress tls supports "SIMPLE", "MUTUAL"`,
			`spec.ingress[3].tls.mode: Unsupported value: "PASSTHROUGH": sidecar ingress tls supports "SIMPLE", "MUTUAL"`,
			"spec.ingress[3].tls.httpsRedirect: Invalid value: true: a sidecar ingress listener does not redirect",
			"spec.ingress[4].tls.serverCertificate: Required value: SIMPLE mode requires a server certificate file",
			"spec.ingress[4].tls.privateKey: Required value: SIMPLE mode requires a private key file",
			"spec.ingress[4].tls.credentialName: " + Unsupported + " on a sidecar (use serverCertificate, privateKey and caCertificates files)",
			"spec.ingress[4].tls.caCrl: " + Unsupported,
			`spec.ingress[4].tls.cipherSuites[0]: Unsupported value: "NOPE": supported cipher suites are those of Envoy that Go's crypto/tls has (` + cipherSuiteList + ")",
		}},
		{"unix defaultEndpoints", sidecarDoc(`  ingress:
  - port: {number: 9080, protocol: HTTP}
    defaultEndpoint: unix:///var/run/app.sock
  - port: {number: 9081, protocol: TCP}
    defaultEndpoint: unix://@abstract
`), nil},
		{"bad unix defaultEndpoints", sidecarDoc(`  ingress:
  - port: {number: 9080, protocol: HTTP}
    defaultEndpoint: "unix://"
  - port: {number: 9081, protocol: HTTP}
    defaultEndpoint: unix://var/run/app.sock
  - port: {number: 9082, protocol: HTTP}
    defaultEndpoint: unix:///var/run/
`), []string{
			`spec.ingress[0].defaultEndpoint: Invalid value: "unix://": unix address must not be empty`,
			`spec.ingress[1].defaultEndpoint: Invalid value: "unix://var/run/app.sock": var/run/app.sock is not an absolute path to a file`,
			`spec.ingress[2].defaultEndpoint: Invalid value: "unix:///var/run/": /var/run/ is not an absolute path to a file`,
		}},
		// loom-proxy (as Envoy) NACKs a pipe path over 107 bytes, the
		// length of sockaddr_un's sun_path without its NUL.
		{"unix paths at most 107 bytes", sidecarDoc(`  ingress:
  - port: {number: 9080, protocol: HTTP}
    defaultEndpoint: unix://@` + strings.Repeat("a", 107) + `
  - port: {number: 9081, protocol: HTTP}
    defaultEndpoint: unix:///` + strings.Repeat("b", 106) + `
  egress:
  - port: {number: 0, protocol: HTTP}
    bind: unix:///` + strings.Repeat("c", 107) + `
    hosts: ["./*"]
  - port: {number: 0, protocol: HTTP}
    bind: unix:///` + strings.Repeat("d", 106) + `
    hosts: ["./*"]
`), []string{
			`spec.ingress[0].defaultEndpoint: Invalid value: "unix://@` + strings.Repeat("a", 107) + `": must be at most 107 bytes (a unix socket path)`,
			`spec.egress[0].bind: Invalid value: "unix:///` + strings.Repeat("c", 107) + `": must be at most 107 bytes (a unix socket path)`,
		}},
		// An egress listener on the socket an ingress listener forwards
		// to would take the application's socket, and inbound traffic
		// would come back into the proxy.
		{"egress bind on an ingress defaultEndpoint", sidecarDoc(`  ingress:
  - port: {number: 9080, protocol: HTTP}
    defaultEndpoint: unix:///var/run/app.sock
  - port: {number: 9081, protocol: HTTP}
    defaultEndpoint: unix://@app
  egress:
  - port: {number: 0, protocol: HTTP}
    bind: unix:///var/run/app.sock
    hosts: ["./*"]
  - port: {number: 0, protocol: HTTP}
    bind: unix://@app
    hosts: ["./*"]
  - port: {number: 0, protocol: HTTP}
    bind: unix:///var/run/./app.sock
    hosts: ["./*"]
  - port: {number: 0, protocol: HTTP}
    bind: unix:///var/run/egress.sock
    hosts: ["./*"]
`), []string{
			`spec.egress[0].bind: Invalid value: "unix:///var/run/app.sock": sidecar: the egress listener must not bind the unix domain socket spec.ingress[0].defaultEndpoint forwards inbound traffic to (the application's socket)`,
			`spec.egress[1].bind: Invalid value: "unix://@app": sidecar: the egress listener must not bind the unix domain socket spec.ingress[1].defaultEndpoint forwards inbound traffic to (the application's socket)`,
			`spec.egress[2].bind: Invalid value: "unix:///var/run/./app.sock": sidecar: the egress listener must not bind the unix domain socket spec.ingress[0].defaultEndpoint forwards inbound traffic to (the application's socket)`,
		}},
		{"workloadSelector", sidecarDoc(`  workloadSelector: {labels: {app: "*"}}
  egress: [{hosts: ["./*"]}]
`), []string{"spec.workloadSelector.labels[app]: Invalid value: wildcard is not supported in selector"}},
		{"egressProxy", sidecarDoc(`  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
    egressProxy: {host: proxy.example.com, port: {number: 3128}}
`), []string{
			"spec.outboundTrafficPolicy.egressProxy: Invalid value: sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
		}},
		{"egressProxy without port", sidecarDoc(`  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: proxy.example.com}
`), []string{"spec.outboundTrafficPolicy.egressProxy.port: Required value: sidecar: egress_proxy port must be non-nil"}},
		{"egressProxy wildcard host", sidecarDoc(`  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: "*.example.com", port: {number: 3128}}
`), []string{`spec.outboundTrafficPolicy.egressProxy.host: Invalid value: "*.example.com": domain name label "*" is not a DNS-1123 label`}},
		{"egressProxy bad subset and port", sidecarDoc(`  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: proxy.example.com, subset: "A_b", port: {number: 70000}}
`), []string{
			`spec.outboundTrafficPolicy.egressProxy.subset: Invalid value: "A_b": subset name must be a DNS-1123 label`,
			"spec.outboundTrafficPolicy.egressProxy.port.number: Invalid value: 70000: port must be between 1-65535",
		}},
		{"two namespace-wide sidecars", sidecarDoc("  egress: [{hosts: [\"./*\"]}]\n") + `---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: t, namespace: default}
spec:
  egress: [{hosts: ["*/*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: u, namespace: default}
spec:
  workloadSelector: {labels: {app: a}}
  egress: [{hosts: ["*/*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: v, namespace: prod}
spec:
  egress: [{hosts: ["*/*"]}]
`, []string{
			"spec.workloadSelector: Required value: Sidecar default/s has no workloadSelector either (in.yaml:1): a namespace has at most one Sidecar without workloadSelector",
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

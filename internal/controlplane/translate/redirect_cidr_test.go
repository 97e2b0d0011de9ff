package translate

import (
	"testing"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// cidrDoc has, besides bookinfo, services a transparent sidecar reaches on
// 0.0.0.0_PORT listeners by destination address: db.ext, whose address is
// the range 10.1.0.0/16 (no VIP of its own, resolution NONE); ldap.ext, a
// second range on the same port; and legacy (no address at all), whose
// tcp route sends connections to 192.0.2.0/24 to legacy-b and the rest to
// legacy-a.
const cidrDoc = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.ext]
  addresses: [10.1.0.0/16]
  ports: [{number: 3306, name: tcp-mysql, protocol: TCP}]
  resolution: NONE
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ldap, namespace: default}
spec:
  hosts: [ldap.ext]
  addresses: [10.2.0.0/16, 10.3.0.0/16]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: NONE
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example.com]
  ports: [{number: 5555, name: tcp, protocol: TCP}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{address: 192.0.2.7}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-a, namespace: default}
spec:
  hosts: [legacy-a.example.com]
  addresses: [240.240.1.1]
  ports: [{number: 5555, name: tcp, protocol: TCP}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{address: 198.51.100.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-b, namespace: default}
spec:
  hosts: [legacy-b.example.com]
  addresses: [240.240.1.2]
  ports: [{number: 5555, name: tcp, protocol: TCP}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{address: 198.51.100.2}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example.com]
  tcp:
  - match: [{destinationSubnets: [192.0.2.0/24]}]
    route: [{destination: {host: legacy-b.example.com}}]
  - route: [{destination: {host: legacy-a.example.com}}]
`

// registryOnly makes cidrDoc's namespace REGISTRY_ONLY.
const registryOnly = `---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`

// TestRedirectCIDRServices follows connections to services known by an
// address range, and to a tcp route matching destinationSubnets, on the
// transparent sidecar's 0.0.0.0_PORT listeners: as Istio, a range is the
// filter_chain_match.prefix_ranges of the service's chain, and an address
// no chain claims takes the catch-all (so REGISTRY_ONLY holds).
func TestRedirectCIDRServices(t *testing.T) {
	for _, tt := range []struct {
		name, doc, dst, want string
	}{
		{"in the range", cidrDoc + registryOnly, "10.1.2.3:3306",
			"0.0.0.0_3306/ -> outbound|3306||db.ext"},
		{"in a second service's range", cidrDoc + registryOnly, "10.3.0.9:3306",
			"0.0.0.0_3306/ -> outbound|3306||ldap.ext"},
		{"outside every range, REGISTRY_ONLY", cidrDoc + registryOnly, "203.0.113.9:3306",
			"0.0.0.0_3306/virtualOutbound-catchall-tcp -> BlackHoleCluster"},
		{"outside every range, ALLOW_ANY", cidrDoc, "203.0.113.9:3306",
			"0.0.0.0_3306/virtualOutbound-catchall-tcp -> PassthroughCluster"},
		{"destinationSubnets match", cidrDoc, "192.0.2.7:5555",
			"0.0.0.0_5555/ -> outbound|5555||legacy-b.example.com"},
		{"destinationSubnets miss: the next route", cidrDoc, "203.0.113.9:5555",
			"0.0.0.0_5555/ -> outbound|5555||legacy-a.example.com"},
		{"a VIP on the same port keeps its own listener", cidrDoc, "240.240.1.2:5555",
			"240.240.1.2_5555/ -> outbound|5555||legacy-b.example.com"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := mustGenerate(t, docPushContext(t, tt.doc), redirectSidecar(productpageSidecar()))
			if got := simulateConn(t, r, xdsapi.VirtualOutboundListener, conn{dst: tt.dst}); got != tt.want {
				t.Errorf("tcp to %s:\ngot  %s\nwant %s", tt.dst, got, tt.want)
			}
		})
	}
}

// tlsCIDRDoc has TLS services on a transparent sidecar's 0.0.0.0_8443:
// vault.ext, known by its name and the range 10.9.0.0/16; and api.ext (no
// address), whose tls route sends SNI api.ext to 192.0.2.0/24 to
// api-b.ext.
const tlsCIDRDoc = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vault, namespace: default}
spec:
  hosts: [vault.ext]
  addresses: [10.9.0.0/16]
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: NONE
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.ext, api-b.ext]
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.ext]
  tls:
  - match: [{sniHosts: [api.ext], destinationSubnets: [192.0.2.0/24]}]
    route: [{destination: {host: api-b.ext}}]
`

// TestRedirectTLSCIDR: on 0.0.0.0_PORT, a TLS service's address range and
// a tls route's destinationSubnets narrow their chains by destination
// address (prefix_ranges), as Istio's, instead of being dropped or
// ignored.
func TestRedirectTLSCIDR(t *testing.T) {
	r := mustGenerate(t, docPushContext(t, tlsCIDRDoc+registryOnly), redirectSidecar(productpageSidecar()))
	for _, tt := range []struct {
		dst, sni, want string
	}{
		{"10.9.1.1:8443", "vault.ext", "0.0.0.0_8443/outbound|8443||vault.ext -> outbound|8443||vault.ext"},
		{"203.0.113.9:8443", "vault.ext", "0.0.0.0_8443/virtualOutbound-catchall-tcp -> BlackHoleCluster"},
		{"192.0.2.9:8443", "api.ext", "0.0.0.0_8443/tls.8443.default.api.tls[0].match[0] -> outbound|8443||api-b.ext"},
		{"203.0.113.9:8443", "api.ext", "0.0.0.0_8443/virtualOutbound-catchall-tcp -> BlackHoleCluster"},
	} {
		if got := simulateConn(t, r, xdsapi.VirtualOutboundListener, conn{dst: tt.dst, sni: tt.sni}); got != tt.want {
			t.Errorf("TLS to %s with SNI %s:\ngot  %s\nwant %s", tt.dst, tt.sni, got, tt.want)
		}
	}
}

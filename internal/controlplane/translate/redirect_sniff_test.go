package translate

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// sniffDoc has ports of unknown protocol: a Kubernetes Service pg whose
// one port is unnamed (raw TCP, Postgres say) at cluster IP 10.96.0.30,
// and legacy-db, a ServiceEntry without address whose port's name says
// no protocol, and cache.ext, known by the range 10.5.0.0/16.
const sniffDoc = `apiVersion: v1
kind: Service
metadata: {name: pg, namespace: default}
spec:
  clusterIP: 10.96.0.30
  type: ClusterIP
  selector: {app: pg}
  ports:
  - port: 5432
    targetPort: 5432
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-db, namespace: default}
spec:
  hosts: [legacy-db.example.com]
  ports: [{number: 6000, name: db}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{address: 192.0.2.9}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache, namespace: default}
spec:
  hosts: [cache.ext]
  addresses: [10.5.0.0/16]
  ports: [{number: 7000, name: cache}]
  resolution: NONE
  location: MESH_EXTERNAL
`

// TestRedirectSniffedOutbound: on a port of unknown protocol a
// transparent sidecar sniffs, as Istio's outbound protocol sniffing
// (http_inspector; an HTTP chain on application protocols http/1.1 and
// h2c, TCP chains for the rest), so raw TCP reaches the service instead
// of an HTTP connection manager, and HTTP is still routed by Host.
func TestRedirectSniffedOutbound(t *testing.T) {
	r := mustGenerate(t, docPushContext(t, sniffDoc), redirectSidecar(productpageSidecar()))
	const pg = "outbound|5432||pg.default.svc.cluster.local"
	for _, tt := range []struct {
		name string
		c    conn
		want string
	}{
		{"raw TCP to the cluster IP", conn{dst: "10.96.0.30:5432"}, "10.96.0.30_5432/ -> " + pg},
		{"HTTP to the cluster IP", conn{dst: "10.96.0.30:5432", http: "pg.default.svc.cluster.local:5432"}, "10.96.0.30_5432/ -> " + pg},
		{"HTTP to the cluster IP by short name", conn{dst: "10.96.0.30:5432", http: "pg:5432"}, "10.96.0.30_5432/ -> " + pg},
		{"raw TCP to another address on the port", conn{dst: "203.0.113.9:5432"},
			"0.0.0.0_5432/virtualOutbound-catchall-tcp -> PassthroughCluster"},
		{"HTTP to another address on the port", conn{dst: "203.0.113.9:5432", http: "example.com:5432"}, "0.0.0.0_5432/ -> PassthroughCluster"},
		{"raw TCP to a service without address", conn{dst: "192.0.2.9:6000"}, "0.0.0.0_6000/ -> outbound|6000||legacy-db.example.com"},
		{"HTTP to a service without address", conn{dst: "192.0.2.9:6000", http: "legacy-db.example.com:6000"},
			"0.0.0.0_6000/ -> outbound|6000||legacy-db.example.com"},
		{"raw TCP into a range", conn{dst: "10.5.1.1:7000"}, "0.0.0.0_7000/ -> outbound|7000||cache.ext"},
		{"HTTP into a range is routed by Host", conn{dst: "10.5.1.1:7000", http: "cache.ext:7000"}, "0.0.0.0_7000/ -> outbound|7000||cache.ext"},
		{"HTTP into a range for another Host", conn{dst: "10.5.1.1:7000", http: "other.example:7000"}, "0.0.0.0_7000/ -> PassthroughCluster"},
		{"raw TCP outside the range", conn{dst: "203.0.113.9:7000"}, "0.0.0.0_7000/virtualOutbound-catchall-tcp -> PassthroughCluster"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := simulateConn(t, r, xdsapi.VirtualOutboundListener, tt.c); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}

	got := listenerDigest(r, "10.96.0.30_5432")
	want := []string{
		"listener 10.96.0.30_5432 10.96.0.30:5432",
		"  listener filter envoy.filters.listener.http_inspector",
		`  chain ""`,
		"  filter envoy.filters.network.http_connection_manager",
		"  filter envoy.filters.network.tcp_proxy -> " + pg,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sniffed VIP listener (-want +got):\n%s", diff)
	}
	for _, l := range r.Listeners {
		if l.GetName() != "10.96.0.30_5432" {
			continue
		}
		http := l.GetFilterChains()[0]
		if diff := cmp.Diff([]string{"http/1.1", "h2c"}, http.GetFilterChainMatch().GetApplicationProtocols()); diff != "" {
			t.Errorf("HTTP chain's application_protocols (-want +got):\n%s", diff)
		}
		if got := connectionManager(t, l).GetRds().GetRouteConfigName(); got != "5432" {
			t.Errorf("HTTP chain's route table %q, want 0.0.0.0_5432's \"5432\"", got)
		}
		if l.GetBindToPort() == nil || l.GetBindToPort().GetValue() {
			t.Error("the VIP listener binds its port; want only virtualOutbound's hand-off")
		}
	}
}

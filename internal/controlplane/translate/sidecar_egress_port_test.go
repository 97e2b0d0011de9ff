package translate

import (
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Fixture documents the Sidecar egress tests compose: each ServiceEntry
// ends with its document separator, and productpageSidecarHead opens
// productpage's Sidecar up to its egress list.
const (
	seAPI = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.211}]
---
`
	seTCP = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp, namespace: default}
spec:
  hosts: [tcp.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.212}]
---
`
	seTCPVIP = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcpvip, namespace: default}
spec:
  hosts: [tcpvip.example.com]
  addresses: [240.240.0.8]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.215}]
---
`
	productpageSidecarHead = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
`
)

// egressPortConfig gives productpage a Sidecar whose egress listener on
// port 9080 (bound to 127.0.0.2) imports reviews alone, whose listener on
// TCP port 9000 (bound to 127.0.0.3) imports tcp.example.com and
// tcpvip.example.com (with a VIP) alone, whose
// listener on TLS port 8443 (bound to 127.0.0.4) imports tls.example.com
// and tlsvip.example.com (with a VIP) alone, and whose catch-all listener
// imports ratings (also on 9080), api.example.com (8080), db.example.com
// (TCP 9000), auth.example.com (TLS 8443) and namespace other's
// VirtualService, which would send tcp.example.com to db.example.com and
// tls.example.com and tlsvip.example.com to auth.example.com: a port's
// listener sees neither the catch-all's services nor its VirtualService.
const egressPortConfig = seAPI + seTCP + seTCPVIP + `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.213}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls, namespace: default}
spec:
  hosts: [tls.example.com, auth.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tlsvip, namespace: default}
spec:
  hosts: [tlsvip.example.com]
  addresses: [240.240.0.9]
  location: MESH_EXTERNAL
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext, namespace: other}
spec:
  hosts: [tcp.example.com, tls.example.com, tlsvip.example.com]
  tcp:
  - route: [{destination: {host: db.example.com}}]
  tls:
  - match: [{sniHosts: [tls.example.com, tlsvip.example.com]}]
    route: [{destination: {host: auth.example.com}}]
---
` + productpageSidecarHead + `  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.2
    hosts: ["./reviews.default.svc.cluster.local"]
  - port: {number: 9000, protocol: TCP, name: tcp}
    bind: 127.0.0.3
    hosts: ["./tcp.example.com", "./tcpvip.example.com"]
  - port: {number: 8443, protocol: TLS, name: tls}
    bind: 127.0.0.4
    hosts: ["./tls.example.com", "./tlsvip.example.com"]
  - hosts: ["./ratings.default.svc.cluster.local", "./api.example.com", "./db.example.com", "./auth.example.com", "other/*"]
`

// TestSidecarEgressPort: a Sidecar egress listener with a port scopes that
// port's routes to its own hosts and the catch-all listener's hosts serve
// the other ports, while the clusters are the union, as Istio's
// per-egress-listener buildSidecarOutboundListeners and route
// configurations; the listener's bind names and addresses the port's
// listener in both modes, and under REDIRECT takes every service of the
// port, those with a VIP too (Istio's listener keyed by bind and port), so
// a VIP of the port gets no listener of its own.
func TestSidecarEgressPort(t *testing.T) {
	const (
		reviews = "outbound|9080||reviews.default.svc.cluster.local"
		ratings = "outbound|9080||ratings.default.svc.cluster.local"
		api     = "outbound|8080||api.example.com"
		tcp     = "outbound|9000||tcp.example.com"
		tls     = "outbound|8443||tls.example.com"
		tlsVIP  = "outbound|8443||tlsvip.example.com"
	)
	pc := docPushContext(t, egressPortConfig)
	clusters := func(t *testing.T, r *Resources) {
		t.Helper()
		have := map[string]bool{}
		for _, c := range r.Clusters {
			have[c.GetName()] = true
		}
		for _, c := range []string{reviews, ratings, api} {
			if !have[c] {
				t.Errorf("no cluster %s: clusters are the union of the egress listeners", c)
			}
		}
		if have["outbound|9080||details.default.svc.cluster.local"] {
			t.Errorf("cluster of details, which no egress listener imports")
		}
	}
	type want struct {
		req request
		dst string
	}
	check := func(t *testing.T, rc *routev3.RouteConfiguration, cases ...want) {
		t.Helper()
		for _, c := range cases {
			if got := simulate(t, rc, c.req); got != c.dst {
				t.Errorf("route %s: %s: routed to %q, want %q", rc.GetName(), c.req.authority, got, c.dst)
			}
		}
	}
	// TCP and TLS connections on the ports of egress listeners: each
	// entered at entry, routed to want.
	type connWant struct {
		entry string
		c     conn
		want  string
	}
	conns := func(t *testing.T, r *Resources, cases []connWant) {
		t.Helper()
		for _, c := range cases {
			if got := simulateConn(t, r, c.entry, c.c); got != c.want {
				t.Errorf("%s sni %q: got %q, want %q", c.c.dst, c.c.sni, got, c.want)
			}
		}
	}
	port9080 := []want{
		{request{"reviews.default.svc.cluster.local:9080", "/", nil}, reviews},
		{request{"ratings.default.svc.cluster.local:9080", "/", nil}, PassthroughCluster},
	}

	t.Run("explicit", func(t *testing.T) {
		r := mustGenerate(t, pc, productpageSidecar())
		clusters(t, r)
		check(t, routeConfig(t, r, xdsapi.HTTPProxyRoute), append(port9080,
			want{request{"api.example.com:8080", "/", nil}, api})...)
		l := findListener(r, "127.0.0.2_9080")
		if l == nil {
			t.Fatal("no listener 127.0.0.2_9080 of the egress listener's bind and port")
		}
		if a := l.GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.2" || a.GetPortValue() != 9080 {
			t.Errorf("listener 127.0.0.2_9080 at %s:%d", a.GetAddress(), a.GetPortValue())
		}
		check(t, routeConfig(t, r, "9080"), port9080...)
		for _, n := range []string{"127.0.0.3_9000", "127.0.0.4_8443"} {
			if findListener(r, n) == nil {
				t.Errorf("no listener %s of the egress listener's bind and port", n)
			}
		}
		conns(t, r, []connWant{
			{"127.0.0.3_9000", conn{dst: "127.0.0.3:9000"}, "127.0.0.3_9000/ -> " + tcp},
			{"127.0.0.4_8443", conn{dst: "127.0.0.4:8443", sni: "tls.example.com"}, "127.0.0.4_8443/" + tls + " -> " + tls},
			{"127.0.0.4_8443", conn{dst: "127.0.0.4:8443", sni: "tlsvip.example.com"}, "127.0.0.4_8443/" + tlsVIP + " -> " + tlsVIP},
			{"127.0.0.4_8443", conn{dst: "127.0.0.4:8443", sni: "auth.example.com"}, "127.0.0.4_8443/no chain"},
		})
	})

	t.Run("redirect", func(t *testing.T) {
		r := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
		clusters(t, r)
		if findListener(r, "127.0.0.2_9080") == nil || findListener(r, "0.0.0.0_9080") != nil {
			t.Error("want the 9080 listener at the egress listener's bind, 127.0.0.2_9080, not 0.0.0.0_9080")
		}
		check(t, routeConfig(t, r, "9080"), port9080...)
		check(t, routeConfig(t, r, "8080"),
			want{request{"api.example.com:8080", "/", nil}, api},
			want{request{"reviews.default.svc.cluster.local:8080", "/", nil}, PassthroughCluster})
		for _, n := range []string{"127.0.0.3_9000", "127.0.0.4_8443"} {
			if l := findListener(r, n); l == nil {
				t.Errorf("no listener %s", n)
			} else if l.GetBindToPort() == nil || l.GetBindToPort().GetValue() {
				t.Errorf("listener %s binds its port: want bind_to_port false (captureMode DEFAULT)", n)
			}
		}
		for _, n := range []string{"0.0.0.0_9000", "0.0.0.0_8443", "240.240.0.8_9000", "240.240.0.9_8443"} {
			if findListener(r, n) != nil {
				t.Errorf("listener %s: want the egress listener's bind", n)
			}
		}
		conns(t, r, []connWant{
			{xdsapi.VirtualOutboundListener, conn{dst: "127.0.0.3:9000"}, "127.0.0.3_9000/ -> " + tcp},
			{xdsapi.VirtualOutboundListener, conn{dst: "240.240.0.8:9000"}, "virtualOutbound/" + virtualOutboundCatchAllTCP + " -> " + PassthroughCluster},
			// Off the wildcard Istio's buildSidecarOutboundTLSFilterChainOpts
			// gives a service's chain no server name, so the first,
			// tls.example.com, takes every connection and tlsvip's is
			// dropped (mergeTCPFilterChains).
			{xdsapi.VirtualOutboundListener, conn{dst: "127.0.0.4:8443", sni: "tls.example.com"}, "127.0.0.4_8443/" + tls + " -> " + tls},
			{xdsapi.VirtualOutboundListener, conn{dst: "127.0.0.4:8443", sni: "tlsvip.example.com"}, "127.0.0.4_8443/" + tls + " -> " + tls},
			{xdsapi.VirtualOutboundListener, conn{dst: "127.0.0.4:8443", sni: "auth.example.com"}, "127.0.0.4_8443/" + tls + " -> " + tls},
			{xdsapi.VirtualOutboundListener, conn{dst: "240.240.0.9:8443", sni: "tlsvip.example.com"}, "virtualOutbound/" + virtualOutboundCatchAllTCP + " -> " + PassthroughCluster},
		})
	})
}

// egressPortGuardsConfig has egress listeners explicitEgressHTTPListeners
// gives no HTTP listener: 9080 without bind is productpage's own port on
// its IP; 9000's bound name is the TCP listener's (tcp.example.com),
// though web.example.com has HTTP on 9000; 7777 has no HTTP service.
const egressPortGuardsConfig = seTCP + `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.214}]
---
` + productpageSidecarHead + `  - port: {number: 9080, protocol: HTTP, name: http}
    hosts: ["./reviews.default.svc.cluster.local"]
  - port: {number: 9000, protocol: TCP, name: tcp}
    bind: 127.0.0.3
    hosts: ["./tcp.example.com", "./web.example.com"]
  - port: {number: 7777, protocol: HTTP, name: http-7777}
    bind: 127.0.0.5
    hosts: ["./tcp.example.com"]
  - hosts: ["./*"]
`

// TestSidecarEgressPortHTTPGuards: an explicit-mode egress listener with a
// port gets no HTTP listener on the proxy's IP at a port its own workload
// holds, none on a name a TCP listener already has, and none when no
// service it imports has HTTP on the port, as explicitEgressHTTPListeners
// says.
func TestSidecarEgressPortHTTPGuards(t *testing.T) {
	r := mustGenerate(t, docPushContext(t, egressPortGuardsConfig), productpageSidecar())
	names := map[string]int{}
	for _, l := range r.Listeners {
		names[l.GetName()]++
	}
	if names["127.0.0.11_9080"] != 0 {
		t.Error("listener 127.0.0.11_9080 on productpage's own port")
	}
	if names["127.0.0.5_7777"] != 0 {
		t.Error("listener 127.0.0.5_7777 of an egress listener without an HTTP service on 7777")
	}
	if names["127.0.0.3_9000"] != 1 {
		t.Fatalf("%d listeners 127.0.0.3_9000, want the TCP one", names["127.0.0.3_9000"])
	}
	if got, want := simulateConn(t, r, "127.0.0.3_9000", conn{dst: "127.0.0.3:9000"}), "127.0.0.3_9000/ -> outbound|9000||tcp.example.com"; got != want {
		t.Errorf("127.0.0.3:9000: got %q, want %q", got, want)
	}
}

// TestSidecarEgressCaptureMode: under REDIRECT an egress listener of
// captureMode NONE gets a listener bound to its port, at its bind (9080,
// 127.0.0.2) or else 127.0.0.1 (9000, Istio's actualLocalHosts), with every
// service of the port on it, VIPs included; IPTABLES (8443) stays reached
// through virtualOutbound (bind_to_port false), as Istio's
// buildSidecarOutboundListeners. In explicit mode every outbound listener
// is bound already (Istio's interception NONE ignores captureMode): the
// same config gives the same resources as without captureMode.
func TestSidecarEgressCaptureMode(t *testing.T) {
	withModes := strings.NewReplacer(
		"    bind: 127.0.0.2\n", "    bind: 127.0.0.2\n    captureMode: NONE\n",
		"    bind: 127.0.0.3\n", "    captureMode: NONE\n",
		"    bind: 127.0.0.4\n", "    bind: 127.0.0.4\n    captureMode: IPTABLES\n",
	).Replace(egressPortConfig)
	if withModes == egressPortConfig {
		t.Fatal("egressPortConfig lost the binds this test rewrites")
	}
	pc := docPushContext(t, withModes)

	t.Run("redirect", func(t *testing.T) {
		r := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
		for _, c := range []struct {
			name  string
			bound bool
		}{{"127.0.0.2_9080", true}, {"127.0.0.1_9000", true}, {"127.0.0.4_8443", false}} {
			l := findListener(r, c.name)
			if l == nil {
				t.Errorf("no listener %s", c.name)
				continue
			}
			// Envoy's bind_to_port: absent means true.
			if got := l.GetBindToPort() == nil || l.GetBindToPort().GetValue(); got != c.bound {
				t.Errorf("listener %s binds its port: %v, want %v", c.name, got, c.bound)
			}
		}
		for _, n := range []string{"0.0.0.0_9080", "0.0.0.0_9000", "127.0.0.3_9000", "240.240.0.8_9000"} {
			if findListener(r, n) != nil {
				t.Errorf("listener %s beside the egress listener's bound one", n)
			}
		}
		check := func(entry string, c conn, want string) {
			t.Helper()
			if got := simulateConn(t, r, entry, c); got != want {
				t.Errorf("%s at %s: got %q, want %q", c.dst, entry, got, want)
			}
		}
		// The app dials the bound socket itself: no virtualOutbound hop.
		check("127.0.0.1_9000", conn{dst: "127.0.0.1:9000"}, "127.0.0.1_9000/ -> outbound|9000||tcp.example.com")
		check(xdsapi.VirtualOutboundListener, conn{dst: "240.240.0.8:9000"}, "virtualOutbound/"+virtualOutboundCatchAllTCP+" -> "+PassthroughCluster)
		// Off the wildcard the first TLS service takes every connection.
		check(xdsapi.VirtualOutboundListener, conn{dst: "127.0.0.4:8443", sni: "tlsvip.example.com"},
			"127.0.0.4_8443/outbound|8443||tls.example.com -> outbound|8443||tls.example.com")
		if got := simulate(t, routeConfig(t, r, "9080"), request{"reviews.default.svc.cluster.local:9080", "/", nil}); got != "outbound|9080||reviews.default.svc.cluster.local" {
			t.Errorf("route 9080: reviews routed to %q", got)
		}
	})

	t.Run("explicit", func(t *testing.T) {
		got := mustGenerate(t, pc, productpageSidecar())
		want := mustGenerate(t, docPushContext(t, egressPortConfig), productpageSidecar())
		// Only 9000's listener moves: its bind is gone, so it sits on
		// the proxy's IP.
		if findListener(got, "127.0.0.11_9000") == nil || findListener(got, "127.0.0.2_9080") == nil {
			t.Fatal("want the explicit listeners 127.0.0.11_9000 and 127.0.0.2_9080")
		}
		for _, n := range []string{"127.0.0.2_9080", "127.0.0.4_8443"} {
			if d := cmp.Diff(findListener(want, n), findListener(got, n), protocmp.Transform()); d != "" {
				t.Errorf("listener %s changed with captureMode (-without +with):\n%s", n, d)
			}
		}
	})
}

// TestSidecarEgressPortLacking: an egress listener with a port imports
// only the services that have that port, as Istio's needsPortMatch and
// serviceMatchingListenerPort: api.example.com, whose only port is 8080,
// is not routed on the 9080 listener that names it (no single-port
// fallback), and the 7777 listener, whose one service lacks 7777, gets no
// listener in either mode (Istio builds the port's listener per imported
// service).
func TestSidecarEgressPortLacking(t *testing.T) {
	pc := docPushContext(t, seAPI+productpageSidecarHead+`  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.2
    hosts: ["./reviews.default.svc.cluster.local", "./api.example.com"]
  - port: {number: 7777, protocol: HTTP, name: http-7777}
    bind: 127.0.0.5
    hosts: ["./ratings.default.svc.cluster.local"]
`)
	for _, mode := range []struct {
		name string
		p    *model.Proxy
	}{{"explicit", productpageSidecar()}, {"redirect", redirectSidecar(productpageSidecar())}} {
		t.Run(mode.name, func(t *testing.T) {
			r := mustGenerate(t, pc, mode.p)
			rc := routeConfig(t, r, "9080")
			if got := simulate(t, rc, request{"api.example.com:9080", "/", nil}); got != PassthroughCluster {
				t.Errorf("api.example.com:9080 routed to %q, want %s: api has no port 9080", got, PassthroughCluster)
			}
			if got := simulate(t, rc, request{"reviews.default.svc.cluster.local:9080", "/", nil}); got != "outbound|9080||reviews.default.svc.cluster.local" {
				t.Errorf("reviews:9080 routed to %q", got)
			}
			for _, l := range r.Listeners {
				if strings.HasSuffix(l.GetName(), "_7777") {
					t.Errorf("listener %s for a port no imported service has", l.GetName())
				}
			}
		})
	}
}

// TestSidecarEgressPortProtocol: a port's listener is built for the egress
// listener's port.protocol, not its services' (Istio's
// buildSidecarOutboundListeners passes the egress listener's port): on the
// TCP listener of 8080, api.example.com (HTTP 8080) is proxied as TCP; on
// the HTTP listener of 9000, tcp.example.com (TCP 9000) gets no chain, and
// its host is unknown to the port's route table.
func TestSidecarEgressPortProtocol(t *testing.T) {
	pc := docPushContext(t, seAPI+seTCP+productpageSidecarHead+`  - port: {number: 8080, protocol: TCP, name: tcp-api}
    hosts: ["./api.example.com"]
  - port: {number: 9000, protocol: HTTP, name: http-9000}
    hosts: ["./tcp.example.com"]
  - hosts: ["./*"]
`)
	const api = "outbound|8080||api.example.com"
	t.Run("redirect", func(t *testing.T) {
		r := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
		if got, want := simulateConn(t, r, xdsapi.VirtualOutboundListener, conn{dst: "127.54.0.211:8080"}), "0.0.0.0_8080/ -> "+api; got != want {
			t.Errorf("TCP to api.example.com's 8080: got %q, want %q", got, want)
		}
		for _, rc := range r.Routes {
			if rc.GetName() == "8080" {
				t.Error("route table 8080 of a TCP egress listener's port")
			}
		}
		if got, want := simulateConn(t, r, xdsapi.VirtualOutboundListener, conn{dst: "127.54.0.212:9000", http: "tcp.example.com:9000"}),
			"0.0.0.0_9000/ -> "+PassthroughCluster; got != want {
			t.Errorf("HTTP to tcp.example.com:9000: got %q, want %q (the HTTP listener, no route to the TCP service)", got, want)
		}
	})
	t.Run("explicit", func(t *testing.T) {
		r := mustGenerate(t, pc, productpageSidecar())
		if got, want := simulateConn(t, r, "127.0.0.11_8080", conn{dst: "127.0.0.11:8080"}), "127.0.0.11_8080/ -> "+api; got != want {
			t.Errorf("TCP to the sidecar's 8080: got %q, want %q", got, want)
		}
		if l := findListener(r, "127.0.0.11_9000"); l != nil {
			t.Error("TCP listener 127.0.0.11_9000 on an HTTP egress listener's port")
		}
	})
}

// catchAllBindConfig gives productpage a Sidecar whose 9080 listener
// imports reviews and whose port-less listener, bound to 127.0.0.7,
// imports api.example.com (HTTP 8080) and tcpvip.example.com (TCP 9000,
// VIP 240.240.0.8).
const catchAllBindConfig = seAPI + seTCPVIP + productpageSidecarHead + `  - port: {number: 9080, protocol: HTTP, name: http}
    hosts: ["./reviews.default.svc.cluster.local"]
  - bind: 127.0.0.7
    hosts: ["./api.example.com", "./tcpvip.example.com"]
`

// TestSidecarEgressCatchAllBind: the port-less egress listener's bind and
// captureMode apply to every port it builds, as Istio's
// buildSidecarOutboundListeners gives its bind to each service port of the
// catch-all: under REDIRECT 127.0.0.7_8080 and 127.0.0.7_9000 (the VIP's
// service on it, no 240.240.0.8_9000), or with captureMode NONE and no
// bind bound 127.0.0.1_8080 and 127.0.0.1_9000; in explicit mode the TCP
// listener and an HTTP listener move to 127.0.0.7. A port listener
// without bind (9080) keeps the default.
func TestSidecarEgressCatchAllBind(t *testing.T) {
	pc := docPushContext(t, catchAllBindConfig)
	const api, tcpvip = "outbound|8080||api.example.com", "outbound|9000||tcpvip.example.com"
	bindToPort := func(l *listenerv3.Listener) bool { return l.GetBindToPort() == nil || l.GetBindToPort().GetValue() }

	t.Run("redirect", func(t *testing.T) {
		r := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
		for _, n := range []string{"127.0.0.7_8080", "127.0.0.7_9000", "0.0.0.0_9080"} {
			if l := findListener(r, n); l == nil || bindToPort(l) {
				t.Errorf("want listener %s, bind_to_port false", n)
			}
		}
		for _, n := range []string{"0.0.0.0_8080", "0.0.0.0_9000", "240.240.0.8_9000"} {
			if findListener(r, n) != nil {
				t.Errorf("listener %s beside the catch-all's bind", n)
			}
		}
		if got, want := simulateConn(t, r, xdsapi.VirtualOutboundListener, conn{dst: "127.0.0.7:9000"}), "127.0.0.7_9000/ -> "+tcpvip; got != want {
			t.Errorf("127.0.0.7:9000: got %q, want %q", got, want)
		}
		if got, want := simulateConn(t, r, xdsapi.VirtualOutboundListener, conn{dst: "127.0.0.7:8080", http: "api.example.com:8080"}), "127.0.0.7_8080/ -> "+api; got != want {
			t.Errorf("127.0.0.7:8080: got %q, want %q", got, want)
		}
	})

	t.Run("redirect NONE", func(t *testing.T) {
		pc := docPushContext(t, strings.Replace(catchAllBindConfig, "  - bind: 127.0.0.7\n", "  - captureMode: NONE\n", 1))
		r := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
		for _, n := range []string{"127.0.0.1_8080", "127.0.0.1_9000"} {
			if l := findListener(r, n); l == nil || !bindToPort(l) {
				t.Errorf("want listener %s bound to its port", n)
			}
		}
		if l := findListener(r, "0.0.0.0_9080"); l == nil || bindToPort(l) {
			t.Error("want 0.0.0.0_9080 of the port listener, bind_to_port false")
		}
		if got, want := simulateConn(t, r, "127.0.0.1_9000", conn{dst: "127.0.0.1:9000"}), "127.0.0.1_9000/ -> "+tcpvip; got != want {
			t.Errorf("127.0.0.1:9000: got %q, want %q", got, want)
		}
	})

	t.Run("explicit", func(t *testing.T) {
		r := mustGenerate(t, pc, productpageSidecar())
		if got, want := simulateConn(t, r, "127.0.0.7_9000", conn{dst: "127.0.0.7:9000"}), "127.0.0.7_9000/ -> "+tcpvip; got != want {
			t.Errorf("127.0.0.7:9000: got %q, want %q", got, want)
		}
		if got, want := simulateConn(t, r, "127.0.0.7_8080", conn{dst: "127.0.0.7:8080", http: "api.example.com:8080"}), "127.0.0.7_8080/ -> "+api; got != want {
			t.Errorf("127.0.0.7:8080: got %q, want %q", got, want)
		}
		for _, n := range []string{"127.0.0.11_9000", "127.0.0.7_9080"} {
			if findListener(r, n) != nil {
				t.Errorf("listener %s", n)
			}
		}
	})
}

// TestSidecarEgressClusterPorts: a service imported by an egress listener
// with a port keeps the cluster of that port only (Istio's
// serviceMatchingListenerPort trims it), unless the port-less listener
// imports it too, which takes every port: multi.example.com (8080 and
// 9000) imported by the 8080 listener alone has no 9000 cluster nor its
// endpoints; both.example.com, imported by the catch-all as well, keeps
// both.
func TestSidecarEgressClusterPorts(t *testing.T) {
	pc := docPushContext(t, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi, namespace: default}
spec:
  hosts: [multi.example.com, both.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.216}]
---
`+productpageSidecarHead+`  - port: {number: 8080, protocol: HTTP, name: http}
    hosts: ["./multi.example.com", "./both.example.com"]
  - hosts: ["./both.example.com"]
`)
	for _, mode := range []struct {
		name string
		p    *model.Proxy
	}{{"explicit", productpageSidecar()}, {"redirect", redirectSidecar(productpageSidecar())}} {
		t.Run(mode.name, func(t *testing.T) {
			r := mustGenerate(t, pc, mode.p)
			have := map[string]bool{}
			for _, c := range r.Clusters {
				have[c.GetName()] = true
			}
			for _, e := range r.Endpoints {
				have["eds "+e.GetClusterName()] = true
			}
			for name, want := range map[string]bool{
				"outbound|8080||multi.example.com": true,
				"outbound|9000||multi.example.com": false,
				"outbound|8080||both.example.com":  true,
				"outbound|9000||both.example.com":  true,
			} {
				if have[name] != want {
					t.Errorf("cluster %s: %v, want %v", name, have[name], want)
				}
			}
			if !have["eds outbound|8080||multi.example.com"] || have["eds outbound|9000||multi.example.com"] {
				t.Error("want endpoints for outbound|8080||multi.example.com only, not for 9000, which has no cluster")
			}
		})
	}
}

// egressMixedConfig has HTTP and TCP services on one port, with productpage's
// Sidecar catch-all listener at bind BIND: on 9000 a-tcp.example.com (TCP,
// no address) comes before web.example.com (HTTP) in host order, on 9100
// web.example.com before z-tcp.example.com (TCP, VIP 240.240.0.20), and
// secure.example.com has TLS (no address).
const egressMixedConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a-tcp, namespace: default}
spec:
  hosts: [a-tcp.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.221}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: http, protocol: HTTP}, {number: 9100, name: http-9100, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.222}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: z-tcp, namespace: default}
spec:
  hosts: [z-tcp.example.com]
  addresses: [240.240.0.20]
  location: MESH_EXTERNAL
  ports: [{number: 9100, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.223}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 9100, name: tls, protocol: TLS}]
  resolution: DNS
---
` + productpageSidecarHead + `  - hosts: ["./*"]
BIND`

// TestSidecarEgressBindMixedProtocols: under REDIRECT, HTTP and TCP
// services on one port share the listener Istio's
// buildSidecarOutboundListener keys by bind and port. Off the wildcard
// (bind 127.0.0.3) the first service in host order keeps it: its chain and
// the other's both match every connection (no application protocols off
// the wildcard), and mergeTCPFilterChains drops the later one, so 9000 is
// a-tcp's tcp_proxy and 9100 the TLS service's (or web's HTTP manager when
// web comes first: a TLS chain matches no server name off the wildcard).
// On the wildcard (bind 0.0.0.0, or no bind for a TCP service without
// address) the HTTP chain matches http/1.1 and h2c, so the listener is
// sniffed: HTTP is routed by Host, other bytes go to the TCP service's
// chain, and a TLS service's chain, which matches its server name there,
// merges in with tls_inspector.
func TestSidecarEgressBindMixedProtocols(t *testing.T) {
	const (
		aTCP    = "outbound|9000||a-tcp.example.com"
		web     = "outbound|9000||web.example.com"
		web9100 = "outbound|9100||web.example.com"
		zTCP    = "outbound|9100||z-tcp.example.com"
		secure  = "outbound|9100||secure.example.com"
	)
	type connWant struct {
		c    conn
		want string
	}
	for _, tt := range []struct {
		name, bind string
		// ySecure renames secure.example.com y-secure.example.com, after
		// web.example.com in host order.
		ySecure bool
		sniffed []string // listeners with http_inspector
		conns   []connWant
	}{
		// secure.example.com (TLS) comes first on 9100: off the wildcard
		// its chain matches no server name (Istio's
		// buildSidecarOutboundTLSFilterChainOpts), so it takes every
		// connection and web's HTTP chain is dropped.
		{"bind off the wildcard", "    bind: 127.0.0.3\n", false, nil, []connWant{
			{conn{dst: "127.0.0.3:9000"}, "127.0.0.3_9000/ -> " + aTCP},
			{conn{dst: "127.0.0.3:9000", http: "web.example.com:9000"}, "127.0.0.3_9000/ -> " + aTCP},
			{conn{dst: "127.0.0.3:9100", http: "web.example.com:9100"}, "127.0.0.3_9100/" + secure + " -> " + secure},
			{conn{dst: "127.0.0.3:9100"}, "127.0.0.3_9100/" + secure + " -> " + secure},
			{conn{dst: "127.0.0.3:9100", sni: "secure.example.com"}, "127.0.0.3_9100/" + secure + " -> " + secure},
		}},
		// web.example.com (HTTP) comes first on 9100 and keeps it; the
		// TLS service's chain, which would take every connection too,
		// is dropped rather than matching its server name.
		{"bind 127.0.0.1, HTTP before TLS", "    bind: 127.0.0.1\n", true, nil, []connWant{
			{conn{dst: "127.0.0.1:9100", http: "web.example.com:9100"}, "127.0.0.1_9100/ -> " + web9100},
			{conn{dst: "127.0.0.1:9100", sni: "y-secure.example.com"}, "127.0.0.1_9100/ -> (HTTP manager on opaque TCP)"},
		}},
		{"bind on the wildcard", "    bind: 0.0.0.0\n", false, []string{"0.0.0.0_9000", "0.0.0.0_9100"}, []connWant{
			{conn{dst: "10.1.2.3:9000"}, "0.0.0.0_9000/ -> " + aTCP},
			{conn{dst: "10.1.2.3:9000", http: "web.example.com:9000"}, "0.0.0.0_9000/ -> " + web},
			{conn{dst: "240.240.0.20:9100"}, "0.0.0.0_9100/ -> " + zTCP},
			{conn{dst: "240.240.0.20:9100", http: "web.example.com:9100"}, "0.0.0.0_9100/ -> " + web9100},
			{conn{dst: "10.1.2.3:9100", sni: "secure.example.com"}, "0.0.0.0_9100/" + secure + " -> " + secure},
		}},
		{"no bind", "", false, []string{"0.0.0.0_9000"}, []connWant{
			{conn{dst: "10.1.2.3:9000"}, "0.0.0.0_9000/ -> " + aTCP},
			{conn{dst: "10.1.2.3:9000", http: "web.example.com:9000"}, "0.0.0.0_9000/ -> " + web},
			{conn{dst: "240.240.0.20:9100"}, "240.240.0.20_9100/ -> " + zTCP},
			{conn{dst: "10.1.2.3:9100", sni: "secure.example.com"}, "0.0.0.0_9100/" + secure + " -> " + secure},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := strings.Replace(egressMixedConfig, "BIND", tt.bind, 1)
			if tt.ySecure {
				cfg = strings.ReplaceAll(cfg, "secure.example.com", "y-secure.example.com")
			}
			r := mustGenerate(t, docPushContext(t, cfg), redirectSidecar(productpageSidecar()))
			for _, c := range tt.conns {
				if got := simulateConn(t, r, xdsapi.VirtualOutboundListener, c.c); got != c.want {
					t.Errorf("%s http %q sni %q: got %q, want %q", c.c.dst, c.c.http, c.c.sni, got, c.want)
				}
				name, _, _ := strings.Cut(c.want, "/")
				if l := findListener(r, name); c.c.sni != "" && strings.Contains(c.want, "secure") && !slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool {
					return f.GetName() == "envoy.filters.listener.tls_inspector"
				}) {
					t.Errorf("listener %s has no tls_inspector to read the server name", name)
				}
			}
			for _, n := range tt.sniffed {
				l := findListener(r, n)
				if l == nil {
					t.Errorf("no listener %s", n)
					continue
				}
				if !slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool {
					return f.GetName() == "envoy.filters.listener.http_inspector"
				}) {
					t.Errorf("listener %s has no http_inspector: want it sniffed", n)
				}
			}
		})
	}
}

// egressHTTPProxyConfig gives productpage a Sidecar egress listener of
// protocol HTTP_PROXY on 15080 that imports reviews (HTTP 9080) and
// api.example.com (HTTP 8080), and a catch-all that imports ratings.
const egressHTTPProxyConfig = seAPI + productpageSidecarHead + `  - port: {number: 15080, protocol: HTTP_PROXY, name: http-proxy}
BIND    hosts: ["./reviews.default.svc.cluster.local", "./api.example.com"]
  - hosts: ["./ratings.default.svc.cluster.local"]
`

// TestSidecarEgressHTTPProxy: an egress listener of protocol HTTP_PROXY is
// an HTTP listener on its bind and port whose route table "15080" holds
// every HTTP port of the services that listener imports (Istio's
// BuildSidecarOutboundVirtualHosts with listenerPort 0, as http_proxy),
// then the catch-all: a host it does not import (ratings, imported by the
// catch-all listener) goes to PassthroughCluster under ALLOW_ANY. Its
// services keep their clusters on every port (needsPortMatch is false for
// HTTP_PROXY) but are not on the catch-all's per-port tables. Under
// REDIRECT the listener is reached through iptables (bind_to_port false)
// unless captureMode NONE binds it, at 127.0.0.1 without bind.
func TestSidecarEgressHTTPProxy(t *testing.T) {
	const (
		reviews = "outbound|9080||reviews.default.svc.cluster.local"
		api     = "outbound|8080||api.example.com"
	)
	routes := []struct {
		authority, want string
	}{
		{"reviews.default.svc.cluster.local:9080", reviews},
		{"reviews:9080", reviews},
		{"api.example.com:8080", api},
		{"api.example.com", api},
		{"ratings.default.svc.cluster.local:9080", PassthroughCluster},
		{"example.org", PassthroughCluster},
	}
	for _, tt := range []struct {
		name, bind string
		proxy      *model.Proxy
		listener   string
		bound      bool
	}{
		{"explicit", "    bind: 127.0.0.6\n", productpageSidecar(), "127.0.0.6_15080", true},
		{"redirect", "    bind: 127.0.0.6\n", redirectSidecar(productpageSidecar()), "127.0.0.6_15080", false},
		{"redirect, no bind", "", redirectSidecar(productpageSidecar()), "0.0.0.0_15080", false},
		{"redirect, captureMode NONE", "    captureMode: NONE\n", redirectSidecar(productpageSidecar()), "127.0.0.1_15080", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pc := docPushContext(t, strings.Replace(egressHTTPProxyConfig, "BIND", tt.bind, 1))
			r := mustGenerate(t, pc, tt.proxy)
			l := findListener(r, tt.listener)
			if l == nil {
				t.Fatalf("no listener %s of the HTTP_PROXY egress listener", tt.listener)
			}
			addr, _, _ := strings.Cut(tt.listener, "_")
			if a := l.GetAddress().GetSocketAddress(); a.GetAddress() != addr || a.GetPortValue() != 15080 {
				t.Errorf("listener %s at %s:%d", tt.listener, a.GetAddress(), a.GetPortValue())
			}
			if bound := l.GetBindToPort() == nil || l.GetBindToPort().GetValue(); bound != tt.bound {
				t.Errorf("listener %s binds its port: %v, want %v", tt.listener, bound, tt.bound)
			}
			if got := connectionManager(t, l).GetRds().GetRouteConfigName(); got != "15080" {
				t.Fatalf("listener %s routes by %q, want \"15080\"", tt.listener, got)
			}
			rc := routeConfig(t, r, "15080")
			for _, c := range routes {
				if got := simulate(t, rc, request{c.authority, "/", nil}); got != c.want {
					t.Errorf("route 15080: %s routed to %q, want %q", c.authority, got, c.want)
				}
			}
			have := map[string]bool{}
			for _, c := range r.Clusters {
				have[c.GetName()] = true
			}
			for _, c := range []string{reviews, api} {
				if !have[c] {
					t.Errorf("no cluster %s of a service the HTTP_PROXY listener imports", c)
				}
			}
			if tt.proxy.InterceptionMode == "REDIRECT" {
				if got := simulate(t, routeConfig(t, r, "9080"), request{"reviews:9080", "/", nil}); got != PassthroughCluster {
					t.Errorf("route 9080 (the catch-all listener's): reviews routed to %q, want %s", got, PassthroughCluster)
				}
			}
		})
	}
}

// wellKnownPortConfig has two services on port 3306, FIRST before SECOND
// in host order (a-... before b-...), neither with an address, so both go
// on 0.0.0.0_3306 under REDIRECT.
const wellKnownPortConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: first, namespace: default}
spec:
  hosts: [a-first.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 3306, name: p, protocol: FIRST}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.231}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: second, namespace: default}
spec:
  hosts: [b-second.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 3306, name: p, protocol: SECOND}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.232}]
`

// TestSidecarEgressWellKnownPort: a MySQL or Mongo service shares its
// outbound listener with no service of another protocol, as Istio's
// isConflictWithWellKnownPort: the first in host order keeps
// 0.0.0.0_3306 and the later one is dropped, instead of the listener being
// sniffed (a MySQL server speaks first, so a client would wait on
// http_inspector, which has no timeout by default). Two services of the
// same protocol merge as before.
func TestSidecarEgressWellKnownPort(t *testing.T) {
	const (
		first  = "outbound|3306||a-first.example.com"
		second = "outbound|3306||b-second.example.com"
	)
	type connWant struct {
		c    conn
		want string
	}
	for _, tt := range []struct {
		first, second string
		sniffed       bool
		conns         []connWant
	}{
		{"MYSQL", "HTTP", false, []connWant{
			{conn{dst: "10.1.2.3:3306"}, "0.0.0.0_3306/ -> " + first},
			{conn{dst: "10.1.2.3:3306", http: "b-second.example.com:3306"}, "0.0.0.0_3306/ -> " + first},
		}},
		{"HTTP", "MYSQL", false, []connWant{
			{conn{dst: "10.1.2.3:3306", http: "a-first.example.com:3306"}, "0.0.0.0_3306/ -> " + first},
			{conn{dst: "10.1.2.3:3306"}, "0.0.0.0_3306/ -> (HTTP manager on opaque TCP)"},
		}},
		{"MONGO", "TCP", false, []connWant{
			{conn{dst: "10.1.2.3:3306"}, "0.0.0.0_3306/ -> " + first},
		}},
		{"TCP", "MYSQL", false, []connWant{
			{conn{dst: "10.1.2.3:3306"}, "0.0.0.0_3306/ -> " + first},
		}},
		{"TLS", "MYSQL", false, []connWant{
			{conn{dst: "10.1.2.3:3306", sni: "a-first.example.com"}, "0.0.0.0_3306/" + first + " -> " + first},
			{conn{dst: "10.1.2.3:3306"}, "0.0.0.0_3306/" + virtualOutboundCatchAllTCP + " -> " + PassthroughCluster},
		}},
		{"MYSQL", "MYSQL", false, []connWant{
			{conn{dst: "10.1.2.3:3306"}, "0.0.0.0_3306/ -> " + first},
		}},
		{"TCP", "HTTP", true, []connWant{
			{conn{dst: "10.1.2.3:3306"}, "0.0.0.0_3306/ -> " + first},
			{conn{dst: "10.1.2.3:3306", http: "b-second.example.com:3306"}, "0.0.0.0_3306/ -> " + second},
		}},
	} {
		t.Run(tt.first+" then "+tt.second, func(t *testing.T) {
			cfg := strings.Replace(strings.Replace(wellKnownPortConfig, "FIRST", tt.first, 1), "SECOND", tt.second, 1)
			r := mustGenerate(t, docPushContext(t, cfg), redirectSidecar(productpageSidecar()))
			for _, c := range tt.conns {
				if got := simulateConn(t, r, xdsapi.VirtualOutboundListener, c.c); got != c.want {
					t.Errorf("%s http %q sni %q: got %q, want %q", c.c.dst, c.c.http, c.c.sni, got, c.want)
				}
			}
			l := findListener(r, "0.0.0.0_3306")
			if l == nil {
				t.Fatal("no listener 0.0.0.0_3306")
			}
			sniffed := slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool {
				return f.GetName() == "envoy.filters.listener.http_inspector"
			})
			if sniffed != tt.sniffed {
				t.Errorf("0.0.0.0_3306 has http_inspector %v, want %v", sniffed, tt.sniffed)
			}
		})
	}
}

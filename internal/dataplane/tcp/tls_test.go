package tcp

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/listener"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/transport"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// proxyWithListener runs the TCP proxy behind a real listener.Manager
// serving l, with clusters and secrets (nil: none).
func proxyWithListener(t *testing.T, secrets *secret.Store, l *listenerv3.Listener, clusters ...*clusterv3.Cluster) (addr string, log func(n int) []string) {
	t.Helper()
	return proxyWithStats(t, secrets, nil, l, clusters...)
}

// proxyWithStats is proxyWithListener counting Istio's metrics in stats
// (nil: none).
func proxyWithStats(t *testing.T, secrets *secret.Store, stats *istiostats.Metrics, l *listenerv3.Listener, clusters ...*clusterv3.Cluster) (addr string, log func(n int) []string) {
	t.Helper()
	return proxyWithExchange(t, secrets, stats, nil, l, clusters...)
}

// proxyWithExchange is proxyWithStats for a proxy whose side of Istio's
// metadata exchange is x (nil: an anonymous proxy).
func proxyWithExchange(t *testing.T, secrets *secret.Store, stats *istiostats.Metrics, x *istiostats.Exchange, l *listenerv3.Listener, clusters ...*clusterv3.Cluster) (addr string, log func(n int) []string) {
	t.Helper()
	res := config.Resources{Listeners: []proto.Message{l}}
	for _, c := range clusters {
		res.Clusters = append(res.Clusters, c)
	}
	g, err := config.Build(res, nil)
	if err != nil {
		t.Fatal(err)
	}
	logEveryChain(g)
	var gen atomic.Pointer[config.Generation]
	gen.Store(g)
	var ts transport.Secrets
	if secrets != nil {
		ts = secrets
	}
	cm := upstream.New(upstream.Options{Secrets: ts, Exchange: x})
	cm.Update(g)
	buf := &syncBuffer{}
	alog := telemetry.NewAccessLog(telemetry.AccessLogOptions{Writer: buf})
	var self *istiostats.Peer
	if x != nil {
		self = &x.Self
	}
	p, err := New(Options{Generation: &gen, Clusters: cm, AccessLog: alog, IstioStats: stats, Self: self})
	if err != nil {
		t.Fatal(err)
	}
	lm, err := listener.New(listener.Options{Secrets: ts, Exchange: x,
		Handler: func(*config.Listener, *config.FilterChain) http.Handler { return http.NotFoundHandler() },
		TCP: func(l *config.Listener, fc *config.FilterChain) listener.ConnHandler {
			return func(ctx context.Context, c net.Conn) { p.ServeConn(ctx, l.Name, fc, c) }
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := lm.Update(g); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = lm.Shutdown(ctx)
		cm.Close()
	})
	h := &harness{log: alog, buf: buf}
	return lm.Addrs()[l.GetName()], func(n int) []string { return h.waitLog(t, n) }
}

// tlsServer serves TLS connections on 127.0.0.1 with cfg: it answers each
// line with "<server name> <client principal> <line>".
func tlsServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	return server(t, func(c *net.TCPConn) {
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		st := tc.ConnectionState()
		peer := "-"
		if len(st.PeerCertificates) > 0 && len(st.PeerCertificates[0].URIs) > 0 {
			peer = st.PeerCertificates[0].URIs[0].String()
		}
		line, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil {
			return
		}
		io.WriteString(tc, st.ServerName+" "+peer+" "+line)
		tc.Close()
	})
}

// TestSNIPassthrough is a gateway's PASSTHROUGH (Istio's tls routes): the
// listener picks the chain by the ClientHello's SNI, and the tcp_proxy
// replays the peeked ClientHello upstream, so the client's handshake is
// with the upstream itself; the proxy holds no key.
func TestSNIPassthrough(t *testing.T) {
	ca := testutil.NewCA(t, "root")
	up := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, testutil.LeafOptions{DNS: []string{"up.example.com"}}).TLS}})
	chain := func(name, sni, cluster string) *listenerv3.FilterChain {
		return &listenerv3.FilterChain{Name: name, FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{sni}},
			Filters: []*listenerv3.Filter{{Name: config.TCPProxyFilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, oneCluster(cluster))}}}}
	}
	l := &listenerv3.Listener{Name: "0.0.0.0_443", Address: xdstest.HostPortAddress(t, freeAddr(t)),
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: config.TLSInspectorName}},
		FilterChains:    []*listenerv3.FilterChain{chain("up", "up.example.com", "up"), chain("other", "*.other.test", "nowhere")}}
	addr, log := proxyWithListener(t, nil, l, cluster(t, "up", nil, up), cluster(t, "nowhere", nil, "127.0.0.1:1"))

	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "up.example.com", RootCAs: ca.Pool})
	if err != nil {
		t.Fatalf("handshake through the proxy: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "hello\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "up.example.com - hello\n" {
		t.Fatalf("upstream answered %q, %v", got, err)
	}
	c.Close()
	line := log(1)[0]
	if !strings.Contains(line, " up.example.com ") || !strings.Contains(line, " up ") {
		t.Errorf("access log %q: want the requested server name and cluster up", line)
	}
}

// TestTCPOriginatesMTLS: a tcp_proxy to a cluster with Istio's
// ISTIO_MUTUAL transport socket dials mTLS with the proxy's certificate;
// an upstream identity the SAN matcher refuses is UF with the TLS error.
func TestTCPOriginatesMTLS(t *testing.T) {
	ca := testutil.NewCA(t, "mesh root")
	store := secret.NewStore()
	own := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/client"}})
	s, err := secret.ParseCertificate(secret.WorkloadCertificate, own.CertPEM, own.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	store.Set(s)
	roots, err := secret.ParseRoots(secret.RootCA, ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	store.Set(roots)
	up := tlsServer(t, &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool,
		Certificates: []tls.Certificate{ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/tcp-echo"}}).TLS}})
	mtls := func(san string) func(c *clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			c.TransportSocket = xdstest.TLSSocket(t, &tlsv3.UpstreamTlsContext{Sni: "outbound_.9000_._.tcp-echo.default.svc.cluster.local",
				CommonTlsContext: &tlsv3.CommonTlsContext{
					AlpnProtocols:                  []string{"istio-peer-exchange", "istio"},
					TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
					ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
						DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchSubjectAltNames: []*matcherv3.StringMatcher{{
							MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}}},
						ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA)}}}})
		}
	}
	chain := func(name, cluster string) *listenerv3.FilterChain {
		return &listenerv3.FilterChain{Name: name, Filters: []*listenerv3.Filter{{Name: config.TCPProxyFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &tcpv3.TcpProxy{StatPrefix: name,
				ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}})}}}}
	}
	good := &listenerv3.Listener{Name: "good", Address: xdstest.HostPortAddress(t, freeAddr(t)), FilterChains: []*listenerv3.FilterChain{chain("g", "tcp-echo")}}
	addr, _ := proxyWithListener(t, store, good, cluster(t, "tcp-echo", mtls("spiffe://cluster.local/ns/default/sa/tcp-echo"), up))
	c := dial(t, addr)
	io.WriteString(c, "ping\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "outbound_.9000_._.tcp-echo.default.svc.cluster.local spiffe://cluster.local/ns/default/sa/client ping\n" {
		t.Fatalf("through mTLS: %q, %v", got, err)
	}

	// Istio's client side reads both principals off the upstream mTLS
	// connection: its own certificate's and the upstream's URI SANs.
	stats := istiostats.NewMetrics(0)
	withStats := &listenerv3.Listener{Name: "stats", Address: xdstest.HostPortAddress(t, freeAddr(t)), TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{chain("s", "tcp-echo")}}
	statsCfg, err := statspb.Pack(&statspb.PluginConfig{})
	if err != nil {
		t.Fatal(err)
	}
	withStats.FilterChains[0].Filters = append([]*listenerv3.Filter{{Name: statspb.FilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: statsCfg}}}, withStats.FilterChains[0].Filters...)
	addr, log := proxyWithStats(t, store, stats, withStats, cluster(t, "tcp-echo", mtls("spiffe://cluster.local/ns/default/sa/tcp-echo"), up))
	c = dial(t, addr)
	io.WriteString(c, "ping\n")
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	c.Close()
	log(1)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(stats)
	var text strings.Builder
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "istio_tcp_connections_closed_total" {
			expfmt.MetricFamilyToText(&text, mf)
		}
	}
	for _, want := range []string{`reporter="source"`, `source_principal="spiffe://cluster.local/ns/default/sa/client"`,
		`destination_principal="spiffe://cluster.local/ns/default/sa/tcp-echo"`, `destination_workload_namespace="default"`} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("istio_tcp_connections_closed_total: want %s in\n%s", want, text.String())
		}
	}

	bad := &listenerv3.Listener{Name: "bad", Address: xdstest.HostPortAddress(t, freeAddr(t)), FilterChains: []*listenerv3.FilterChain{chain("b", "tcp-echo")}}
	addr, log = proxyWithListener(t, store, bad, cluster(t, "tcp-echo", mtls("spiffe://cluster.local/ns/default/sa/impostor"), up))
	c = dial(t, addr)
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection to an upstream with the wrong identity was carried")
	}
	line := log(1)[0]
	if !strings.Contains(line, " UF ") || !strings.Contains(line, "TLS_error:_") {
		t.Errorf("access log %q: want UF and the TLS error", line)
	}
}

// freeAddr is a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

package tcp

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	mxpb "istio.io/api/envoy/config/filter/network/metadata_exchange"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/testutil/promtest"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// mxMesh is two workloads' sidecars, each with its own certificate and
// node metadata, as istiod configures them for a TCP service: the
// client's outbound listener to an ISTIO_MUTUAL cluster with the upstream
// istio.metadata_exchange filter, the server's inbound mTLS chain with
// the network filter, both with istio.stats.
type mxMesh struct {
	ca                *testutil.CA
	client, server    *istiostats.Metrics
	clientAddr        string // the client sidecar's outbound listener
	serverAddr        string // the server sidecar's inbound listener
	clientLog         func(n int) []string
	serverLog         func(n int) []string
	serverX           *istiostats.Exchange
	clientCertificate tls.Certificate
}

func mxNode(t *testing.T, id, workload, app, sa string) *corev3.Node {
	t.Helper()
	md, err := structpb.NewStruct(map[string]any{"WORKLOAD_NAME": workload, "NAMESPACE": "default", "CLUSTER_ID": "Kubernetes",
		"SERVICE_ACCOUNT": sa, "LABELS": map[string]any{"app": app, "version": "v1"}})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Node{Id: id, Metadata: md}
}

func workloadSecrets(t *testing.T, ca *testutil.CA, spiffe string) (*secret.Store, tls.Certificate) {
	t.Helper()
	store := secret.NewStore()
	leaf := ca.Issue(t, testutil.LeafOptions{URIs: []string{spiffe}})
	s, err := secret.ParseCertificate(secret.WorkloadCertificate, leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	store.Set(s)
	roots, err := secret.ParseRoots(secret.RootCA, ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	store.Set(roots)
	return store, leaf.TLS
}

func mxFilter(t *testing.T) *listenerv3.Filter {
	return &listenerv3.Filter{Name: istiostats.MXFilterName, ConfigType: &listenerv3.Filter_TypedConfig{
		TypedConfig: xdstest.MustAny(t, &mxpb.MetadataExchange{Protocol: istiostats.MXProtocol})}}
}

func statsFilter(t *testing.T, report time.Duration) *listenerv3.Filter {
	t.Helper()
	a, err := statspb.Pack(&statspb.PluginConfig{TcpReportingDuration: durationpb.New(report)})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Filter{Name: statspb.FilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
}

func tcpProxyTo(t *testing.T, cluster string) *listenerv3.Filter {
	return &listenerv3.Filter{Name: config.TCPProxyFilterName, ConfigType: &listenerv3.Filter_TypedConfig{
		TypedConfig: xdstest.MustAny(t, &tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}})}}
}

func startMXMesh(t *testing.T, app string, report time.Duration) *mxMesh {
	t.Helper()
	m := &mxMesh{ca: testutil.NewCA(t, "mesh root"), client: istiostats.NewMetrics(0), server: istiostats.NewMetrics(0)}
	clientStore, clientCert := workloadSecrets(t, m.ca, "spiffe://cluster.local/ns/default/sa/productpage")
	serverStore, _ := workloadSecrets(t, m.ca, "spiffe://cluster.local/ns/default/sa/reviews")
	m.clientCertificate = clientCert
	validation := &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
		DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
		ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA)}}

	// The server sidecar: an inbound mTLS chain, as istiod's for a TCP port.
	inbound := &listenerv3.Listener{Name: "virtualInbound", Address: xdstest.HostPortAddress(t, freeAddr(t)),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains: []*listenerv3.FilterChain{{Name: "inbound|9000||",
			TransportSocket: xdstest.TLSSocket(t, &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true),
				CommonTlsContext: &tlsv3.CommonTlsContext{AlpnProtocols: []string{"istio-peer-exchange", "h2", "http/1.1"},
					TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
					ValidationContextType:          validation}}),
			Filters: []*listenerv3.Filter{mxFilter(t), statsFilter(t, report), tcpProxyTo(t, "inbound|9000||")}}}}
	m.serverX = istiostats.NewExchange(mxNode(t, "sidecar~10.0.0.2~reviews-v2.default~default.svc.cluster.local", "reviews-v2", "reviews", "reviews"))
	m.serverAddr, m.serverLog = proxyWithExchange(t, serverStore, m.server, m.serverX, inbound, cluster(t, "inbound|9000||", nil, app))

	// The client sidecar: an outbound listener to the ISTIO_MUTUAL cluster.
	outCluster := cluster(t, "outbound|9000||tcp-echo.default.svc.cluster.local", func(c *clusterv3.Cluster) {
		c.TransportSocket = xdstest.TLSSocket(t, &tlsv3.UpstreamTlsContext{Sni: "outbound_.9000_._.tcp-echo.default.svc.cluster.local",
			CommonTlsContext: &tlsv3.CommonTlsContext{AlpnProtocols: []string{"istio-peer-exchange", "istio"},
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
				ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchSubjectAltNames: []*matcherv3.StringMatcher{{
						MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/default/sa/reviews"}}}},
					ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA)}}}})
		c.Filters = []*clusterv3.Filter{{Name: istiostats.MXFilterName,
			TypedConfig: xdstest.MustAny(t, &mxpb.MetadataExchange{Protocol: istiostats.MXProtocol})}}
	}, m.serverAddr)
	outbound := &listenerv3.Listener{Name: "0.0.0.0_9000", Address: xdstest.HostPortAddress(t, freeAddr(t)),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{statsFilter(t, report), tcpProxyTo(t, outCluster.GetName())}}}}
	clientX := istiostats.NewExchange(mxNode(t, "sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local", "productpage-v1", "productpage", "productpage"))
	m.clientAddr, m.clientLog = proxyWithExchange(t, clientStore, m.client, clientX, outbound, outCluster)
	return m
}

// sample returns the value of the series of metric name whose labels
// include want, and whether there is one.
func sample(t *testing.T, stats *istiostats.Metrics, name string, want map[string]string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(stats)
	fams, err := promtest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	return fams.Value(name, want)
}

// waitSample waits up to 10s for the series to reach at least min.
func waitSample(t *testing.T, stats *istiostats.Metrics, name string, want map[string]string, min float64) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, ok := sample(t, stats, name, want)
		if ok && v >= min {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v: %v (found %v), want at least %v", name, want, v, ok, min)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Both sidecars of a TCP connection over mTLS learn each other's workload
// from Istio's TCP metadata exchange, and the app sees none of it.
func TestTCPMetadataExchange(t *testing.T) {
	m := startMXMesh(t, server(t, echo("app: ")), time.Hour)
	c := dial(t, m.clientAddr)
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "app: ping\n" {
		t.Fatalf("through two sidecars: %q, %v (the app must see exactly the stream)", got, err)
	}
	c.Close()
	m.clientLog(1)
	m.serverLog(1)

	// The client reports the server's workload, the server the client's.
	src := map[string]string{"reporter": "source", "source_workload": "productpage-v1", "source_app": "productpage",
		"destination_workload": "reviews-v2", "destination_app": "reviews", "destination_version": "v1",
		"destination_canonical_service": "reviews", "destination_cluster": "Kubernetes",
		"destination_principal": "spiffe://cluster.local/ns/default/sa/reviews", "connection_security_policy": "unknown"}
	dst := map[string]string{"reporter": "destination", "source_workload": "productpage-v1", "source_app": "productpage",
		"source_version": "v1", "source_canonical_service": "productpage", "source_cluster": "Kubernetes",
		"source_principal": "spiffe://cluster.local/ns/default/sa/productpage", "destination_workload": "reviews-v2",
		"connection_security_policy": "mutual_tls"}
	for _, tc := range []struct {
		stats *istiostats.Metrics
		want  map[string]string
	}{{m.client, src}, {m.server, dst}} {
		for _, name := range []string{"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"} {
			if v := waitSample(t, tc.stats, name, tc.want, 1); v != 1 {
				t.Errorf("%s%v = %v, want 1", name, tc.want, v)
			}
		}
		// "ping\n" one way, "app: ping\n" the other; the frames are not
		// counted.
		if v := waitSample(t, tc.stats, "istio_tcp_received_bytes_total", tc.want, 5); v != 5 {
			t.Errorf("received bytes %v, want 5", v)
		}
		if v := waitSample(t, tc.stats, "istio_tcp_sent_bytes_total", tc.want, 10); v != 10 {
			t.Errorf("sent bytes %v, want 10", v)
		}
	}
}

// A long connection is counted while it lasts: opened, with the peer's
// labels, and its bytes at each tcp_reporting_duration; closed at its
// end, with the rest of its bytes.
func TestTCPInterimReports(t *testing.T) {
	m := startMXMesh(t, server(t, echo("")), 20*time.Millisecond)
	c := dial(t, m.clientAddr)
	r := bufio.NewReader(c)
	src := map[string]string{"reporter": "source", "destination_workload": "reviews-v2"}
	dst := map[string]string{"reporter": "destination", "source_workload": "productpage-v1"}
	for i, line := range []string{"one\n", "two two\n"} {
		if _, err := io.WriteString(c, line); err != nil {
			t.Fatal(err)
		}
		if got, err := r.ReadString('\n'); err != nil || got != line {
			t.Fatalf("echo %q, %v", got, err)
		}
		total := float64(len("one\n"))
		if i == 1 {
			total += float64(len(line))
		}
		for _, s := range []struct {
			stats *istiostats.Metrics
			want  map[string]string
		}{{m.client, src}, {m.server, dst}} {
			waitSample(t, s.stats, "istio_tcp_received_bytes_total", s.want, total)
			if v, _ := sample(t, s.stats, "istio_tcp_connections_opened_total", s.want); v != 1 {
				t.Fatalf("opened %v while the connection is open, want 1", v)
			}
			if v, _ := sample(t, s.stats, "istio_tcp_connections_closed_total", s.want); v != 0 {
				t.Fatalf("%v closed while the connection is open", v)
			}
		}
	}
	c.Close()
	for _, s := range []struct {
		stats *istiostats.Metrics
		want  map[string]string
	}{{m.client, src}, {m.server, dst}} {
		waitSample(t, s.stats, "istio_tcp_connections_closed_total", s.want, 1)
		if v, _ := sample(t, s.stats, "istio_tcp_connections_opened_total", s.want); v != 1 {
			t.Errorf("opened %v after the end, want 1", v)
		}
		if v, _ := sample(t, s.stats, "istio_tcp_received_bytes_total", s.want); v != 12 {
			t.Errorf("received %v bytes in all, want 12", v)
		}
	}
}

// The inbound side speaks Istio's wire format: a client that writes the
// frame by hand, as an Istio sidecar's Envoy does, is known by it, gets
// the proxy's frame before any stream byte, and its app sees the stream
// alone.
func TestTCPMetadataExchangeWire(t *testing.T) {
	m := startMXMesh(t, server(t, echo("app: ")), time.Hour)
	c, err := tls.Dial("tcp", m.serverAddr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{m.clientCertificate},
		NextProtos: []string{"istio-peer-exchange", "istio"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if p := c.ConnectionState().NegotiatedProtocol; p != "istio-peer-exchange" {
		t.Fatalf("ALPN %q", p)
	}
	md, _ := structpb.NewStruct(map[string]any{"x-envoy-peer-metadata": map[string]any{"WORKLOAD_NAME": "ratings-v1",
		"NAMESPACE": "default", "LABELS": map[string]any{"app": "ratings"}}, "x-envoy-peer-metadata-id": "sidecar~10.0.0.9~ratings"})
	payload, err := anypb.New(md)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(payload)
	frame := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0x3D230467), uint32(len(b)))
	if _, err := c.Write(append(append(frame, b...), "ping\n"...)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(hdr[:]) != 0x3D230467 {
		t.Fatalf("first bytes %x: want the exchange's magic", hdr)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[4:]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	var a anypb.Any
	var s structpb.Struct
	if err := proto.Unmarshal(body, &a); err != nil || a.UnmarshalTo(&s) != nil {
		t.Fatalf("frame payload: %v", err)
	}
	if w := s.GetFields()["x-envoy-peer-metadata"].GetStructValue().GetFields()["WORKLOAD_NAME"].GetStringValue(); w != "reviews-v2" {
		t.Fatalf("the proxy announced workload %q", w)
	}
	if got, err := r.ReadString('\n'); err != nil || got != "app: ping\n" {
		t.Fatalf("stream %q, %v", got, err)
	}
	c.Close()
	m.serverLog(1)
	waitSample(t, m.server, "istio_tcp_connections_closed_total", map[string]string{"reporter": "destination",
		"source_workload": "ratings-v1", "source_app": "ratings"}, 1)
}

// TestTCPMetadataExchangeWithoutPeerFrame: a peer that negotiates the
// protocol but sends no frame (an older proxy) still has its stream
// carried intact, known by its principal only.
func TestTCPMetadataExchangeWithoutPeerFrame(t *testing.T) {
	m := startMXMesh(t, server(t, echo("")), time.Hour)
	c, err := tls.Dial("tcp", m.serverAddr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{m.clientCertificate},
		NextProtos: []string{"istio-peer-exchange"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(all), "GET / HTTP/1.0\r\n\r\n") || len(all) < 4 || binary.BigEndian.Uint32(all) != 0x3D230467 {
		t.Fatalf("stream %q: want the request echoed intact after the proxy's frame", all)
	}
	c.Close()
	waitSample(t, m.server, "istio_tcp_connections_closed_total", map[string]string{"reporter": "destination",
		"source_workload": "unknown", "source_principal": "spiffe://cluster.local/ns/default/sa/productpage"}, 1)
}

// Without a metadata exchange (plain TCP), a source reporter names the
// destination workload from the endpoint's Istio telemetry metadata, as
// Istio's stats filter falls back on it; its app and version stay
// unknown, which the encoding does not carry.
func TestTCPEndpointWorkloadFallback(t *testing.T) {
	stats := istiostats.NewMetrics(0)
	up := server(t, echo(""))
	c := cluster(t, "outbound|9000||tcp-echo.default.svc.cluster.local", func(c *clusterv3.Cluster) {
		c.LoadAssignment.Endpoints[0].LbEndpoints[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"istio": {Fields: map[string]*structpb.Value{"workload": structpb.NewStringValue("tcp-echo-v1;default;tcp-echo;v1;Kubernetes")}}}}
	}, up)
	l := &listenerv3.Listener{Name: "0.0.0.0_9000", Address: xdstest.HostPortAddress(t, freeAddr(t)), TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{statsFilter(t, time.Hour), tcpProxyTo(t, c.GetName())}}}}
	addr, log := proxyWithStats(t, nil, stats, l, c)
	conn := dial(t, addr)
	if _, err := io.WriteString(conn, "hi\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := bufio.NewReader(conn).ReadString('\n'); err != nil || got != "hi\n" {
		t.Fatalf("echo %q, %v", got, err)
	}
	conn.Close()
	log(1)
	waitSample(t, stats, "istio_tcp_connections_closed_total", map[string]string{"reporter": "source",
		"destination_workload": "tcp-echo-v1", "destination_workload_namespace": "default", "destination_canonical_service": "tcp-echo",
		"destination_canonical_revision": "v1", "destination_cluster": "Kubernetes", "destination_app": "unknown",
		"destination_version": "unknown", "destination_principal": "unknown"}, 1)
}

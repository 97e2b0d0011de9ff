package istiostats

import "strings"

// Service is the service a cluster stands for: Istio's cluster metadata
// filter_metadata.istio.services[0] (host, name, namespace), else what an
// outbound cluster's name (outbound|PORT|SUBSET|HOST) says. Empty fields
// are unknown.
type Service struct {
	Host, Name, Namespace string
}

// ServiceOfCluster returns the service of an outbound cluster by its name
// (Istio's outbound|PORT|SUBSET|HOST), with Name the host's first label;
// the zero Service for other names. It does not allocate.
func ServiceOfCluster(cluster string) Service {
	rest, ok := strings.CutPrefix(cluster, "outbound|")
	if !ok {
		return Service{}
	}
	i := strings.LastIndexByte(rest, '|')
	if i < 0 {
		return Service{}
	}
	host := rest[i+1:]
	if host == "" {
		return Service{}
	}
	name, _, _ := strings.Cut(host, ".")
	return Service{Host: host, Name: name}
}

// Special clusters whose name Istio reports as destination_service_name.
const (
	BlackHoleCluster              = "BlackHoleCluster"
	PassthroughCluster            = "PassthroughCluster"
	InboundPassthroughClusterIPv4 = "InboundPassthroughClusterIpv4"
	InboundPassthroughClusterIPv6 = "InboundPassthroughClusterIpv6"
)

// Facts are what the labels of one request or connection come from. The
// strings are borrowed (no copy is made); Peer may be nil.
type Facts struct {
	// Peer is the other end's identity from the metadata exchange (the
	// downstream on a destination reporter, the upstream on a source
	// reporter); nil when none came.
	Peer *Peer
	// PeerPrincipal and LocalPrincipal are the URI SANs of the peer's
	// and the proxy's certificates on the connection the reporter reads
	// (downstream for destination, upstream for source); "" without mTLS.
	PeerPrincipal, LocalPrincipal string
	// Service is the request's destination service (from its cluster).
	Service Service
	// Cluster is the upstream cluster's name ("" for none).
	Cluster string
	// Route is the matched route's name (Istio reports block_all and
	// allow_any as BlackHoleCluster and PassthroughCluster).
	Route string
	// Host is the request's authority, used as destination_service when
	// the cluster names no service and the config allows the fallback
	// and the proxy knows the host (HostKnown).
	Host      string
	HostKnown bool
	// Protocol is "http", "grpc" or "tcp".
	Protocol string
	// Code is the response code (0: none); GRPCStatus the grpc-status
	// ("" for none or not gRPC); Flags Envoy's response flags ("" none).
	Code       int
	GRPCStatus string
	Flags      string
}

// Fill computes the standard labels of f as Istio's stats filter does
// for c's reporter, with self the proxy's own identity, into out. It does
// not allocate.
func (c *Config) Fill(self *Peer, f *Facts, out *Labels) {
	l := out
	l[tReporter] = c.Reporter.String()
	peer := f.Peer
	if peer == nil {
		peer = &noPeer
	}
	svcHost, svcName := f.Service.Host, f.Service.Name
	if svcHost == "" && !c.DisableHostHeaderFallback && f.HostKnown {
		svcHost, svcName = f.Host, f.Host
	}
	switch f.Route {
	case "block_all":
		svcName = BlackHoleCluster
	case "allow_any":
		svcName = PassthroughCluster
	default:
		switch f.Cluster {
		case BlackHoleCluster, PassthroughCluster, InboundPassthroughClusterIPv4, InboundPassthroughClusterIPv6:
			svcName = f.Cluster
		}
	}
	peerNS := namespaceOfSAN(f.PeerPrincipal)
	if peerNS == "" {
		peerNS = peer.Namespace
	}
	if c.Reporter == ReporterSource {
		l[tSourceWorkload] = or(self.Workload)
		l[tSourceCanonicalService] = or(self.Service)
		l[tSourceCanonicalRevision] = orLatest(self.Revision)
		l[tSourceWorkloadNamespace] = or(self.Namespace)
		l[tSourcePrincipal] = or(f.LocalPrincipal)
		l[tSourceApp] = or(self.App)
		l[tSourceVersion] = or(self.Version)
		l[tSourceCluster] = or(self.Cluster)
		l[tDestinationWorkload] = or(peer.Workload)
		l[tDestinationWorkloadNamespace] = or(peerNS)
		l[tDestinationPrincipal] = or(f.PeerPrincipal)
		l[tDestinationApp] = or(peer.App)
		l[tDestinationVersion] = or(peer.Version)
		l[tDestinationService] = or(svcHost)
		l[tDestinationCanonicalService] = or(peer.Service)
		l[tDestinationCanonicalRevision] = orLatest(peer.Revision)
		l[tDestinationServiceName] = or(svcName)
		l[tDestinationServiceNamespace] = or(peerNS)
		l[tDestinationCluster] = or(peer.Cluster)
		// Istio's client side never knows the connection's policy.
		l[tConnectionSecurityPolicy] = unknown
	} else {
		l[tSourceWorkload] = or(peer.Workload)
		l[tSourceCanonicalService] = or(peer.Service)
		l[tSourceCanonicalRevision] = orLatest(peer.Revision)
		l[tSourceWorkloadNamespace] = or(peerNS)
		l[tSourcePrincipal] = or(f.PeerPrincipal)
		l[tSourceApp] = or(peer.App)
		l[tSourceVersion] = or(peer.Version)
		l[tSourceCluster] = or(peer.Cluster)
		l[tDestinationWorkload] = or(self.Workload)
		l[tDestinationWorkloadNamespace] = or(self.Namespace)
		l[tDestinationPrincipal] = or(f.LocalPrincipal)
		l[tDestinationApp] = or(self.App)
		l[tDestinationVersion] = or(self.Version)
		if svcHost == "" {
			svcHost = self.Service
		}
		if svcName == "" {
			svcName = self.Service
		}
		l[tDestinationService] = or(svcHost)
		l[tDestinationCanonicalService] = or(self.Service)
		l[tDestinationCanonicalRevision] = orLatest(self.Revision)
		l[tDestinationServiceName] = or(svcName)
		l[tDestinationServiceNamespace] = or(self.Namespace)
		l[tDestinationCluster] = or(self.Cluster)
		if f.PeerPrincipal != "" && f.LocalPrincipal != "" {
			l[tConnectionSecurityPolicy] = "mutual_tls"
		} else {
			l[tConnectionSecurityPolicy] = "none"
		}
	}
	l[tRequestProtocol] = f.Protocol
	l[tResponseCode] = formatCode(f.Code)
	l[tGRPCResponseStatus] = f.GRPCStatus
	if f.Flags == "" {
		l[tResponseFlags] = "-"
	} else {
		l[tResponseFlags] = f.Flags
	}
}

var noPeer Peer

func or(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

func orLatest(s string) string {
	if s == "" {
		return "latest"
	}
	return s
}

// namespaceOfSAN is NS of a SPIFFE ID spiffe://TD/ns/NS/sa/SA, else "".
func namespaceOfSAN(san string) string {
	_, rest, ok := strings.Cut(san, "/ns/")
	if !ok || !strings.HasPrefix(san, "spiffe://") {
		return ""
	}
	ns, _, _ := strings.Cut(rest, "/")
	return ns
}

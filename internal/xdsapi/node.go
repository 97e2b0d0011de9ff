package xdsapi

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// NodeType is the first field of an Istio node ID.
type NodeType string

// Node types. A sidecar sits beside one workload; a router is a gateway.
const (
	Sidecar NodeType = "sidecar"
	Router  NodeType = "router"
)

// Node metadata keys, Istio's names (pilot/pkg/model/context.go NodeMetadata).
const (
	MetaLabels           = "LABELS"
	MetaNamespace        = "NAMESPACE"
	MetaServiceAccount   = "SERVICE_ACCOUNT"
	MetaClusterID        = "CLUSTER_ID"
	MetaWorkloadName     = "WORKLOAD_NAME"
	MetaInterceptionMode = "INTERCEPTION_MODE"
	MetaInstanceIPs      = "INSTANCE_IPS"
)

// InterceptionNone is the INTERCEPTION_MODE of a proxy that no iptables
// rule feeds: the app talks to it explicitly (HTTP_PROXY), and its
// listeners bind the proxy's own IP instead of 0.0.0.0.
const InterceptionNone = "NONE"

// InterceptionRedirect is the INTERCEPTION_MODE of a proxy that iptables
// REDIRECT feeds in its workload's network namespace (Istio's default):
// it gets Istio's transparent listener layout (virtualOutbound and
// virtualInbound on 0.0.0.0 with use_original_dst, per-port listeners
// that bind no socket).
const InterceptionRedirect = "REDIRECT"

// ProxyGID is the group the proxy's own sockets belong to in REDIRECT
// mode: the iptables rules skip redirection for "-m owner --gid-owner
// ProxyGID", as Istio's istio-iptables does for its istio-proxy user and
// group 1337, so the proxy's upstream connections are not sent back to
// itself.
const ProxyGID = 1337

// NodeID is a parsed Istio node ID "TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local".
type NodeID struct {
	Type      NodeType
	IP        string
	Name      string // pod or workload name
	Namespace string
	Domain    string // "NAMESPACE.svc.cluster.local"
}

// String renders the ID in Istio's format.
func (n NodeID) String() string {
	return fmt.Sprintf("%s~%s~%s.%s~%s", n.Type, n.IP, n.Name, n.Namespace, n.Domain)
}

// ParseNodeID parses an Istio node ID. It fails when the ID does not have
// four '~'-separated parts, an unknown type, an IP that is not an IPv4 or
// IPv6 address (listeners bind it, so the proxy would reject them), or no
// namespace.
func ParseNodeID(id string) (NodeID, error) {
	parts := strings.Split(id, "~")
	if len(parts) != 4 {
		return NodeID{}, fmt.Errorf("node id %q: want TYPE~IP~NAME.NAMESPACE~DOMAIN", id)
	}
	t := NodeType(parts[0])
	if t != Sidecar && t != Router {
		return NodeID{}, fmt.Errorf("node id %q: type %q: must be sidecar or router", id, parts[0])
	}
	name, ns, ok := strings.Cut(parts[2], ".")
	if !ok || name == "" || ns == "" {
		return NodeID{}, fmt.Errorf("node id %q: %q: want NAME.NAMESPACE", id, parts[2])
	}
	if parts[1] == "" {
		return NodeID{}, fmt.Errorf("node id %q: empty IP", id)
	}
	if _, err := netip.ParseAddr(parts[1]); err != nil {
		return NodeID{}, fmt.Errorf("node id %q: IP: %w", id, err)
	}
	return NodeID{Type: t, IP: parts[1], Name: name, Namespace: ns, Domain: parts[3]}, nil
}

// NodeMeta is what a proxy says of itself in node metadata.
type NodeMeta struct {
	Labels           map[string]string
	Namespace        string
	ServiceAccount   string
	ClusterID        string
	WorkloadName     string
	InterceptionMode string
	// Locality is where the proxy runs, sent as the node's locality (not
	// in metadata), as Envoy's --service-zone and Istio's istio-locality.
	Locality Locality
	// ProxyVersion is the proxy's build version, sent as the node's
	// user_agent_version (user_agent_name is UserAgentName), not in metadata.
	ProxyVersion string
}

// UserAgentName is the user_agent_name of loom-proxy's xDS node.
const UserAgentName = "loom-proxy"

// BuildNode makes the envoy Node a proxy sends on its ADS stream. It fails
// when a label key or value, or another metadata string, is not valid
// UTF-8, which a protobuf Struct cannot hold.
func BuildNode(id NodeID, m NodeMeta) (*corev3.Node, error) {
	labels := map[string]any{}
	for k, v := range m.Labels {
		labels[k] = v
	}
	fields := map[string]any{
		MetaLabels:           labels,
		MetaNamespace:        m.Namespace,
		MetaServiceAccount:   m.ServiceAccount,
		MetaClusterID:        m.ClusterID,
		MetaWorkloadName:     m.WorkloadName,
		MetaInterceptionMode: m.InterceptionMode,
		MetaInstanceIPs:      id.IP,
	}
	st, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, fmt.Errorf("node %s: metadata: %w", id, err)
	}
	n := &corev3.Node{Id: id.String(), Cluster: m.WorkloadName, Metadata: st, UserAgentName: UserAgentName, Locality: m.Locality.Proto()}
	if m.ProxyVersion != "" {
		n.UserAgentVersionType = &corev3.Node_UserAgentVersion{UserAgentVersion: m.ProxyVersion}
	}
	return n, nil
}

// ParseNodeMeta reads NodeMeta from an envoy Node's metadata. Missing keys
// are left empty.
func ParseNodeMeta(n *corev3.Node) NodeMeta {
	var m NodeMeta
	f := n.GetMetadata().GetFields()
	str := func(k string) string { return f[k].GetStringValue() }
	m.Namespace = str(MetaNamespace)
	m.ServiceAccount = str(MetaServiceAccount)
	m.ClusterID = str(MetaClusterID)
	m.WorkloadName = str(MetaWorkloadName)
	m.InterceptionMode = str(MetaInterceptionMode)
	m.ProxyVersion = n.GetUserAgentVersion()
	m.Locality = LocalityFromProto(n.GetLocality())
	if l := f[MetaLabels].GetStructValue(); l != nil {
		m.Labels = map[string]string{}
		for k, v := range l.GetFields() {
			m.Labels[k] = v.GetStringValue()
		}
	}
	return m
}

package istiostats

import (
	"encoding/base64"
	"net/http"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Istio's HTTP metadata exchange headers: a sidecar adds them to the
// requests it sends upstream and to the responses it sends downstream,
// and removes them from what it receives before the app sees it.
const (
	// HeaderPeerMetadata is base64 (standard, padded) of a serialized
	// google.protobuf.Struct holding the sender's node metadata.
	HeaderPeerMetadata = "X-Envoy-Peer-Metadata"
	// HeaderPeerMetadataID is the sender's xDS node ID.
	HeaderPeerMetadataID = "X-Envoy-Peer-Metadata-Id"
)

// Node metadata keys the exchange carries and the stats read (Istio's
// names).
const (
	metaWorkloadName = "WORKLOAD_NAME"
	metaNamespace    = "NAMESPACE"
	metaClusterID    = "CLUSTER_ID"
	metaLabels       = "LABELS"
	metaName         = "NAME"
)

// exchangedKeys are the node metadata fields put in the header: the
// identity, never the proxy's internals.
var exchangedKeys = []string{metaWorkloadName, metaNamespace, metaClusterID, metaLabels, metaName, "SERVICE_ACCOUNT", "MESH_ID"}

// Exchange is one proxy's side of the metadata exchange: the header values
// it sends, and a bounded cache of the peers it has decoded. It is safe
// for concurrent use.
type Exchange struct {
	// Self is the proxy's own identity, from its node metadata.
	Self Peer
	// Node is the node as dimension expressions read it.
	Node     Node
	header   []string // the HeaderPeerMetadata value, ready to set
	headerID []string
	frame    []byte // the TCP exchange's frame (tcpexchange.go)
	mu       sync.RWMutex
	peers    map[string]*Peer // by header value; guarded by mu
}

// maxPeers bounds the decoded peers kept (a peer is one workload, so a
// mesh's count; a client sending random headers only churns the cache).
const maxPeers = 4096

// NewExchange builds the exchange of a proxy whose xDS node is n (nil: an
// anonymous proxy that sends an empty identity).
func NewExchange(n *corev3.Node) *Exchange {
	x := &Exchange{peers: map[string]*Peer{}}
	md := n.GetMetadata()
	x.Self = peerOf(md)
	x.Node = Node{ID: n.GetId(), Metadata: map[string]string{}, Self: x.Self}
	for k, v := range md.GetFields() {
		if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			x.Node.Metadata[k] = s.StringValue
		}
	}
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, k := range exchangedKeys {
		if v, ok := md.GetFields()[k]; ok {
			out.Fields[k] = v
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
	if err == nil {
		x.header = []string{base64.StdEncoding.EncodeToString(b)}
	}
	if n.GetId() != "" {
		x.headerID = []string{n.GetId()}
	}
	x.frame = x.mxFrame(out, n.GetId())
	return x
}

// peerOf reads a Peer from node metadata.
func peerOf(md *structpb.Struct) Peer {
	f := md.GetFields()
	p := Peer{
		Workload:  f[metaWorkloadName].GetStringValue(),
		Namespace: f[metaNamespace].GetStringValue(),
		Cluster:   f[metaClusterID].GetStringValue(),
	}
	if ls := f[metaLabels].GetStructValue(); ls != nil {
		p.Labels = map[string]string{}
		for k, v := range ls.GetFields() {
			p.Labels[k] = v.GetStringValue()
		}
		p.App = first(p.Labels["app"], p.Labels["app.kubernetes.io/name"])
		p.Version = first(p.Labels["version"], p.Labels["app.kubernetes.io/version"])
		// Istio's injector writes the canonical labels from these.
		p.Service = first(p.Labels["service.istio.io/canonical-name"], p.App, p.Workload)
		p.Revision = first(p.Labels["service.istio.io/canonical-revision"], p.Version)
	} else {
		p.Service = p.Workload
	}
	return p
}

func first(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// Set writes the proxy's exchange headers into h (a request going
// upstream, or a response going downstream), replacing any.
func (x *Exchange) Set(h http.Header) {
	if x == nil || x.header == nil {
		return
	}
	h[HeaderPeerMetadata] = x.header
	if x.headerID != nil {
		h[HeaderPeerMetadataID] = x.headerID
	}
}

// Take removes the exchange headers from h and returns the peer they
// describe, nil when there are none or they do not decode. A peer seen
// before costs a map lookup.
func (x *Exchange) Take(h http.Header) *Peer {
	vs := h[HeaderPeerMetadata]
	if vs == nil {
		if _, ok := h[HeaderPeerMetadataID]; ok {
			delete(h, HeaderPeerMetadataID)
		}
		return nil
	}
	delete(h, HeaderPeerMetadata)
	delete(h, HeaderPeerMetadataID)
	if x == nil || len(vs) == 0 {
		return nil
	}
	return x.cached(vs[0], func() *Peer {
		b, err := base64.StdEncoding.DecodeString(vs[0])
		if err != nil {
			return nil
		}
		var s structpb.Struct
		if proto.Unmarshal(b, &s) != nil {
			return nil
		}
		p := peerOf(&s)
		return &p
	})
}

// cached returns the peer that key (an exchange header or frame) decodes
// to, decoding it only the first time; nil decodes are kept too. A nil x
// decodes every time.
func (x *Exchange) cached(key string, decode func() *Peer) *Peer {
	if x == nil {
		return decode()
	}
	if p, ok := x.lookup(key); ok {
		return p
	}
	p := decode()
	x.store(key, p)
	return p
}

// lookup returns the cached peer of key.
func (x *Exchange) lookup(key string) (*Peer, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	p, ok := x.peers[key]
	return p, ok
}

// store caches p under key, emptying a full cache first.
func (x *Exchange) store(key string, p *Peer) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.peers) >= maxPeers {
		clear(x.peers)
	}
	x.peers[key] = p
}

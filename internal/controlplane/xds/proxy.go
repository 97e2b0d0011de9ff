package xds

import (
	"context"
	"sort"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// proxyState is one connected proxy: what it was last given and how it
// answered. Guarded by Server.mu.
type proxyState struct {
	streamID int64
	proxy    *model.Proxy
	// typed holds, per served type (index into xdsapi.TypeURLs), the
	// resources of the current snapshot and their version.
	typed [4]typeState
}

type typeState struct {
	version   string
	resources []types.Resource

	// ADS sync status.
	nonce     string // nonce of the last response sent
	sent      string // version of the last response sent
	acked     string
	nacked    string
	nackError string
}

// TypeStatus is the sync status of one xDS type of one proxy, as
// `istioctl proxy-status` shows it. Versions are empty until they happen.
type TypeStatus struct {
	TypeURL string `json:"type_url"`
	Short   string `json:"short"` // CDS, EDS, LDS, RDS
	// Sent is the version of the last response sent.
	Sent string `json:"sent"`
	// Acked is the last version the proxy ACKed.
	Acked string `json:"acked"`
	// Nacked is the version of the last NACK, cleared by a later ACK.
	Nacked string `json:"nacked"`
	// NackError is the error_detail message of that NACK.
	NackError string `json:"nack_error"`
}

// ProxyStatus is the sync status of one connected proxy.
type ProxyStatus struct {
	ID    string       `json:"id"` // node ID
	Types []TypeStatus `json:"types"`
}

// Syncz returns the sync status of every connected proxy, sorted by node
// ID, each with the types CDS, EDS, LDS, RDS in that order. It does not
// block on pushes longer than one push takes.
func (s *Server) Syncz() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.proxies))
	for id, p := range s.proxies {
		ps := ProxyStatus{ID: id, Types: make([]TypeStatus, len(xdsapi.TypeURLs))}
		for i, url := range xdsapi.TypeURLs {
			t := &p.typed[i]
			ps.Types[i] = TypeStatus{TypeURL: url, Short: xdsapi.ShortType(url),
				Sent: t.sent, Acked: t.acked, Nacked: t.nacked, NackError: t.nackError}
		}
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// typeIndex is the index of typeURL in xdsapi.TypeURLs, or -1.
func typeIndex(typeURL string) int {
	for i, u := range xdsapi.TypeURLs {
		if u == typeURL {
			return i
		}
	}
	return -1
}

// proxyFromNode builds the model.Proxy of an ADS node from its Istio node
// ID and metadata.
func proxyFromNode(n *corev3.Node) (*model.Proxy, error) {
	id, err := xdsapi.ParseNodeID(n.GetId())
	if err != nil {
		return nil, err
	}
	meta := xdsapi.ParseNodeMeta(n)
	ns := meta.Namespace
	if ns == "" {
		ns = id.Namespace
	}
	return &model.Proxy{
		Type:             model.ProxyType(id.Type),
		ID:               n.GetId(),
		IP:               id.IP,
		Name:             id.Name,
		Namespace:        ns,
		Labels:           meta.Labels,
		ServiceAccount:   meta.ServiceAccount,
		InterceptionMode: meta.InterceptionMode,
	}, nil
}

// updateLocked regenerates p's resources from the current push context and
// sets its snapshot. A type's version changes only when its resources do.
// On a generation error the proxy keeps its last snapshot. s.mu must be
// held.
func (s *Server) updateLocked(p *proxyState) {
	res, err := s.opts.Generate(s.pushContextLocked(), p.proxy)
	if err != nil {
		s.log.Error("xds generate failed; proxy keeps its last config", "node", p.proxy.ID, "err", err)
		return
	}
	lists := [4][]types.Resource{}
	for _, r := range res.Clusters {
		lists[0] = append(lists[0], r)
	}
	for _, r := range res.Endpoints {
		lists[1] = append(lists[1], r)
	}
	for _, r := range res.Listeners {
		lists[2] = append(lists[2], r)
	}
	for _, r := range res.Routes {
		lists[3] = append(lists[3], r)
	}
	version := strconv.FormatUint(s.version, 10)
	snap := &cachev3.Snapshot{}
	for i, url := range xdsapi.TypeURLs {
		t := &p.typed[i]
		if t.version == "" || !equalResources(t.resources, lists[i]) {
			t.version = version
			t.resources = lists[i]
		}
		snap.Resources[cachev3.GetResponseType(url)] = cachev3.NewResources(t.version, t.resources)
	}
	if err := s.cache.SetSnapshot(context.Background(), p.proxy.ID, snap); err != nil {
		s.log.Error("xds set snapshot failed", "node", p.proxy.ID, "err", err)
	}
}

// equalResources reports whether a and b hold the same resources, by name.
func equalResources(a, b []types.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	byName := make(map[string]types.Resource, len(a))
	for _, r := range a {
		byName[cachev3.GetResourceName(r)] = r
	}
	for _, r := range b {
		o, ok := byName[cachev3.GetResourceName(r)]
		if !ok || !proto.Equal(o, r) {
			return false
		}
	}
	return true
}

// callbacks tracks streams and their ACKs and NACKs.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamRequestFunc:  s.onStreamRequest,
		StreamResponseFunc: s.onStreamResponse,
		StreamClosedFunc:   s.onStreamClosed,
	}
}

// onStreamRequest registers a stream's proxy on its first request and sets
// its first snapshot, before the cache answers the request; on later
// requests it records ACKs and NACKs of the last response of the type. It
// runs on the stream's goroutine before the request reaches the cache.
func (s *Server) onStreamRequest(streamID int64, req *discoverygrpc.DiscoveryRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	nodeID, known := s.streams[streamID]
	if !known {
		proxy, err := proxyFromNode(req.GetNode())
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "%v", err)
		}
		nodeID = proxy.ID
		if old, ok := s.proxies[nodeID]; ok {
			// A reconnect whose old stream is not closed yet: the new stream
			// takes the node over.
			delete(s.streams, old.streamID)
		}
		p := &proxyState{streamID: streamID, proxy: proxy}
		s.streams[streamID] = nodeID
		s.proxies[nodeID] = p
		s.updateLocked(p)
		s.log.Info("xds proxy connected", "node", nodeID, "stream", streamID)
		return nil
	}
	p := s.proxies[nodeID]
	i := typeIndex(req.GetTypeUrl())
	if p == nil || i < 0 {
		return nil
	}
	t := &p.typed[i]
	if req.GetResponseNonce() == "" || req.GetResponseNonce() != t.nonce {
		return nil // a new subscription or a stale nonce: not an answer to our last response
	}
	if d := req.GetErrorDetail(); d != nil {
		t.nacked, t.nackError = t.sent, d.GetMessage()
		s.log.Warn("xds NACK", "node", nodeID, "type", xdsapi.ShortType(req.GetTypeUrl()),
			"version", t.sent, "err", d.GetMessage())
		// A NACK carries the last version the proxy accepted, so the cache
		// would resend the rejected version at once, and the proxy would
		// NACK it again, in a loop. As Istio does, wait for a config change
		// instead: the cache is told the rejected version is current.
		req.VersionInfo = t.sent
		return nil
	}
	t.acked = t.sent
	t.nacked, t.nackError = "", ""
	return nil
}

// onStreamResponse records the version and nonce of a response about to be
// sent.
func (s *Server) onStreamResponse(_ context.Context, streamID int64, _ *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxies[s.streams[streamID]]
	i := typeIndex(resp.GetTypeUrl())
	if p == nil || p.streamID != streamID || i < 0 {
		return
	}
	p.typed[i].sent = resp.GetVersionInfo()
	p.typed[i].nonce = resp.GetNonce()
}

// onStreamClosed forgets the stream's proxy, unless a newer stream took the
// node over.
func (s *Server) onStreamClosed(streamID int64, _ *corev3.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nodeID, ok := s.streams[streamID]
	if !ok {
		return
	}
	delete(s.streams, streamID)
	if p := s.proxies[nodeID]; p != nil && p.streamID == streamID {
		delete(s.proxies, nodeID)
		s.cache.ClearSnapshot(nodeID)
		s.log.Info("xds proxy disconnected", "node", nodeID, "stream", streamID)
	}
}

package xds

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// proxyState is one connected proxy: what it was last given and how it
// answered.
type proxyState struct {
	// streamID, proxy, cluster and version are set at creation and never
	// change.
	streamID int64
	proxy    *model.Proxy
	cluster  string // node metadata CLUSTER_ID
	version  string // node user_agent_name/user_agent_version, e.g. "loom-proxy/1.0"
	// generate builds the proxy's resources: Options.GenerateGRPC for a
	// proxyless gRPC node (see generatorFor), else Options.Generate.
	generate Generator
	// cache is the snapshot cache serving the proxy: Server.grpcCache for
	// a proxyless gRPC node, else Server.cache.
	cache cachev3.SnapshotCache

	// genMu serialises the generations of this proxy (a push and the
	// proxy's first request may race; one runs at a time) and guards the
	// fields below, up to typed. It may be held while taking Server.mu,
	// never the other way round.
	genMu sync.Mutex
	// applied is the push sequence number of the last generation kept; a
	// generation of an older or equal push is dropped.
	applied uint64
	// gen holds, per served type (index into xdsapi.TypeURLs), the
	// resources of the current snapshot and their version.
	gen [4]genState
	// secrets is the SDS part of the current snapshot: the secrets the
	// proxy's config names over ADS (translate.Resources.Secrets), asked
	// for by name, so outside xdsapi.TypeURLs.
	secrets genState

	// typed is the ADS sync status per served type. Guarded by Server.mu.
	typed [4]typeState
	// connectedAt and lastACK are when the stream's first request came and
	// when the proxy last ACKed a response. Guarded by Server.mu.
	connectedAt, lastACK time.Time
	// conv is the latest push the proxy has not been sent all of; nil when
	// none. Guarded by Server.mu.
	conv *convergence
}

// genState is one type's resources in a proxy's current snapshot.
type genState struct {
	version   string
	resources []types.Resource
}

// typeState is the ADS sync status of one type of one proxy.
type typeState struct {
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
	ID      string       `json:"id"`                // node ID
	Cluster string       `json:"cluster,omitempty"` // node metadata CLUSTER_ID
	Version string       `json:"version,omitempty"` // the proxy's user agent and version
	Types   []TypeStatus `json:"types"`
	// ConnectedAt is when the proxy's stream sent its first request.
	ConnectedAt time.Time `json:"connected_at,omitzero"`
	// LastACK is when the proxy last ACKed a response of any type: the
	// age of the config it serves. Zero before the first ACK.
	LastACK time.Time `json:"last_ack,omitzero"`
}

// Syncz returns the sync status of every connected proxy, sorted by node
// ID, each with the types CDS, EDS, LDS, RDS in that order. It never waits
// for a push: generation runs outside the lock it takes.
func (s *Server) Syncz() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.proxies))
	for id, p := range s.proxies {
		ps := ProxyStatus{ID: id, Cluster: p.cluster, Version: p.version, Types: make([]TypeStatus, len(xdsapi.TypeURLs)),
			ConnectedAt: p.connectedAt, LastACK: p.lastACK}
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
		Locality:         model.Locality(meta.Locality),
	}, nil
}

// update regenerates p's resources from pc, the push context of push
// number seq, and queues p's new snapshot for the cache. It runs without
// s.mu held, which it takes only to check that p is still connected and to
// queue the snapshot. A type's version changes only when its resources do.
// The result is dropped when p has disconnected or a generation of a
// newer (or the same) push was kept already. It returns the generation's
// error; p then keeps its last snapshot.
//
// conv, when set, is the config change the push is for: the types it
// changes for p are then tracked until their responses are sent, for
// pilot_proxy_convergence_time. The first config of a proxy has none.
func (s *Server) update(p *proxyState, pc *model.PushContext, seq uint64, conv *convergence) error {
	p.genMu.Lock()
	defer p.genMu.Unlock()
	if seq <= p.applied {
		return nil
	}
	res, err := p.generate(pc, p.proxy)
	if err != nil {
		return fmt.Errorf("generate config of %s: %w", p.proxy.ID, err)
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
	version := s.versionOf(seq)
	next := p.gen
	snap := &cachev3.Snapshot{}
	var changed uint8
	for i, url := range xdsapi.TypeURLs {
		g := &next[i]
		if g.version == "" || !equalResources(g.resources, lists[i]) {
			g.version = version
			g.resources = lists[i]
			changed |= 1 << i
		}
		snap.Resources[cachev3.GetResponseType(url)] = cachev3.NewResources(g.version, g.resources)
	}

	secrets := p.secrets
	var secretList []types.Resource
	for _, r := range res.Secrets {
		secretList = append(secretList, r)
	}
	if secrets.version == "" || !equalResources(secrets.resources, secretList) {
		secrets = genState{version: version, resources: secretList}
	}
	snap.Resources[cachev3.GetResponseType(xdsapi.SecretType)] = cachev3.NewResources(secrets.version, secrets.resources)

	s.mu.Lock()
	if s.proxies[p.proxy.ID] != p {
		s.mu.Unlock()
		return nil // disconnected, or replaced by a newer stream of the node
	}
	p.applied, p.gen, p.secrets = seq, next, secrets
	if conv != nil && changed != 0 {
		// Only the types the proxy subscribed to get a response.
		for i := range p.typed {
			if p.typed[i].nonce == "" {
				changed &^= 1 << i
			}
		}
		if changed != 0 {
			c := *conv
			c.version, c.pending = version, changed
			p.conv = &c
		}
	}
	flush := s.queueWriteLocked(p.proxy.ID, p.cache, snap)
	s.mu.Unlock()
	if flush {
		s.flushWrites(p.proxy.ID)
	}
	return nil
}

// versionOf is the resource version of push number seq: the process's
// version prefix, "-", seq in decimal ("m3k1x9q2a0-7").
func (s *Server) versionOf(seq uint64) string {
	return s.versionPrefix + "-" + strconv.FormatUint(seq, 10)
}

// cacheWrite is the pending write of one node's entry in the snapshot
// cache. Guarded by Server.mu.
type cacheWrite struct {
	cache   cachev3.SnapshotCache // the cache to set snap in
	snap    *cachev3.Snapshot     // the snapshot to set; nil clears the entry in both caches
	pending bool                  // snap is yet to be written
	busy    bool                  // a goroutine is running flushWrites for the node
}

// queueWriteLocked records that node's entry in cache must become snap
// (nil: node's entries in both caches are cleared), replacing any write not yet done, as each write replaces the
// whole entry. It reports whether the caller must run flushWrites for
// node after releasing s.mu; false means another goroutine is flushing and
// will write snap. Writes queued in order under s.mu reach the cache in
// that order. s.mu must be held.
func (s *Server) queueWriteLocked(node string, cache cachev3.SnapshotCache, snap *cachev3.Snapshot) bool {
	w := s.writes[node]
	if w == nil {
		w = &cacheWrite{}
		s.writes[node] = w
	}
	w.cache, w.snap, w.pending = cache, snap, true
	if w.busy {
		return false
	}
	w.busy = true
	return true
}

// flushWrites writes node's queued cache writes until none is left. Only
// the caller that queueWriteLocked told to runs it, without s.mu held, as
// SetSnapshot may block until the node's streams take their responses.
func (s *Server) flushWrites(node string) {
	for {
		s.mu.Lock()
		w := s.writes[node]
		if !w.pending {
			delete(s.writes, node)
			s.mu.Unlock()
			return
		}
		cache, snap := w.cache, w.snap
		w.cache, w.snap, w.pending = nil, nil, false
		s.mu.Unlock()
		if snap == nil {
			// A node that reconnects as another kind of client leaves no
			// entry behind in the cache it used before.
			s.cache.ClearSnapshot(node)
			s.grpcCache.ClearSnapshot(node)
			continue
		}
		if err := cache.SetSnapshot(context.Background(), node, snap); err != nil {
			s.log.Error("xds set snapshot failed", "node", node, "err", err)
		}
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
		StreamOpenFunc:     s.onStreamOpen,
		StreamRequestFunc:  s.onStreamRequest,
		StreamResponseFunc: s.onStreamResponse,
		StreamClosedFunc:   s.onStreamClosed,
	}
}

// onStreamOpen records the verified client certificate of a stream on the
// TLS port, for connect to authorize.
func (s *Server) onStreamOpen(ctx context.Context, streamID int64, _ string) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	s.mu.Lock()
	s.peers[streamID] = ti.State.VerifiedChains[0][0]
	s.mu.Unlock()
	return nil
}

// onStreamRequest registers a stream's proxy on its first request (see
// connect); on later requests it records ACKs and NACKs of the last
// response of the type. It runs on the stream's goroutine before the
// request reaches the cache; an error ends the stream.
func (s *Server) onStreamRequest(streamID int64, req *discoverygrpc.DiscoveryRequest) error {
	s.mu.Lock()
	nodeID, known := s.streams[streamID]
	if known {
		s.recordAnswerLocked(nodeID, req)
	}
	s.mu.Unlock()
	if !known {
		return s.connect(streamID, req.GetNode())
	}
	return nil
}

// connect registers the proxy of a stream's first request and generates
// its first snapshot before the cache answers the request. A node ID that
// does not parse ends the stream with codes.InvalidArgument; a client
// certificate that SecureOptions.Authorize refuses for the node, with
// codes.PermissionDenied; a failed
// generation ends it with codes.Internal, as a proxy given no config would
// otherwise wait on its stream forever.
func (s *Server) connect(streamID int64, node *corev3.Node) error {
	proxy, err := proxyFromNode(node)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "%v", err)
	}
	nodeID := proxy.ID
	s.mu.Lock()
	leaf := s.peers[streamID]
	s.mu.Unlock()
	if leaf != nil && s.opts.Secure != nil && s.opts.Secure.Authorize != nil {
		if err := s.opts.Secure.Authorize(leaf, proxy.Namespace, proxy.ServiceAccount); err != nil {
			s.log.Warn("xds stream refused: the client certificate does not match the node", "node", nodeID, "stream", streamID, "err", err)
			return status.Errorf(codes.PermissionDenied, "authorization failed: %v", err)
		}
	}
	p := &proxyState{streamID: streamID, proxy: proxy, cluster: xdsapi.ParseNodeMeta(node).ClusterID, version: userAgent(node),
		generate: s.generatorFor(node), cache: s.cacheFor(node), connectedAt: time.Now()}
	s.mu.Lock()
	if old, ok := s.proxies[nodeID]; ok {
		// A reconnect whose old stream is not closed yet: the new stream
		// takes the node over.
		delete(s.streams, old.streamID)
	}
	s.streams[streamID] = nodeID
	s.proxies[nodeID] = p
	pc, seq := s.pc, s.version
	s.mu.Unlock()
	if pc == nil {
		// No push yet: build the first push context, outside s.mu. A push
		// meanwhile regenerates p too, as p is registered.
		first := model.NewPushContext(s.snapshot())
		s.mu.Lock()
		if s.pc == nil {
			s.pc = first
		}
		pc, seq = s.pc, s.version
		s.mu.Unlock()
	}

	if err := s.update(p, pc, seq, nil); err != nil {
		s.mu.Lock()
		flush := s.removeLocked(streamID)
		s.mu.Unlock()
		if flush {
			s.flushWrites(nodeID)
		}
		s.log.Error("xds first config of a proxy failed; closing its stream", "node", nodeID, "stream", streamID, "err", err)
		return status.Errorf(codes.Internal, "%v", err)
	}
	s.log.Info("xds proxy connected", "node", nodeID, "stream", streamID)
	return nil
}

// recordAnswerLocked records req as an ACK or NACK when it answers the
// last response of its type sent to nodeID. s.mu must be held.
func (s *Server) recordAnswerLocked(nodeID string, req *discoverygrpc.DiscoveryRequest) {
	p := s.proxies[nodeID]
	i := typeIndex(req.GetTypeUrl())
	if p == nil || i < 0 {
		return
	}
	t := &p.typed[i]
	if req.GetResponseNonce() == "" || req.GetResponseNonce() != t.nonce {
		return // a new subscription or a stale nonce: not an answer to our last response
	}
	if d := req.GetErrorDetail(); d != nil {
		s.metrics.rejects.WithLabelValues(metricType(req.GetTypeUrl())).Inc()
		t.nacked, t.nackError = t.sent, d.GetMessage()
		s.log.Warn("xds NACK", "node", nodeID, "type", xdsapi.ShortType(req.GetTypeUrl()),
			"version", t.sent, "err", d.GetMessage())
		// A NACK carries the last version the proxy accepted, so the cache
		// would resend the rejected version at once, and the proxy would
		// NACK it again, in a loop. As Istio does, wait for a config change
		// instead: the cache is told the rejected version is current.
		req.VersionInfo = t.sent
		return
	}
	t.acked = t.sent
	t.nacked, t.nackError = "", ""
	p.lastACK = time.Now()
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
	s.metrics.pushes.WithLabelValues(metricType(resp.GetTypeUrl())).Inc()
	if c := p.conv; c != nil && c.version == resp.GetVersionInfo() && c.pending&(1<<i) != 0 {
		now := time.Now()
		s.metrics.pushTime.WithLabelValues(metricType(resp.GetTypeUrl())).Observe(now.Sub(c.pushStart).Seconds())
		if c.pending &^= 1 << i; c.pending == 0 {
			s.metrics.convergence.Observe(now.Sub(c.changed).Seconds())
			p.conv = nil
		}
	}
}

// onStreamClosed forgets the stream's proxy, unless a newer stream took the
// node over.
func (s *Server) onStreamClosed(streamID int64, _ *corev3.Node) {
	s.mu.Lock()
	delete(s.peers, streamID)
	nodeID := s.streams[streamID]
	flush := s.removeLocked(streamID)
	s.mu.Unlock()
	if flush {
		s.flushWrites(nodeID)
	}
}

// removeLocked forgets streamID and, unless a newer stream took its node
// over, the node's proxy, whose cache entry it queues for clearing. It
// reports whether the caller must run flushWrites for the node after
// releasing s.mu. s.mu must be held.
func (s *Server) removeLocked(streamID int64) bool {
	nodeID, ok := s.streams[streamID]
	if !ok {
		return false
	}
	delete(s.streams, streamID)
	p := s.proxies[nodeID]
	if p == nil || p.streamID != streamID {
		return false
	}
	delete(s.proxies, nodeID)
	s.log.Info("xds proxy disconnected", "node", nodeID, "stream", streamID)
	return s.queueWriteLocked(nodeID, nil, nil)
}

// Node metadata naming the generator of a node, as Istio's
// pilot/pkg/model NodeMetadata.Generator: Istio's agent writes
// GENERATOR: grpc into the bootstrap of a proxyless gRPC application.
const (
	metaGenerator = "GENERATOR"
	generatorGRPC = "grpc"
)

// generatorFor is the generator of node: Options.GenerateGRPC when its
// metadata GENERATOR is "grpc", else Options.Generate.
func (s *Server) generatorFor(n *corev3.Node) Generator {
	if isGRPC(n) {
		return s.opts.GenerateGRPC
	}
	return s.opts.Generate
}

// cacheFor is the snapshot cache serving node: Server.grpcCache when its
// metadata GENERATOR is "grpc", else Server.cache.
func (s *Server) cacheFor(n *corev3.Node) cachev3.SnapshotCache {
	if isGRPC(n) {
		return s.grpcCache
	}
	return s.cache
}

// muxCache is the cache the ADS server reads: each request goes to
// cacheFor its node, which the sotw server sets on every request of a
// stream.
func (s *Server) muxCache() *cachev3.MuxCache {
	const envoyKey, grpcKey = "envoy", "grpc"
	key := func(n *corev3.Node) string {
		if isGRPC(n) {
			return grpcKey
		}
		return envoyKey
	}
	return &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return key(r.GetNode()) },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return key(r.GetNode()) },
		Caches:        map[string]cachev3.Cache{envoyKey: s.cache, grpcKey: s.grpcCache},
	}
}

// isGRPC reports whether node is a proxyless gRPC client: its metadata
// GENERATOR is "grpc".
func isGRPC(n *corev3.Node) bool {
	return n.GetMetadata().GetFields()[metaGenerator].GetStringValue() == generatorGRPC
}

// userAgent renders a node's user agent as "NAME/VERSION", "NAME", or "".
func userAgent(n *corev3.Node) string {
	name, v := n.GetUserAgentName(), n.GetUserAgentVersion()
	switch {
	case name == "":
		return v
	case v == "":
		return name
	}
	return name + "/" + v
}

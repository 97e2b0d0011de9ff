package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Defaults of Options.
const (
	DefaultAddr       = "127.0.0.1:15010"
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// Options configure a Client.
type Options struct {
	// Addr is the control plane's xDS address, "host:port": plaintext
	// unless Creds is set. Default DefaultAddr (loomd's 127.0.0.1:15010).
	Addr string
	// Creds, when set, secures the connection (loomd's 15012 with the
	// agent's mTLS config, agent.XDSTLS). Nil means plaintext.
	Creds credentials.TransportCredentials
	// Node identifies the proxy on the stream (Istio node ID and metadata,
	// see xdsapi.BuildNode). Required.
	Node *corev3.Node
	// Logger receives NACKs (Warn) and stream errors. Default: discard.
	Logger *slog.Logger
	// Apply receives each new Generation, before the response that produced
	// it is ACKed. It is called from Run's goroutine, one call at a time, and
	// should only publish the generation (an atomic swap). Required.
	Apply func(*config.Generation)
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles
	// after each failed stream and resets after a stream that received a
	// response. Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Secrets receives the secrets fetched over ADS: the client asks for
	// the names the applied generation's TLS contexts give with
	// sds_config ads (type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret),
	// and stores each accepted one. Nil: no secret is fetched, and TLS
	// handshakes that need one fail.
	Secrets *secret.Store
	// FilterDeps are the proxy's services the HTTP filters of each
	// generation are built with (config.BuildWith); the zero value has
	// none.
	FilterDeps filter.Deps
}

// Client is an ADS state-of-the-world client. Create it with New and
// drive it with Run; Status is safe to call from any goroutine.
type Client struct {
	opts Options
	log  *slog.Logger

	// Owned by the goroutine in Run.
	// accepted are the latest accepted resources per type URL, serialized
	// (config.Encoded: decoded they are several times larger, and only a
	// build needs them decoded).
	accepted map[string][][]byte
	versions map[string]string  // latest accepted version_info per type URL
	gen      *config.Generation // latest applied generation
	// secretNames are the secret names subscribed to on the stream (sent);
	// secretNonce is the nonce of the last Secret response; stored are the
	// names this client put in Options.Secrets.
	secretNames []string
	secretNonce string
	stored      map[string]bool

	// mu guards the fields below.
	mu        sync.Mutex
	connected bool
	genNumber uint64
	status    map[string]*TypeStatus
}

// TypeStatus is the state of one resource type on the stream.
type TypeStatus struct {
	TypeURL string
	Short   string // CDS, EDS, LDS, RDS or SDS
	// Version is the version_info last accepted (ACKed); "" before the first.
	Version string
	// Nonce is the nonce of the last response received.
	Nonce string
	// NackVersion is the version_info of the last rejected response, and
	// NackError its error, until a later response of the type is accepted.
	NackVersion string
	NackError   string
}

// Status is a snapshot of the client's stream state, for the admin page.
type Status struct {
	// Connected is true while a stream is open.
	Connected bool
	// Types lists CDS, EDS, LDS, RDS and SDS in that order.
	Types []TypeStatus
	// Generation is the Number of the latest applied generation, 0 before
	// the first.
	Generation uint64
}

// New validates opts and returns a Client. It does not connect.
func New(opts Options) (*Client, error) {
	if opts.Node == nil {
		return nil, errors.New("xdsclient: Node is required")
	}
	if opts.Apply == nil {
		return nil, errors.New("xdsclient: Apply is required")
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	l := opts.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		opts:     opts,
		log:      l.With("component", "xdsclient", "xds_addr", opts.Addr, "node", opts.Node.GetId()),
		accepted: map[string][][]byte{},
		versions: map[string]string{},
		status:   map[string]*TypeStatus{},
		stored:   map[string]bool{},
	}
	for _, t := range statusTypes {
		c.status[t] = &TypeStatus{TypeURL: t, Short: xdsapi.ShortType(t)}
	}
	return c, nil
}

// Status returns the current stream state. Safe for concurrent use.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{Connected: c.connected, Generation: c.genNumber}
	for _, t := range statusTypes {
		s.Types = append(s.Types, *c.status[t])
	}
	return s
}

// statusTypes are the types Status reports: the wildcard ones, then SDS.
var statusTypes = append(slices.Clone(xdsapi.TypeURLs), xdsapi.SecretType)

// Run keeps an ADS stream open to Options.Addr until ctx is done,
// reconnecting with exponential backoff (MinBackoff..MaxBackoff). On a new
// stream it re-subscribes with the versions it last accepted. It blocks;
// it returns nil when ctx is done and an error only if the gRPC client
// cannot be created. Run must be called once.
func (c *Client) Run(ctx context.Context) error {
	creds := c.opts.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(c.opts.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("xds client %s: %w", c.opts.Addr, err)
	}
	defer conn.Close()
	backoff := c.opts.MinBackoff
	for {
		received, err := c.stream(ctx, conn)
		c.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		if received {
			backoff = c.opts.MinBackoff
		}
		c.log.Warn("xds stream ended; reconnecting", "error", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, c.opts.MaxBackoff)
	}
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	c.mu.Unlock()
}

// stream runs one ADS stream until it fails or ctx is done. received says
// whether any response arrived.
func (c *Client) stream(ctx context.Context, conn *grpc.ClientConn) (received bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx, grpc.WaitForReady(true))
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	for _, t := range xdsapi.TypeURLs {
		// Wildcard subscription: no resource_names.
		req := &discoveryv3.DiscoveryRequest{Node: c.opts.Node, TypeUrl: t, VersionInfo: c.versions[t]}
		if err := st.Send(req); err != nil {
			return false, fmt.Errorf("subscribe %s: %w", xdsapi.ShortType(t), err)
		}
	}
	// Secrets are asked for by name, on a new stream as on the old one.
	c.secretNames, c.secretNonce = nil, ""
	if err := c.subscribeSecrets(st); err != nil {
		return false, err
	}
	c.setConnected(true)
	for {
		resp, err := st.Recv()
		if err != nil {
			return received, fmt.Errorf("receive: %w", err)
		}
		received = true
		var ack *discoveryv3.DiscoveryRequest
		if resp.GetTypeUrl() == xdsapi.SecretType {
			ack = c.handleSecrets(resp)
		} else {
			ack = c.handle(resp)
		}
		if err := st.Send(ack); err != nil {
			return received, fmt.Errorf("send ack: %w", err)
		}
		if err := c.subscribeSecrets(st); err != nil {
			return received, err
		}
	}
}

// subscribeSecrets asks for the ADS secrets the applied generation names
// when they differ from those asked for on this stream (a SotW request
// naming the new set; an empty set unsubscribes).
func (c *Client) subscribeSecrets(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) error {
	if c.opts.Secrets == nil || c.gen == nil {
		return nil
	}
	want := c.gen.ADSSecretNames()
	if slices.Equal(want, c.secretNames) {
		return nil
	}
	req := &discoveryv3.DiscoveryRequest{Node: c.opts.Node, TypeUrl: xdsapi.SecretType, ResourceNames: want,
		VersionInfo: c.versions[xdsapi.SecretType], ResponseNonce: c.secretNonce}
	if want == nil {
		req.ResourceNames = []string{}
	}
	if err := st.Send(req); err != nil {
		return fmt.Errorf("subscribe SDS: %w", err)
	}
	c.secretNames = want
	for n := range c.stored { // no longer named: gone from the store
		if !slices.Contains(want, n) {
			c.opts.Secrets.Delete(n)
			delete(c.stored, n)
		}
	}
	return nil
}

// nack fills req as the NACK of resp for err (version_info stays the last
// accepted), records it for Status, and returns req.
func (c *Client) nack(req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse, err error) *discoveryv3.DiscoveryRequest {
	typ := resp.GetTypeUrl()
	req.VersionInfo = c.versions[typ]
	req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
	c.log.Warn("xds update rejected (NACK)", "type", xdsapi.ShortType(typ), "version", resp.GetVersionInfo(),
		"kept_version", c.versions[typ], "error", err)
	c.mu.Lock()
	if s := c.status[typ]; s != nil {
		s.Nonce, s.NackVersion, s.NackError = resp.GetNonce(), resp.GetVersionInfo(), err.Error()
	}
	c.mu.Unlock()
	return req
}

// handleSecrets validates a Secret response and, when every secret in it
// is valid, stores them (a rotated certificate applies to the next
// handshake) and returns the ACK; otherwise it returns the NACK and the
// stored secrets stay.
func (c *Client) handleSecrets(resp *discoveryv3.DiscoveryResponse) *discoveryv3.DiscoveryRequest {
	typ := resp.GetTypeUrl()
	c.secretNonce = resp.GetNonce()
	req := &discoveryv3.DiscoveryRequest{Node: c.opts.Node, TypeUrl: typ, ResponseNonce: resp.GetNonce(), ResourceNames: c.secretNames}
	secs, err := c.buildSecrets(resp)
	if err != nil {
		return c.nack(req, resp, err)
	}
	got := map[string]bool{}
	for _, sec := range secs {
		sec.Source, sec.Version = secret.SourceADS, resp.GetVersionInfo()
		c.opts.Secrets.Set(sec)
		c.stored[sec.Name], got[sec.Name] = true, true
	}
	for n := range c.stored { // SotW: a named secret left out no longer exists
		if !got[n] {
			c.opts.Secrets.Delete(n)
			delete(c.stored, n)
		}
	}
	c.versions[typ] = resp.GetVersionInfo()
	req.VersionInfo = resp.GetVersionInfo()
	c.log.Debug("xds secrets applied", "version", resp.GetVersionInfo(), "secrets", len(secs))
	c.mu.Lock()
	s := c.status[typ]
	s.Version, s.Nonce, s.NackVersion, s.NackError = resp.GetVersionInfo(), resp.GetNonce(), "", ""
	c.mu.Unlock()
	return req
}

// buildSecrets decodes and validates every secret of a response.
func (c *Client) buildSecrets(resp *discoveryv3.DiscoveryResponse) ([]*secret.Secret, error) {
	if c.opts.Secrets == nil {
		return nil, errors.New("secrets are not accepted: no secret store")
	}
	var out []*secret.Secret
	seen := map[string]bool{}
	for i, a := range resp.GetResources() {
		var s tlsv3.Secret
		if a.GetTypeUrl() != xdsapi.SecretType {
			return nil, fmt.Errorf("resources[%d]: type_url %q: must be %s", i, a.GetTypeUrl(), xdsapi.SecretType)
		}
		if err := a.UnmarshalTo(&s); err != nil {
			return nil, fmt.Errorf("resources[%d]: decode %s: %w", i, xdsapi.SecretType, err)
		}
		sec, err := config.BuildSecret(&s)
		if err != nil {
			return nil, err
		}
		if seen[sec.Name] {
			return nil, fmt.Errorf("secret %q: name: duplicate", sec.Name)
		}
		seen[sec.Name] = true
		out = append(out, sec)
	}
	return out, nil
}

// handle builds a generation from resp and returns the ACK or NACK.
func (c *Client) handle(resp *discoveryv3.DiscoveryResponse) *discoveryv3.DiscoveryRequest {
	typ := resp.GetTypeUrl()
	req := &discoveryv3.DiscoveryRequest{Node: c.opts.Node, TypeUrl: typ, ResponseNonce: resp.GetNonce()}
	g, err := c.build(resp)
	if err != nil {
		return c.nack(req, resp, err)
	}
	c.versions[typ] = resp.GetVersionInfo()
	c.gen = g
	c.opts.Apply(g)
	req.VersionInfo = resp.GetVersionInfo()
	c.log.Debug("xds update applied", "type", xdsapi.ShortType(typ), "version", resp.GetVersionInfo(), "generation", g.Number)
	c.mu.Lock()
	s := c.status[typ]
	s.Version, s.Nonce, s.NackVersion, s.NackError = resp.GetVersionInfo(), resp.GetNonce(), "", ""
	c.genNumber = g.Number
	c.mu.Unlock()
	return req
}

// build decodes resp and builds a full generation from it and the
// accepted resources of the other types, decoded again. On success it
// records resp's resources, serialized, as accepted.
func (c *Client) build(resp *discoveryv3.DiscoveryResponse) (*config.Generation, error) {
	typ := resp.GetTypeUrl()
	if _, ok := c.status[typ]; !ok {
		return nil, fmt.Errorf("type_url %q: not subscribed", typ)
	}
	vals := make([][]byte, 0, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		if a.GetTypeUrl() != typ {
			return nil, fmt.Errorf("resources[%d]: type_url %q: must be %s", i, a.GetTypeUrl(), typ)
		}
		vals = append(vals, a.GetValue())
	}
	versions := maps.Clone(c.versions)
	versions[typ] = resp.GetVersionInfo()
	pick := func(t string) [][]byte {
		if t == typ {
			return vals
		}
		return c.accepted[t]
	}
	enc := &config.Encoded{
		Listeners: pick(xdsapi.ListenerType),
		Routes:    pick(xdsapi.RouteType),
		Clusters:  pick(xdsapi.ClusterType),
		Endpoints: pick(xdsapi.EndpointType),
		Versions:  versions,
	}
	// Every type is decoded anew for the build and dropped after it: the
	// generation keeps enc (its config_dump decodes again).
	g, err := config.BuildEncoded(enc, c.gen, c.opts.FilterDeps)
	if err != nil {
		return nil, err
	}
	c.accepted[typ] = vals
	return g, nil
}

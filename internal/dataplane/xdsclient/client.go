package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
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
	accepted map[string][]proto.Message // latest accepted resources per type URL
	versions map[string]string          // latest accepted version_info per type URL
	gen      *config.Generation         // latest applied generation

	// mu guards the fields below.
	mu        sync.Mutex
	connected bool
	genNumber uint64
	status    map[string]*TypeStatus
}

// TypeStatus is the state of one resource type on the stream.
type TypeStatus struct {
	TypeURL string
	Short   string // CDS, EDS, LDS or RDS
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
	// Types lists CDS, EDS, LDS and RDS in that order.
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
		accepted: map[string][]proto.Message{},
		versions: map[string]string{},
		status:   map[string]*TypeStatus{},
	}
	for _, t := range xdsapi.TypeURLs {
		c.status[t] = &TypeStatus{TypeURL: t, Short: xdsapi.ShortType(t)}
	}
	return c, nil
}

// Status returns the current stream state. Safe for concurrent use.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{Connected: c.connected, Generation: c.genNumber}
	for _, t := range xdsapi.TypeURLs {
		s.Types = append(s.Types, *c.status[t])
	}
	return s
}

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
	c.setConnected(true)
	for {
		resp, err := st.Recv()
		if err != nil {
			return received, fmt.Errorf("receive: %w", err)
		}
		received = true
		if err := st.Send(c.handle(resp)); err != nil {
			return received, fmt.Errorf("send ack: %w", err)
		}
	}
}

// handle builds a generation from resp and returns the ACK or NACK.
func (c *Client) handle(resp *discoveryv3.DiscoveryResponse) *discoveryv3.DiscoveryRequest {
	typ := resp.GetTypeUrl()
	req := &discoveryv3.DiscoveryRequest{Node: c.opts.Node, TypeUrl: typ, ResponseNonce: resp.GetNonce()}
	g, err := c.build(resp)
	if err != nil {
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
// accepted resources of the other types. On success it records resp's
// resources as accepted.
func (c *Client) build(resp *discoveryv3.DiscoveryResponse) (*config.Generation, error) {
	typ := resp.GetTypeUrl()
	if _, ok := c.status[typ]; !ok {
		return nil, fmt.Errorf("type_url %q: not subscribed", typ)
	}
	msgs := make([]proto.Message, 0, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		if a.GetTypeUrl() != typ {
			return nil, fmt.Errorf("resources[%d]: type_url %q: must be %s", i, a.GetTypeUrl(), typ)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("resources[%d]: decode %s: %w", i, typ, err)
		}
		msgs = append(msgs, m)
	}
	versions := maps.Clone(c.versions)
	versions[typ] = resp.GetVersionInfo()
	pick := func(t string) []proto.Message {
		if t == typ {
			return msgs
		}
		return c.accepted[t]
	}
	res := config.Resources{
		Listeners: pick(xdsapi.ListenerType),
		Routes:    pick(xdsapi.RouteType),
		Clusters:  pick(xdsapi.ClusterType),
		Endpoints: pick(xdsapi.EndpointType),
		Versions:  versions,
	}
	g, err := config.BuildWith(res, c.gen, c.opts.FilterDeps)
	if err != nil {
		return nil, err
	}
	c.accepted[typ] = msgs
	return g, nil
}

package http

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/matcher"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
)

// Envoy's response flags (%RESPONSE_FLAGS%) set by the router.
const (
	FlagNoRoute            = "NR"
	FlagNoClusterFound     = "NC"
	FlagNoHealthyUpstream  = "UH"
	FlagUpstreamConnFail   = "UF"
	FlagUpstreamConnTerm   = "UC"
	FlagUpstreamTimeout    = "UT"
	FlagRetryLimitExceeded = "URX"
	FlagDownstreamConnTerm = "DC"
	FlagDownstreamProtoErr = "DPE"
	FlagUpstreamOverflow   = "UO"
	FlagUpstreamProtoErr   = "UPE"
)

// retryDrainBytes is how much of a retried response's body is read before
// it is closed, so that a small body does not cost the keep-alive
// connection.
const retryDrainBytes = 4 << 10

// Retry back-off, as Envoy's default: 25ms base interval, at most 10 times
// the base, fully jittered.
const (
	retryBaseInterval = 25 * time.Millisecond
	retryMaxInterval  = 10 * retryBaseInterval
)

// Options configures a ConnectionManager.
type Options struct {
	// Generation is the published config; each request loads it once. Required.
	Generation *atomic.Pointer[config.Generation]
	// Clusters picks endpoints and holds the connection pools. Required.
	Clusters *upstream.ClusterManager
	// AccessLog, if non-nil, is the proxy's stdout access log: the sink of
	// the chains' access_log entries with path /dev/stdout (Envoy's
	// stdout logger, Istio's accessLogFile /dev/stdout). Ignored when
	// Sinks is set.
	AccessLog *telemetry.AccessLog
	// Sinks, if non-nil, resolves every access log path (stdout, stderr,
	// files); nil: only /dev/stdout, to AccessLog. A request is logged
	// only by the access_log entries of its chain (config.FilterChain.
	// AccessLogs), as in Envoy.
	Sinks *telemetry.Sinks
	// Metrics, if non-nil, counts requests.
	Metrics *telemetry.Metrics
	// Tracing, if non-nil, makes the spans of chains whose HCM has
	// tracing; nil traces nothing (one nil check per request).
	Tracing *telemetry.Tracing
	// IstioStats, if non-nil, counts Istio's standard metrics of the
	// requests of chains with an istio.stats filter (config.FilterChain.HTTPStats).
	IstioStats *istiostats.Metrics
	// Exchange is the proxy's side of Istio's HTTP metadata exchange,
	// done on chains with an istio.stats filter; nil sends no identity
	// (peers still have theirs read and stripped).
	Exchange *istiostats.Exchange
	Logger   *slog.Logger
	// MaxMirrorsInFlight bounds the mirrored (shadow) requests under way
	// at once; past it a mirror is dropped and counted. Default
	// DefaultMaxMirrorsInFlight.
	MaxMirrorsInFlight int
}

// ConnectionManager is Envoy's HTTP connection manager
// (envoy.filters.network.http_connection_manager): it matches the route,
// runs the listener's compiled HTTP filters (config.Listener.HTTPFilters)
// and then the router (envoy.filters.http.router). A listener whose chain
// is the router alone pays nothing for filters. It is safe for concurrent use; it starts no
// goroutine of its own.
type ConnectionManager struct {
	gen      *atomic.Pointer[config.Generation]
	clusters *upstream.ClusterManager
	sinks    *telemetry.Sinks
	metrics  *telemetry.Metrics
	tracing  *telemetry.Tracing
	istio    *istiostats.Metrics
	exchange *istiostats.Exchange
	logger   *slog.Logger
	mirrors  mirrorPool
	tunnels  tunnels // upgraded (WebSocket) connections under way
}

// New makes a ConnectionManager. It fails when Generation or Clusters is nil.
func New(opts Options) (*ConnectionManager, error) {
	if opts.Generation == nil || opts.Clusters == nil {
		return nil, errors.New("connection manager: Generation and Clusters are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxMirrorsInFlight <= 0 {
		opts.MaxMirrorsInFlight = DefaultMaxMirrorsInFlight
	}
	cm := &ConnectionManager{
		gen:      opts.Generation,
		clusters: opts.Clusters,
		sinks:    opts.Sinks,
		metrics:  opts.Metrics,
		tracing:  opts.Tracing,
		istio:    opts.IstioStats,
		exchange: opts.Exchange,
		logger:   opts.Logger.With("component", "http"),
	}
	if cm.sinks == nil {
		cm.sinks = telemetry.NewSinks(opts.AccessLog, nil, opts.Logger)
	}
	cm.mirrors.init(opts.MaxMirrorsInFlight)
	return cm, nil
}

// Close cancels the mirrored requests under way and waits for their
// goroutines to end; mirrors of later requests are dropped. It closes the
// upgraded (WebSocket) connections under way, whose handlers then return,
// and refuses later upgrades. Other requests are not affected. It is safe
// to call more than once.
func (cm *ConnectionManager) Close() error {
	cm.mirrors.close()
	cm.tunnels.close()
	return nil
}

// Handler returns the http.Handler of filter chain fc of the listener
// named listener. The handler resolves the chain (by listener name and
// chain Key) in the generation current at each request, so one handler
// serves every generation in which the chain is unchanged; a request on a
// connection whose chain changed or left the config (the connection is
// draining) is served with fc as it was, against the current route tables
// and clusters.
func (cm *ConnectionManager) Handler(listener string, fc *config.FilterChain) http.Handler {
	return &listenerHandler{cm: cm, name: listener, own: fc}
}

type listenerHandler struct {
	cm   *ConnectionManager
	name string
	own  *config.FilterChain
}

// chain returns the handler's filter chain in gen: the current one when
// it is unchanged, else its own.
func (h *listenerHandler) chain(gen *config.Generation) *config.FilterChain {
	if gen != nil {
		if fc := gen.Listeners[h.name].Chain(h.own.Key); fc != nil && fc.Hash == h.own.Hash {
			return fc
		}
	}
	return h.own
}

// reqState is the per-request scratch space, pooled. Nothing in it is
// handed to an upstream transport: net/http's HTTP/2 transport may still
// read or close a request body after RoundTrip returned.
type reqState struct {
	entry telemetry.Entry
	// fc is the request's filter chain (its access logs); logged: one of
	// them writes somewhere, and the entry's access-log fields are filled.
	fc     *config.FilterChain
	logged bool
	// span is the request's span; nil when its chain has no tracing.
	span *telemetry.Span
	// probe records what an access log reads that only the upstream
	// transports see (nil when none does); made per request, as
	// transports may call it late.
	probe *upstreamProbe
	// ridAdded: the proxy generated the request's X-Request-Id (it is not
	// one of the headers the client sent, for the header limits).
	ridAdded bool
	// stats is the chain's istio.stats config, nil for none; peer is the
	// downstream peer a destination reporter read from the request.
	stats  *istiostats.Config
	peer   *istiostats.Peer
	labels istiostats.Labels
	// routeCluster is the cluster the matched route picked before the
	// filters ran ("" when none); istio.stats reports a request a filter
	// answered under it, as Envoy's route entry names it.
	routeCluster string

	// The fields below are set only for a listener with HTTP filters;
	// reqState is then the chain's next handler (see ServeHTTP).
	fs     filter.State
	chain  []config.HTTPFilter
	next   int // index in chain of the filter next calls
	cm     *ConnectionManager
	gen    *config.Generation
	route  *config.Route
	host   string
	body   *countingBody
	routed bool // the router ran
	abort  bool // the router's result
	// ri is fs.Route's value for a forwarding route: its cluster is
	// picked before the filters run, and the router takes it.
	ri filter.RouteInfo
}

var statePool = sync.Pool{New: func() any { return new(reqState) }}

// copyBufPool holds 32 KiB buffers for streaming bodies.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (h *listenerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cm := h.cm
	start := time.Now()
	st := statePool.Get().(*reqState)
	e := &st.entry
	*e = telemetry.Entry{StartTime: start, Method: r.Method, UpstreamServiceTime: -1}
	gen := cm.gen.Load()
	fc := h.chain(gen)
	st.fc = fc
	// The access log's own fields are taken as the request arrived, before
	// any filter or route rewrites it, and only when one of the chain's
	// access logs writes somewhere: metrics and tracing read neither them
	// nor the strings they cost.
	st.logged = cm.sinks.Enabled(fc.AccessLogs)
	if st.logged {
		fillAccessLogFields(e, r, gen, h.name)
		if needs := accesslog.LoggersNeed(fc.AccessLogs); needs != 0 {
			st.probe = newUpstreamProbe(start, needs)
		}
	}
	host := r.Host
	if r.URL.Host != "" {
		host = r.URL.Host // absolute-form request to the explicit proxy
	}
	e.Authority = host
	rid := r.Header.Get("X-Request-Id")
	st.ridAdded = rid == ""
	if rid == "" {
		rid = newRequestID()
		r.Header["X-Request-Id"] = []string{rid}
	}
	e.RequestID = rid
	// The body wrapper is per request, not pooled: an upstream transport
	// may still hold it after this handler returned.
	var body *countingBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{rc: r.Body, start: start}
		r.Body = body
	} else {
		// Envoy's last_downstream_rx_byte_received: the headers ended
		// the stream.
		e.LastDownstreamRxByteReceived = sinceStart(start)
	}

	abort := cm.serve(w, r, st, gen, fc, host, body)

	if body != nil {
		e.BytesReceived += body.n.Load() // an upgraded tunnel counted its own bytes
		e.LastDownstreamRxByteReceived = time.Duration(body.eof.Load())
	}
	if st.probe != nil {
		e.LastUpstreamTxByteSent = time.Duration(st.probe.sent.Load())
		e.UpstreamConnectionID = st.probe.connID.Load()
		st.probe = nil
	}
	e.Duration = time.Since(start)
	if st.span != nil {
		if st.logged {
			// Envoy's access logs see the connection manager's span
			// (not the router's upstream span).
			e.TraceID, e.SpanID = st.span.IDs()
		}
		st.span.End(e)
		st.span = nil
	}
	cm.metrics.Request(h.name, e.ResponseCode, e.ResponseFlags)
	if st.stats != nil {
		cm.reportIstio(w, r, st)
		st.stats, st.peer, st.routeCluster = nil, nil, ""
	}
	if st.logged {
		e.RequestHeader, e.ResponseHeader = r.Header, w.Header()
		cm.sinks.Log(st.fc.AccessLogs, e)
	}
	*e = telemetry.Entry{}
	st.fc, st.logged = nil, false
	statePool.Put(st)
	if abort {
		// The response is cut short after its headers went out: reset
		// the downstream stream, as Envoy does, rather than end it
		// cleanly and let the client take a truncated body as whole.
		panic(http.ErrAbortHandler)
	}
}

// fillAccessLogFields sets the fields of e that only access logs read
// (formats and CEL filters), from r as it arrived on listener listener of
// gen.
func fillAccessLogFields(e *telemetry.Entry, r *http.Request, gen *config.Generation, listener string) {
	e.ForwardedFor = r.Header.Get("X-Forwarded-For")
	e.UserAgent = r.Header.Get("User-Agent")
	e.DownstreamRemoteAddress = r.RemoteAddr
	e.RequestURI = r.URL.RequestURI()
	if conn := filter.RequestConnection(r); conn != nil {
		e.ConnectionID = conn.ID
		e.DownstreamPeerURISAN, e.DownstreamLocalURISAN = conn.URISANs()
		e.DownstreamTLS, e.FilterChainName = conn.TLS, conn.FilterChain
	}
	if p := r.Header.Get("X-Envoy-Original-Path"); p != "" {
		e.Path = p
	} else {
		e.Path = e.RequestURI
	}
	switch r.ProtoMajor {
	case 2:
		e.Protocol = "HTTP/2"
	default:
		e.Protocol = r.Proto
	}
	conn := filter.RequestConnection(r)
	if conn != nil {
		e.RequestedServerName = conn.ServerName
	}
	switch {
	case conn != nil && conn.Destination.IsValid():
		e.DownstreamLocalAddress = conn.Destination.String()
	case gen != nil && gen.Listeners[listener] != nil:
		// No IP destination: a pipe listener's path, as Envoy's
		// PipeInstance prints it.
		e.DownstreamLocalAddress = gen.Listeners[listener].Address
	}
	if config.IsPipe(e.DownstreamLocalAddress) {
		e.DownstreamRemoteAddress = config.PipePeer(e.DownstreamRemoteAddress, e.DownstreamLocalAddress)
	}
}

// serve matches r's route, runs the listener's HTTP filters, if any, and
// routes r, filling st.entry.
//
// gen is the generation current when r arrived and fc r's filter chain
// in it.
func (cm *ConnectionManager) serve(w http.ResponseWriter, r *http.Request, st *reqState, gen *config.Generation, fc *config.FilterChain, host string, body *countingBody) (abort bool) {
	e := &st.entry
	var route *config.Route
	maxN, maxBytes := fc.MaxRequestHeaders, fc.MaxRequestHeaderBytes
	if maxN == 0 { // a chain not made by config.Build
		maxN, maxBytes = config.DefaultMaxRequestHeaders, config.DefaultMaxRequestHeaderBytes
	}
	if n, size := requestHeaderSize(r, st.ridAdded); n > maxN || size > maxBytes {
		// Envoy's codec refuses the request before any filter or route.
		details := "http1.headers_too_large"
		if n > maxN {
			details = "http1.too_many_headers"
		}
		if r.ProtoMajor == 2 {
			details = "http2.headers_too_large"
		}
		w.Header()["Connection"] = []string{"close"}
		localReply(w, r, e, http.StatusRequestHeaderFieldsTooLarge, FlagDownstreamProtoErr, details, "")
		return false
	}
	if gen != nil {
		if fc.XFF.UseRemoteAddress {
			appendForwardedFor(r)
		}
		route = matchRoute(gen, fc, r, host, nil)
	}
	if fc.Tracing != nil && cm.tracing != nil {
		// Envoy's traceRequest, once the request ID is known; the
		// connection manager's span is the upstream's parent unless the
		// router spawns its own.
		st.span = cm.tracing.StartSpan(r, fc.Tracing, host, e.RequestID, route)
		if !fc.Tracing.SpawnUpstreamSpan {
			st.span.Inject(r.Header)
		}
		// Local replies carry it too, as Envoy sets it when encoding.
		st.span.DecorateResponse(w.Header())
	}
	if fc.HTTPStats != nil {
		// Istio's metadata exchange: a server takes the client's identity
		// off the request and answers with its own; a client sends its
		// own upstream and takes the server's off the response (forward).
		st.stats = fc.HTTPStats
		if fc.HTTPStats.Reporter == istiostats.ReporterSource {
			cm.exchange.Set(r.Header)
		} else {
			st.peer = cm.exchange.Take(r.Header)
			cm.exchange.Set(w.Header())
		}
		startGRPCMessages(r, body, e)
	}
	applyXFCC(r.Header, &fc.XFCC, r)
	if upgradeRejected(r, fc, route) {
		// Before the filters, as Envoy's connection manager decides.
		localReply(w, r, e, http.StatusForbidden, "", detailsUpgradeFailed, "")
		return false
	}
	if len(fc.HTTPFilters) == 0 {
		return cm.route(w, r, gen, route, "", host, body, e, st.span, st.probe, fc.ALPNOverride)
	}
	return cm.serveChain(w, r, st, fc, gen, route, host, body)
}

// matchRoute returns the route of r in fc's route configuration of gen,
// nil when none matches: the virtual host of host, then its first route
// that matches r with the dynamic metadata md (nil before any filter ran);
// config.SSLRedirect when the virtual host requires TLS r did not come
// over.
func matchRoute(gen *config.Generation, fc *config.FilterChain, r *http.Request, host string, md matcher.Metadata) *config.Route {
	if gen == nil {
		return nil
	}
	rt := gen.Routes[fc.RouteConfigName]
	if rt == nil {
		return nil
	}
	vh := rt.VirtualHostFor(host)
	if vh == nil {
		return nil
	}
	if vh.RequireTLS && !secureRequest(r, fc.XFF.UseRemoteAddress) {
		return config.SSLRedirect
	}
	for _, ro := range vh.Routes {
		if ro.MatchesMetadata(r, md) {
			return ro
		}
	}
	return nil
}

// secureRequest reports whether r came over TLS, as Envoy's require_tls
// decides: the connection is TLS, or, when the proxy does not trust only
// its peer's address (use_remote_address off: an edge proxy in front of
// this one terminated TLS), x-forwarded-proto says https.
func secureRequest(r *http.Request, useRemoteAddress bool) bool {
	if r.TLS != nil {
		return true
	}
	return !useRemoteAddress && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// requestHeaderSize counts the header fields r came with and their bytes
// as Envoy's codec does: every name and value, the pseudo-headers
// :method, :path and :authority included in the bytes; ridAdded leaves
// out the X-Request-Id the proxy generated. Only the header map's contents
// count, so a client's header sent twice counts twice.
func requestHeaderSize(r *http.Request, ridAdded bool) (n, size int) {
	size = len(r.Method) + len(r.RequestURI) + len(r.Host)
	for k, vv := range r.Header {
		for _, v := range vv {
			n++
			size += len(k) + len(v)
		}
	}
	if ridAdded {
		n--
		size -= len("X-Request-Id") + len(r.Header["X-Request-Id"][0])
	}
	return n, size
}

// appendForwardedFor appends the peer's address to X-Forwarded-For, as
// Envoy's connection manager does with use_remote_address (Istio's
// gateways): the next hop's remote_ip is then the client this proxy saw,
// whatever X-Forwarded-For the client sent.
func appendForwardedFor(r *http.Request) {
	src, _ := filter.RequestAddresses(r)
	if !src.IsValid() {
		return
	}
	ip := src.Addr().String()
	if vs := r.Header["X-Forwarded-For"]; len(vs) > 0 {
		vs[len(vs)-1] += "," + ip
		return
	}
	r.Header["X-Forwarded-For"] = []string{ip}
}

// serveChain runs chain with st as its next handler; the router runs
// after the last filter, unless a filter answered or the client left.
// The route timeout starts in the router, so a delay does not use it up.
func (cm *ConnectionManager) serveChain(w http.ResponseWriter, r *http.Request, st *reqState, fc *config.FilterChain,
	gen *config.Generation, route *config.Route, host string, body *countingBody) (abort bool) {
	chain := fc.HTTPFilters
	st.fs = filter.State{XFF: fc.XFF, Upstreams: cm.clusters}
	st.chain, st.next, st.cm, st.gen, st.route, st.host, st.body = chain, 0, cm, gen, route, host, body
	st.routed, st.abort = false, false
	st.setRoute(route)
	r = r.WithContext(filter.NewContext(r.Context(), &st.fs))
	st.ServeHTTP(w, r)

	e := &st.entry
	if !st.routed {
		switch {
		case st.fs.ReplyCode != 0:
			e.ResponseCode, e.ResponseCodeDetails, e.BytesSent = st.fs.ReplyCode, st.fs.ReplyDetails, st.fs.ReplyBytes
		case r.Context().Err() != nil:
			e.ResponseCode, e.ResponseFlags, e.ResponseCodeDetails = 0, FlagDownstreamConnTerm, "downstream_remote_disconnect"
		}
	}
	if st.fs.Flags != 0 {
		e.ResponseFlags = mergeFlags(e.ResponseFlags, st.fs.Flags)
	}
	abort = st.abort
	st.fs = filter.State{}
	st.routeCluster = st.ri.Cluster
	st.ri = filter.RouteInfo{}
	st.chain, st.cm, st.gen, st.route, st.body = nil, nil, nil, nil, nil
	return abort
}

// ServeHTTP is the next handler of every filter of a chain: it calls the
// next filter with the matched route's override for it, or after the last
// one the router. Filters call next at most once, in order, so one
// index per request is enough.
func (st *reqState) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if st.fs.RouteCacheCleared {
		// A filter cleared the route cache (Envoy's clearRouteCache):
		// match again with the headers and metadata as they are now,
		// for the filters that follow and the router.
		st.fs.RouteCacheCleared = false
		st.setRoute(matchRoute(st.gen, st.fc, r, st.host, st.fs.Metadata))
	}
	if st.next < len(st.chain) {
		f := &st.chain[st.next]
		st.next++
		st.fs.Override = st.route.Override(f.Slot)
		f.Filter.ServeHTTP(w, r, st)
		return
	}
	st.fs.Override = nil
	st.routed = true
	st.abort = st.cm.route(w, r, st.gen, st.route, st.ri.Cluster, st.host, st.body, &st.entry, st.span, st.probe, st.fc.ALPNOverride)
}

// setRoute makes route (nil: none matched) the request's route for the
// rest of the chain and the router. Envoy's route entry names its
// (weighted) cluster as soon as the route is picked, before the filters
// run; the rate limit filters read it.
func (st *reqState) setRoute(route *config.Route) {
	st.route = route
	st.ri = filter.RouteInfo{}
	st.fs.Route = nil
	if route != nil && route.Action == config.ActionRoute {
		name := route.Pick()
		st.ri = filter.RouteInfo{Name: route.Name, Cluster: name, ClusterExists: st.gen.Clusters[name] != nil, RateLimits: route.RateLimits}
		st.fs.Route = &st.ri
	}
}

// mergeFlags adds the filters' flags to the router's, in Envoy's order
// (UH, UT, UF, UC and NR come before DI and FI; DC, URX and the rest after).
func mergeFlags(router string, f filter.Flags) string {
	fs := f.String()
	if router == "" {
		return fs
	}
	head, tail, _ := strings.Cut(router, ",")
	switch head {
	case FlagNoHealthyUpstream, FlagUpstreamTimeout, FlagUpstreamConnFail, FlagUpstreamConnTerm, FlagNoRoute:
		if tail == "" {
			return head + "," + fs
		}
		return head + "," + fs + "," + tail
	}
	return fs + "," + router
}

// route forwards r along route (nil: none matched) to cluster, or when
// cluster is "" to the cluster route.Pick gives, filling e. span is the
// request's span (nil: untraced); with spawn_upstream_span the router's
// client span is its child. alpn is the chain's istio.alpn filter (nil:
// none).
func (cm *ConnectionManager) route(w http.ResponseWriter, r *http.Request, gen *config.Generation, route *config.Route, cluster, host string, body *countingBody, e *telemetry.Entry, span *telemetry.Span, probe *upstreamProbe, alpn *config.ALPNOverride) (abort bool) {
	if route == nil {
		localReply(w, r, e, http.StatusNotFound, FlagNoRoute, "route_not_found", "")
		return false
	}
	e.RouteName = route.Name
	switch route.Action {
	case config.ActionRedirect:
		w.Header()["Location"] = []string{route.Location(r, host)}
		route.ResponseHeaders.Apply(w.Header(), nil)
		localReply(w, r, e, route.Redirect.Code, "", "direct_response", "")
		return false
	case config.ActionDirectResponse:
		route.ResponseHeaders.Apply(w.Header(), nil)
		localReply(w, r, e, route.DirectResponse.Status, "", "direct_response", route.DirectResponse.Body)
		return false
	}
	name := cluster
	if name == "" {
		name = route.Pick()
	}
	e.UpstreamCluster = name
	c := gen.Clusters[name]
	if c == nil {
		localReply(w, r, e, http.StatusServiceUnavailable, FlagNoClusterFound, "cluster_not_found", "")
		return false
	}
	if span.SpawnsUpstream() {
		up := span.StartUpstream(r, name)
		up.Inject(r.Header)
		abort = cm.forward(w, r, gen, route, route.ClusterFor(name), c, host, body, e, span, probe, alpn)
		up.End(e)
		return abort
	}
	return cm.forward(w, r, gen, route, route.ClusterFor(name), c, host, body, e, span, probe, alpn)
}

// failure is why an attempt got no response.
type failure int

const (
	failNone failure = iota
	failConnect
	failReset
	failProtocol // the upstream's response was not valid HTTP or broke the header limits
	failPerTryTimeout
	failTimeout
	failDownstream
	failDownstreamBody // reading the downstream request body failed
)

// forward sends r to c, retrying per route.Retry, mirrors it per
// route.Mirrors, and streams the response to w. wc is the picked weighted
// cluster (its header mutations), nil when none. body is r.Body's counting
// wrapper, nil when r has none. span is the connection manager's span
// (nil: none), which the response's decorator operation names. probe, when
// not nil, observes each attempt's transport for the access log.
func (cm *ConnectionManager) forward(w http.ResponseWriter, r *http.Request, gen *config.Generation, route *config.Route,
	wc *config.WeightedCluster, c *config.Cluster, host string, body *countingBody, e *telemetry.Entry, span *telemetry.Span,
	probe *upstreamProbe, alpn *config.ALPNOverride) (abort bool) {
	ctx := r.Context()
	timeout := route.Timeout
	grpcTimeout := route.GRPCTimeout != nil && filter.IsGRPC(r.Header)
	if grpcTimeout {
		var hv string
		if v := r.Header["Grpc-Timeout"]; len(v) > 0 {
			hv = v[0]
		}
		timeout = route.GRPCTimeout.Final(hv)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// An upgrade the listener and route allow (serve refused the others):
	// one attempt, no mirror, and the upgrade headers go upstream.
	upgrade := upgradeType(r)
	if upgrade != "" && c.HTTP2 {
		// Envoy would carry it as an extended CONNECT (RFC 8441) stream;
		// this version upgrades over HTTP/1.1 upstreams only.
		localReply(w, r, e, http.StatusForbidden, "", detailsUpgradeFailed, "")
		return false
	}
	prepareRequestHeaders(r.Header, r.TLS != nil)
	if grpcTimeout {
		// As Envoy, tell the upstream the time it has: the per-try
		// timeout when the route has one, else the request's.
		expected := timeout
		if rp := route.Retry; rp != nil && rp.PerTryTimeout > 0 {
			expected = rp.PerTryTimeout
		}
		if expected > 0 {
			r.Header["Grpc-Timeout"] = []string{config.FormatGRPCTimeout(expected)}
		}
	}
	if upgrade != "" {
		r.Header["Connection"] = []string{"Upgrade"}
		r.Header["Upgrade"] = []string{upgrade}
	}
	var wcReq, wcResp *config.HeaderMutation
	if wc != nil {
		wcReq, wcResp = wc.RequestHeaders, wc.ResponseHeaders
	}
	route.RequestHeaders.Apply(r.Header, wcReq)
	upPath, upRawPath := r.URL.Path, r.URL.RawPath
	if rw := route.Rewrite; rw != nil {
		if p, changed := route.RewritePath(r.URL.EscapedPath(), r.URL.RawQuery); changed {
			r.Header["X-Envoy-Original-Path"] = []string{r.URL.RequestURI()}
			upRawPath = p
			if up, err := url.PathUnescape(p); err == nil {
				upPath = up
			} else {
				upPath = p
			}
		}
		if rw.Host != "" {
			host = rw.Host
		}
	}

	pick := upstream.PickOptions{Authority: host, DownstreamHTTP2: r.ProtoMajor == 2,
		DownstreamHTTP10: r.ProtoMajor == 1 && r.ProtoMinor == 0, ALPN: alpn}
	if conn := filter.RequestConnection(r); conn != nil && conn.OriginalDst {
		pick.Destination = conn.Destination
	}
	var setCookie string
	if len(route.HashPolicies) > 0 {
		ip := r.RemoteAddr
		if h, _, err := net.SplitHostPort(ip); err == nil {
			ip = h
		}
		pick.Hash, pick.HasHash, setCookie = route.RequestHash(r, ip)
	}

	retry := route.Retry
	// rs counts the route's Envoy route-level stats; nil (no stat_prefix)
	// counts nothing.
	rs := route.Stats
	attempts := 1
	if retry != nil && retry.RetryRequestAllowed(r) && upgrade == "" {
		attempts += int(retry.NumRetries)
	}
	mirrors := route.Mirrors
	if upgrade != "" {
		mirrors = nil
	}

	// The request body streams to the upstream as it arrives, as Envoy's
	// router streams it. When the request may be retried or is mirrored it
	// is read through a requestBody, which keeps up to DefaultBufferLimit
	// bytes so that a retry replays them and then goes on with the live
	// body (a gRPC stream still open included), and hands each shadow the
	// bytes as they come. Otherwise the attempt reads r.Body itself.
	var (
		stream io.ReadCloser
		rb     *requestBody
	)
	if body != nil && r.ContentLength != 0 {
		if attempts > 1 || len(mirrors) > 0 {
			limit := 0
			if attempts > 1 {
				limit = DefaultBufferLimit
			}
			// HTTP/2 upstreams read the body on a transport goroutine
			// that a reset stream waits for: pump it (see requestBody).
			rb = newRequestBody(r.Body, r.ContentLength, limit, c.HTTP2 || (c.DownstreamHTTP2 && r.ProtoMajor == 2), cm.metrics, c.Name)
			defer rb.end()
		} else {
			stream = r.Body
		}
	}
	if len(mirrors) > 0 {
		cm.mirror(gen, route, r, host, upPath, upRawPath, rb)
	}

	var (
		resp       *http.Response
		uh         *upstream.Host // the current attempt's host, until its Done
		release    func()         // the current retry's max_retries slot
		fail       failure
		lastErr    error
		retried    bool // a retry was made: its outcome is upstream_rq_retry_success or not
		overflowed bool // the max_retries breaker refused a retry, which is not the retry limit
		tryStart   time.Time
		lastTryCtx                    = ctx
		cancelTry  context.CancelFunc = func() {}
	)
	// done ends the current attempt: Host.Done exactly once, then the
	// retry's circuit-breaker slot.
	done := func(res upstream.Result) {
		if uh != nil {
			uh.Done(res)
			uh = nil
		}
		if release != nil {
			release()
			release = nil
		}
	}
	defer func() { cancelTry() }()
	// tryRetry asks the max_retries circuit breaker for the next attempt.
	tryRetry := func() (func(), bool) {
		rel, ok := cm.clusters.TryRetry(c)
		if !ok {
			cm.metrics.RetryOverflow(c.Name)
			rs.RetryOverflow()
			overflowed = true
		}
		return rel, ok
	}
	var triedPriorities uint64 // previous_priorities: levels attempted, bit per level
	for attempt := 0; ; attempt++ {
		var attemptBody io.ReadCloser
		if rb != nil {
			var ok bool
			if attemptBody, ok = rb.attempt(attempt); !ok {
				// The body outgrew the retry buffer during the back-off
				// (a superseded attempt's transport read on): Envoy's
				// local reply for a retry that can no longer be made.
				done(upstream.Result{})
				localReply(w, r, e, http.StatusInsufficientStorage, "", "request_payload_exceeded_retry_buffer_limit",
					"exceeded request buffer limit while retrying upstream")
				return false
			}
		}
		if every := retry.PreviousPrioritiesFor(); attempt > 0 && every > 0 && uint32(attempt)%every == 0 {
			// Envoy's PreviousPrioritiesRetryPriority: every
			// update_frequency attempts, avoid the levels tried so far.
			pick.AvoidPriorities = triedPriorities
		}
		h, err := cm.clusters.Pick(c, pick)
		if err != nil {
			done(upstream.Result{})
			if errors.Is(err, upstream.ErrOverflow) {
				rs.Completed(http.StatusServiceUnavailable)
				cm.overflow(w, r, c, e)
				return false
			}
			localReply(w, r, e, http.StatusServiceUnavailable, FlagNoHealthyUpstream, "no_healthy_upstream", "no healthy upstream")
			return false
		}
		uh = h
		e.UpstreamRequestAttemptCount++
		if h.Priority < 64 {
			triedPriorities |= 1 << h.Priority
		}
		addr, rt := h.Addr, h.RT
		e.UpstreamHost, e.UpstreamWorkload = addr, h.Workload
		if retry != nil && retry.AvoidPreviousHosts {
			pick.Avoid = append(pick.Avoid, addr)
		}
		tryCtx := ctx
		cancelTry()
		cancelTry = func() {}
		if retry != nil && retry.PerTryTimeout > 0 {
			tryCtx, cancelTry = withTimeout(ctx, retry.PerTryTimeout)
		}
		out := &http.Request{
			Method:     r.Method,
			URL:        &url.URL{Scheme: "http", Host: addr, Path: upPath, RawPath: upRawPath, RawQuery: r.URL.RawQuery},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     r.Header,
			Host:       host,
		}
		switch {
		case rb != nil:
			out.Body = attemptBody
			out.ContentLength = r.ContentLength
			if rb.limit > 0 {
				out.GetBody = rb.getBody
			}
		case stream != nil:
			out.Body = stream
			out.ContentLength = r.ContentLength
		}
		if probe != nil {
			out = out.WithContext(probe.attach(tryCtx))
		} else {
			out = out.WithContext(tryCtx)
		}
		tryStart = time.Now()
		resp, err = rt.RoundTrip(out)
		lastTryCtx = tryCtx
		if err == nil {
			cm.metrics.UpstreamRequest(c.Name, resp.StatusCode)
			rs.UpstreamRequest()
			if attempt+1 < attempts && rb.replayable() && retryOnResponse(retry, resp) {
				rel, ok := tryRetry()
				if !ok {
					break // the max_retries breaker is full: this response is final
				}
				// Read a small body to its end so that the keep-alive
				// connection goes back to the pool.
				_, _ = io.CopyN(io.Discard, resp.Body, retryDrainBytes)
				resp.Body.Close()
				done(upstream.Result{Status: resp.StatusCode})
				resp = nil
				release = rel // the next attempt's slot
				rs.Retry()
				retried = true
				if !cm.backoff(ctx, c.Name, attempt, retry) {
					fail = classify(ctx.Err(), r.Context(), ctx, ctx)
					done(upstream.Result{})
					break
				}
				continue
			}
			break
		}
		lastErr = err
		if errors.Is(err, upstream.ErrOverflow) {
			done(upstream.Result{})
			rs.Completed(http.StatusServiceUnavailable)
			cm.overflow(w, r, c, e)
			return false
		}
		fail = classify(err, r.Context(), ctx, tryCtx)
		if fail == failReset && body != nil && body.err() != nil {
			fail = failDownstreamBody
		}
		cm.metrics.UpstreamRequest(c.Name, 0)
		if fail != failConnect {
			// Envoy counts a route's upstream_rq_total when the attempt
			// gets a connection (onPoolReady).
			rs.UpstreamRequest()
		}
		if fail == failConnect {
			cm.metrics.UpstreamConnectFail(c.Name)
		}
		// A failure of the downstream is not the host's.
		done(upstream.Result{LocalOrigin: fail != failDownstream && fail != failDownstreamBody})
		if fail == failDownstream || fail == failTimeout || fail == failDownstreamBody {
			break
		}
		if attempt+1 < attempts && rb.replayable() && retryOnFailure(retry, fail) {
			rel, ok := tryRetry()
			if !ok {
				break
			}
			release = rel
			rs.Retry()
			retried = true
			if !cm.backoff(ctx, c.Name, attempt, retry) {
				fail = classify(ctx.Err(), r.Context(), ctx, ctx)
				done(upstream.Result{})
				break
			}
			continue
		}
		break
	}

	if resp == nil {
		// Envoy drops the retry state when the body outgrows the buffer:
		// no URX then.
		urx := attempts > 1 && rb.replayable() && retryOnFailure(retry, fail)
		if urx && !overflowed {
			rs.RetryLimitExceeded()
		}
		switch fail {
		case failTimeout, failPerTryTimeout:
			if fail == failTimeout {
				rs.Timeout()
			}
			rs.Completed(http.StatusGatewayTimeout)
		case failConnect, failReset:
			rs.Completed(http.StatusServiceUnavailable)
		case failProtocol:
			rs.Completed(http.StatusBadGateway)
		}
		switch fail {
		case failDownstreamBody:
			cm.bodyError(w, r, e)
		case failDownstream:
			e.ResponseCode, e.ResponseFlags, e.ResponseCodeDetails = 0, FlagDownstreamConnTerm, "downstream_remote_disconnect"
		case failTimeout:
			localReply(w, r, e, http.StatusGatewayTimeout, FlagUpstreamTimeout, "upstream_response_timeout", "upstream request timeout")
		case failPerTryTimeout:
			localReply(w, r, e, http.StatusGatewayTimeout, withURX(FlagUpstreamTimeout, urx), "upstream_per_try_timeout", "upstream request timeout")
		case failConnect:
			e.UpstreamFailureReason = "connection_failure"
			if r := upstream.TransportFailureReason(lastErr); r != "" {
				e.UpstreamFailureReason = r
			}
			localReply(w, r, e, http.StatusServiceUnavailable, withURX(FlagUpstreamConnFail, urx),
				"upstream_reset_before_response_started{connection_failure}",
				"upstream connect error or disconnect/reset before headers. reset reason: connection failure")
		case failProtocol:
			// Envoy's router since 1.18: an upstream codec error is 502,
			// not 503.
			cm.logger.Debug("upstream protocol error", "cluster", c.Name, "endpoint", e.UpstreamHost, "error", lastErr)
			localReply(w, r, e, http.StatusBadGateway, withURX(FlagUpstreamProtoErr, urx),
				"upstream_reset_before_response_started{protocol_error}",
				"upstream connect error or disconnect/reset before headers. reset reason: protocol error")
		default:
			cm.logger.Debug("upstream reset", "cluster", c.Name, "endpoint", e.UpstreamHost, "error", lastErr)
			localReply(w, r, e, http.StatusServiceUnavailable, withURX(FlagUpstreamConnTerm, urx),
				"upstream_reset_before_response_started{connection_termination}",
				"upstream connect error or disconnect/reset before headers. reset reason: connection termination")
		}
		return false
	}

	// A response: stream it back, then end the attempt.
	res := upstream.Result{Status: resp.StatusCode}
	defer func() { done(res) }()
	defer resp.Body.Close()
	e.UpstreamServiceTime = time.Since(tryStart)
	e.FirstUpstreamRxByteReceived = sinceStart(e.StartTime)
	e.UpstreamProtocol = resp.Proto
	if resp.ProtoMajor == 2 {
		e.UpstreamProtocol = "HTTP/2"
	}
	e.ResponseCode = resp.StatusCode
	e.ResponseCodeDetails = "via_upstream"
	noteUpstreamTLS(e, uh, resp)
	if attempts > 1 && rb.replayable() && retryOnResponse(retry, resp) {
		e.ResponseFlags = FlagRetryLimitExceeded
		if !overflowed {
			rs.RetryLimitExceeded()
		}
	} else if retried {
		rs.RetrySuccess()
	}
	if resp.StatusCode == http.StatusSwitchingProtocols && upgrade == "" {
		// A 101 to a request that asked no upgrade: Envoy's codec takes it
		// for a protocol error.
		res.LocalOrigin = true
		rs.Completed(http.StatusServiceUnavailable)
		localReply(w, r, e, http.StatusServiceUnavailable, FlagUpstreamConnTerm, "upstream_reset_before_response_started{protocol_error}",
			"upstream connect error or disconnect/reset before headers. reset reason: protocol error")
		return false
	}
	rs.Completed(resp.StatusCode)
	if _, ok := resp.Header[istiostats.HeaderPeerMetadata]; ok {
		// The server's sidecar's identity (metadata exchange), for the
		// client's istio.stats; the app never sees it.
		e.UpstreamPeer = cm.exchange.Take(resp.Header)
	}
	hdr := w.Header()
	copyResponseHeaders(hdr, resp.Header)
	span.DecorateResponse(hdr)
	hdr["X-Envoy-Upstream-Service-Time"] = []string{strconv.FormatInt(e.UpstreamServiceTime.Milliseconds(), 10)}
	route.ResponseHeaders.Apply(hdr, wcResp)
	if fs := filter.StateFrom(r); fs != nil {
		for k, v := range fs.ResponseHeaders {
			hdr[k] = v
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		cm.tunnel(w, resp, hdr, e)
		return false
	}
	if setCookie != "" {
		hdr["Set-Cookie"] = append(hdr["Set-Cookie"][:len(hdr["Set-Cookie"]):len(hdr["Set-Cookie"])], setCookie)
	}
	for k := range resp.Trailer {
		hdr.Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	n, err := copyBody(w, countResponseMessages(resp.Body, e), resp.ContentLength < 0)
	e.BytesSent = n
	if err == nil {
		// Envoy records upstream_rq_time when the upstream response ends.
		rs.Time(time.Since(e.StartTime))
		// Written to the downstream connection's buffer: the server
		// flushes it when the handler returns.
		e.LastDownstreamTxByteSent = sinceStart(e.StartTime)
	}
	if len(resp.Trailer) > 0 {
		for k, vv := range resp.Trailer {
			hdr[http.TrailerPrefix+k] = vv
		}
	}
	if err != nil {
		// Headers are sent: the only way to tell the client is to abort
		// the stream (ServeHTTP does, after the access log line).
		abort = true
		switch {
		case r.Context().Err() != nil:
			e.ResponseFlags = FlagDownstreamConnTerm
			e.ResponseCodeDetails = "downstream_remote_disconnect"
		case ctx.Err() != nil:
			e.ResponseFlags = FlagUpstreamTimeout
			e.ResponseCodeDetails = "upstream_response_timeout"
			res.LocalOrigin = true
			rs.Timeout() // Envoy counts the route timeout with headers sent too
		case lastTryCtx.Err() != nil:
			e.ResponseFlags = FlagUpstreamTimeout
			e.ResponseCodeDetails = "upstream_per_try_timeout"
			res.LocalOrigin = true
		default:
			e.ResponseFlags = FlagUpstreamConnTerm
			e.ResponseCodeDetails = "upstream_reset_after_response_started"
			res.LocalOrigin = true
		}
	}
	return abort
}

// overflow answers 503 UO: a circuit breaker of c is full. As Envoy's
// router it marks the reply x-envoy-overloaded: true, so that a client can
// tell a shed request from an upstream's own 503.
func (cm *ConnectionManager) overflow(w http.ResponseWriter, r *http.Request, c *config.Cluster, e *telemetry.Entry) {
	cm.metrics.UpstreamOverflow(c.Name)
	w.Header()["X-Envoy-Overloaded"] = []string{"true"}
	localReply(w, r, e, http.StatusServiceUnavailable, FlagUpstreamOverflow, "upstream_overflow",
		"upstream connect error or disconnect/reset before headers. reset reason: overflow")
}

// withTimeout is context.WithTimeout; the per-try cancel is called by
// forward's loop and its deferred func, which vet's lostcancel cannot see.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// backoff waits for Envoy's jittered exponential back-off before retry
// attempt+1. It returns false when ctx ends first; it does not give up
// early when the wait would outlast ctx's deadline, so that the caller
// tells a timeout from a downstream disconnect by ctx alone.
func (cm *ConnectionManager) backoff(ctx context.Context, cluster string, attempt int, p *config.RetryPolicy) bool {
	cm.metrics.UpstreamRetry(cluster)
	base, maxI := retryBaseInterval, retryMaxInterval
	if p != nil && p.BaseInterval > 0 {
		base, maxI = p.BaseInterval, p.MaxInterval
	}
	d := time.Duration(rand.Int64N(int64(backoffLimit(attempt, base, maxI))))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoffLimit is the exclusive upper bound of the wait before retry
// attempt+1 (attempt 0: the first retry), as Envoy's
// JitteredExponentialBackOffStrategy draws it: min((2^(attempt+1)-1) *
// base, max), at least 1ns.
func backoffLimit(attempt int, base, maxI time.Duration) time.Duration {
	limit := maxI
	if attempt < 16 {
		limit = min(time.Duration((1<<(attempt+1))-1)*base, maxI)
	}
	return max(limit, 1)
}

func classify(err error, downstream, route, try context.Context) failure {
	switch {
	case downstream.Err() != nil:
		return failDownstream
	case route.Err() != nil:
		return failTimeout
	case try.Err() != nil:
		return failPerTryTimeout
	}
	var ce *upstream.ConnectError
	if errors.As(err, &ce) {
		return failConnect
	}
	var pe *upstream.ProtocolError
	if errors.As(err, &pe) {
		return failProtocol
	}
	return failReset
}

// grpcRetryOn maps the gRPC retry_on conditions to their grpc-status.
var grpcRetryOn = map[string]string{
	"cancelled": "1", "deadline-exceeded": "4", "resource-exhausted": "8", "internal": "13", "unavailable": "14",
}

// retryOnResponse says whether p retries resp: by its status, by the
// grpc-status of a trailers-only gRPC response (x-envoy-retry-grpc-on
// conditions read the response headers, as Envoy's), or by
// retriable_headers, which Envoy consults only under the
// retriable-headers condition (x-envoy-retriable-header-names, as the
// other x-envoy-retry request headers, is not read).
func retryOnResponse(p *config.RetryPolicy, resp *http.Response) bool {
	if p == nil {
		return false
	}
	if retryOnStatus(p, resp.StatusCode) {
		return true
	}
	if _, ok := resp.Header["X-Envoy-Ratelimited"]; ok && slices.Contains(p.RetryOn, "envoy-ratelimited") {
		// Envoy's envoy-ratelimited: an upstream Envoy's rate limit
		// filter marked the response.
		return true
	}
	if gs, ok := resp.Header["Grpc-Status"]; ok && len(gs) == 1 {
		for _, on := range p.RetryOn {
			if grpcRetryOn[on] == gs[0] {
				return true
			}
		}
	}
	return slices.Contains(p.RetryOn, "retriable-headers") && p.RetriableResponseHeaders(resp.Header)
}

// retryOnStatus says whether p retries a response with code (Envoy's
// x-envoy-retry-on conditions).
func retryOnStatus(p *config.RetryPolicy, code int) bool {
	if p == nil {
		return false
	}
	for _, on := range p.RetryOn {
		switch on {
		case "5xx":
			if code >= 500 {
				return true
			}
		case "gateway-error":
			if code == 502 || code == 503 || code == 504 {
				return true
			}
		case "retriable-4xx":
			if code == 409 {
				return true
			}
		case "retriable-status-codes":
			if len(p.RetriableStatusCodes) == 0 && code == 503 {
				return true
			}
			for _, c := range p.RetriableStatusCodes {
				if int(c) == code {
					return true
				}
			}
		}
	}
	return false
}

// retryOnFailure says whether p retries an attempt that got no response.
func retryOnFailure(p *config.RetryPolicy, f failure) bool {
	if p == nil {
		return false
	}
	for _, on := range p.RetryOn {
		switch on {
		case "5xx", "gateway-error", "reset":
			// Envoy retries every reset reason but overflow under these,
			// a protocol error included.
			if f == failConnect || f == failReset || f == failProtocol || f == failPerTryTimeout {
				return true
			}
		case "connect-failure", "reset-before-request":
			if f == failConnect {
				return true
			}
		}
	}
	return false
}

func withURX(flag string, urx bool) string {
	if !urx {
		return flag
	}
	switch flag {
	case FlagUpstreamConnFail:
		return "UF,URX"
	case FlagUpstreamConnTerm:
		return "UC,URX"
	case FlagUpstreamTimeout:
		return "UT,URX"
	}
	return flag + "," + FlagRetryLimitExceeded
}

// localReply answers the downstream itself, as Envoy's local replies do;
// a gRPC request gets a trailers-only gRPC response (filter.LocalReply)
// with the grpc-status Envoy maps code to, and the access log records
// the status actually sent.
func localReply(w http.ResponseWriter, r *http.Request, e *telemetry.Entry, code int, flags, details, body string) {
	sent, n := filter.LocalReply(w, r, code, -1, body)
	e.ResponseCode, e.ResponseFlags, e.ResponseCodeDetails, e.BytesSent = sent, flags, details, n
}

// copyBody streams src to w with a pooled 32 KiB buffer, flushing after
// each write when flush is set (responses of unknown length may be
// streams). It returns the bytes written and the first read or write error
// other than EOF.
func copyBody(w http.ResponseWriter, src io.Reader, flush bool) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var f http.Flusher
	if flush {
		f, _ = w.(http.Flusher)
	}
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if f != nil {
				f.Flush()
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// bodyError ends a request whose body could not be read: a client that
// went away is logged as DC; a malformed body (bad chunked encoding, a
// body shorter than its Content-Length on a live connection) gets a local
// 400 with DPE, as Envoy's codec errors do.
func (cm *ConnectionManager) bodyError(w http.ResponseWriter, r *http.Request, e *telemetry.Entry) {
	if r.Context().Err() != nil {
		e.ResponseCode, e.ResponseFlags, e.ResponseCodeDetails = 0, FlagDownstreamConnTerm, "downstream_remote_disconnect"
		return
	}
	localReply(w, r, e, http.StatusBadRequest, FlagDownstreamProtoErr, "downstream_protocol_error", "bad request body")
}

// countingBody counts the bytes read from a downstream request body and
// keeps the first read error other than EOF that is not caused by its
// own Close. It is allocated per request
// and safe for an upstream transport to read or close from another
// goroutine than the handler's (its count and error are atomic).
type countingBody struct {
	rc      io.ReadCloser
	n       atomic.Int64
	start   time.Time    // the request's start
	eof     atomic.Int64 // offset from start of the first EOF read (the last byte received); 0: none yet
	readErr atomic.Pointer[error]
	closed  atomic.Bool
	// frames counts a gRPC request's messages (startGRPCMessages); nil
	// when not counted.
	frames *istiostats.FrameCounter
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.n.Add(int64(n))
	if c.frames != nil {
		c.frames.Feed(p[:n])
	}
	if err == io.EOF && c.eof.Load() == 0 {
		c.eof.CompareAndSwap(0, int64(sinceStart(c.start)))
	}
	if err != nil && err != io.EOF && !c.closed.Load() {
		c.readErr.CompareAndSwap(nil, &err)
	}
	return n, err
}

// sinceStart is the time since start, at least 1ns: a timing offset of 0
// means the event did not happen (telemetry.Entry).
func sinceStart(start time.Time) time.Duration {
	return max(time.Since(start), 1)
}

// upstreamProbe records, for access logs that read them, what only the
// upstream transports see: when an attempt's request was written to its
// end (Envoy's last_upstream_tx_byte_sent), through httptrace's
// WroteRequest, which HTTP/2 calls on its own goroutine, possibly after
// the response began; and the upstream connection's id
// (upstream.WithConnectionID).
type upstreamProbe struct {
	needs  accesslog.Needs
	start  time.Time
	sent   atomic.Int64 // offset from start; 0: not yet
	trace  httptrace.ClientTrace
	connID atomic.Uint64
}

func newUpstreamProbe(start time.Time, needs accesslog.Needs) *upstreamProbe {
	p := &upstreamProbe{start: start, needs: needs}
	if needs&accesslog.NeedsUpstreamTx != 0 {
		p.trace.WroteRequest = p.wrote
	}
	return p
}

// attach returns ctx for one attempt, observed as p needs.
func (p *upstreamProbe) attach(ctx context.Context) context.Context {
	if p.needs&accesslog.NeedsUpstreamTx != 0 {
		ctx = httptrace.WithClientTrace(ctx, &p.trace)
	}
	if p.needs&accesslog.NeedsUpstreamConnectionID != 0 {
		ctx = upstream.WithConnectionID(ctx, &p.connID)
	}
	return ctx
}

func (p *upstreamProbe) wrote(info httptrace.WroteRequestInfo) {
	if info.Err == nil {
		p.sent.Store(int64(sinceStart(p.start)))
	}
}

// err returns the first read error other than EOF, or nil.
func (c *countingBody) err() error {
	if p := c.readErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *countingBody) Close() error {
	c.closed.Store(true)
	return c.rc.Close()
}

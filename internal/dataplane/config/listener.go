package config

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	httpinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
)

// Names of the listener filters this version implements.
const (
	TLSInspectorName  = "envoy.filters.listener.tls_inspector"
	HTTPInspectorName = "envoy.filters.listener.http_inspector"
	OriginalDstName   = "envoy.filters.listener.original_dst"
)

// Transport protocols a filter chain can match (FilterChainMatch.transport_protocol).
const (
	// TransportRawBuffer is a connection no listener filter found TLS on.
	TransportRawBuffer = "raw_buffer"
	// TransportTLS is a connection whose first bytes tls_inspector parsed
	// as a TLS ClientHello.
	TransportTLS = "tls"
)

// DefaultListenerFiltersTimeout is Listener.listener_filters_timeout when
// unset (Envoy: 15s).
const DefaultListenerFiltersTimeout = 15 * time.Second

// maxMatchCombinations bounds how many (port, prefix, server name, ...)
// combinations one filter chain's match may expand to in the duplicate
// check.
const maxMatchCombinations = 1 << 16

// Listener is envoy.config.listener.v3.Listener: one address, the listener
// filters that inspect each accepted connection, and the filter chains
// one of which serves it. It is immutable and safe for concurrent use.
type Listener struct {
	Name string
	// Address is "ip:port", or a pipe's path (Envoy's Address.pipe, a
	// unix domain socket: "/path", or "@name" in Linux's abstract
	// namespace; IsPipe).
	Address string
	// PipeMode is a pipe listener's Pipe.mode, the permission bits its
	// socket file gets once bound (at most 0777); 0 leaves the umask's,
	// as Envoy does. Unused for an abstract socket.
	PipeMode  fs.FileMode
	Direction Direction
	// BindToPort is Listener.bind_to_port (default true). A listener with
	// false is never bound: it only serves connections handed off by a
	// UseOriginalDst listener (Istio's per-service outbound listeners).
	BindToPort bool
	// UseOriginalDst is Listener.use_original_dst: a connection whose
	// destination the original_dst listener filter restored is handed to
	// the listener of that address (exact ip:port, else the wildcard
	// address of its port), when there is one (Istio's virtualOutbound and
	// virtualInbound).
	UseOriginalDst bool
	// ListenerFilters are Listener.listener_filters, in order.
	ListenerFilters []ListenerFilter
	// ListenerFiltersTimeout bounds the listener filters' wait for the
	// first bytes (listener_filters_timeout); 0 means no bound. Unset is
	// DefaultListenerFiltersTimeout. On expiry the connection is closed,
	// unless ContinueOnListenerFiltersTimeout, when chain selection goes on
	// with what was found so far.
	ListenerFiltersTimeout           time.Duration
	ContinueOnListenerFiltersTimeout bool
	// FilterChains are Listener.filter_chains; at most one matches a
	// connection (Select). DefaultFilterChain serves connections none
	// matches; nil closes them.
	FilterChains       []*FilterChain
	DefaultFilterChain *FilterChain

	// byKey indexes FilterChains and DefaultFilterChain by Key (Build
	// fills it; a hand-made Listener is searched).
	byKey map[string]*FilterChain
}

// Chain returns the filter chain (or the default chain) whose Key is key,
// or nil. It is called per request: one map lookup.
func (l *Listener) Chain(key string) *FilterChain {
	if l == nil {
		return nil
	}
	if l.byKey != nil {
		return l.byKey[key]
	}
	for _, fc := range l.FilterChains {
		if fc.Key == key {
			return fc
		}
	}
	if l.DefaultFilterChain != nil && l.DefaultFilterChain.Key == key {
		return l.DefaultFilterChain
	}
	return nil
}

// AllChains returns the filter chains and then the default chain, if any.
func (l *Listener) AllChains() []*FilterChain {
	if l.DefaultFilterChain == nil {
		return l.FilterChains
	}
	return append(slices.Clip(l.FilterChains), l.DefaultFilterChain)
}

// Needs reports whether l has a listener filter of kind k.
func (l *Listener) Needs(k ListenerFilterKind) bool {
	for _, f := range l.ListenerFilters {
		if f.Kind == k {
			return true
		}
	}
	return false
}

// ListenerFilterKind names a listener filter.
type ListenerFilterKind int

// Listener filters.
const (
	// TLSInspector (envoy.filters.listener.tls_inspector) peeks at the
	// ClientHello: transport protocol "tls", its SNI and ALPN.
	TLSInspector ListenerFilterKind = iota + 1
	// HTTPInspector (envoy.filters.listener.http_inspector) peeks at a
	// plaintext connection's first line: application protocol
	// "http/1.0", "http/1.1" or "h2c".
	HTTPInspector
	// OriginalDst (envoy.filters.listener.original_dst) restores the
	// destination an iptables REDIRECT rewrote (SO_ORIGINAL_DST).
	OriginalDst
)

// ListenerFilter is one envoy.config.listener.v3.ListenerFilter.
type ListenerFilter struct {
	Kind ListenerFilterKind
	// Disabled is filter_disabled: the filter is skipped on a connection
	// it matches; nil never skips.
	Disabled *ListenerFilterPredicate
}

// ListenerFilterPredicate is envoy.config.listener.v3.ListenerFilterChainMatchPredicate.
type ListenerFilterPredicate struct {
	// Op is "or", "and", "not", "any" or "port".
	Op    string
	Rules []*ListenerFilterPredicate // or, and: the rules; not: one rule
	// PortStart and PortEnd are destination_port_range [start, end).
	PortStart, PortEnd uint32
}

// Matches evaluates the predicate on a connection to destination port
// port.
func (p *ListenerFilterPredicate) Matches(port uint16) bool {
	switch p.Op {
	case "any":
		return true
	case "port":
		return uint32(port) >= p.PortStart && uint32(port) < p.PortEnd
	case "not":
		return !p.Rules[0].Matches(port)
	case "and":
		for _, r := range p.Rules {
			if !r.Matches(port) {
				return false
			}
		}
		return true
	case "or":
		for _, r := range p.Rules {
			if r.Matches(port) {
				return true
			}
		}
	}
	return false
}

// SourceType is FilterChainMatch.source_type.
type SourceType int

// Source types.
const (
	SourceAny           SourceType = iota // ANY
	SourceSameIPOrLocal                   // SAME_IP_OR_LOOPBACK
	SourceExternal                        // EXTERNAL
)

// FilterChainMatch is envoy.config.listener.v3.FilterChainMatch. An empty
// field matches every connection.
type FilterChainMatch struct {
	DestinationPort uint32 // 0: any
	// PrefixRanges are destination IP ranges (masked).
	PrefixRanges []netip.Prefix
	// ServerNames are lower-case SNI names: "www.example.com" or a
	// wildcard "*.example.com" that matches any name ending in
	// ".example.com".
	ServerNames []string
	// TransportProtocol is "", TransportTLS or TransportRawBuffer.
	TransportProtocol        string
	ApplicationProtocols     []string
	DirectSourcePrefixRanges []netip.Prefix
	SourceType               SourceType
	SourcePrefixRanges       []netip.Prefix
	SourcePorts              []uint32
}

// FilterChain is envoy.config.listener.v3.FilterChain, compiled: a match,
// an optional TLS termination, network filters, and a terminal filter,
// either the HTTP connection manager (RouteConfigName set) or a tcp_proxy
// (TCPProxy set). It is immutable but for the counters of its filters.
// Envoy's defaults for the HCM's request header limits.
const (
	DefaultMaxRequestHeaderBytes = 60 << 10
	DefaultMaxRequestHeaders     = 100
)

type FilterChain struct {
	// Name is FilterChain.name ("" when unnamed).
	Name string
	// Key identifies the chain within its listener across generations:
	// Name when it is unique in the listener, else Name + "#" + a digest
	// of the filter_chain_match ("#default" for the default chain).
	Key string
	// Hash is a digest of the whole FilterChain message: a chain whose
	// Key and Hash are unchanged in a new generation keeps its
	// connections; otherwise its connections drain.
	Hash  uint64
	Match FilterChainMatch
	// TLS is the transport_socket's DownstreamTlsContext; nil for
	// plaintext (raw_buffer).
	TLS *DownstreamTLS
	// HandshakeTimeout is transport_socket_connect_timeout; 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// NetworkFilters run on each connection, in order, before the
	// terminal filter.
	NetworkFilters []NetworkFilter
	// StatPrefix is the HCM's or the tcp_proxy's stat_prefix.
	StatPrefix string
	// RouteConfigName names the route table in Generation.Routes (HCM
	// rds, or the inline route_config stored as InlineRouteName).
	RouteConfigName string
	// HTTPFilters is the HCM's http_filters chain, compiled, without the
	// terminal router (always last); empty when the router is the only
	// filter. Filters that are is_optional and unknown are left out.
	HTTPFilters []HTTPFilter
	// Upgrades are the HCM's upgrade_configs; nil when none.
	Upgrades Upgrades
	// MaxRequestHeaderBytes is the HCM's max_request_headers_kb in bytes
	// (DefaultMaxRequestHeaderBytes when unset): a request whose header
	// names and values add up to more gets 431, as in Envoy.
	MaxRequestHeaderBytes int
	// MaxRequestHeaders is common_http_protocol_options.max_headers_count
	// (DefaultMaxRequestHeaders when unset): a request with more header
	// fields gets 431.
	MaxRequestHeaders int
	// XFF is the HCM's use_remote_address and xff_num_trusted_hops: how
	// far X-Forwarded-For is trusted for the client's address (RBAC
	// remote_ip).
	XFF filter.XFF
	// XFCC is the HCM's forward_client_cert_details and
	// set_current_client_cert_details.
	XFCC XFCC
	// Tracing is the HCM's tracing; nil: no spans, no trace headers
	// touched.
	Tracing *Tracing
	// TCPProxy is set when the terminal filter is
	// envoy.filters.network.tcp_proxy; the HTTP fields are then empty.
	TCPProxy *TCPProxy
	// HTTPStats is the HCM's istio.stats HTTP filter, compiled; nil when
	// it has none. The connection manager reports every request with it.
	HTTPStats *istiostats.Config
	// ALPNOverride is the HCM's istio.alpn HTTP filter, compiled; nil
	// when it has none. The router opens the upstream TLS connections of
	// the chain's requests with its ALPN.
	ALPNOverride *ALPNOverride
	// TCPStats is the chain's istio.stats network filter (Istio puts it
	// before tcp_proxy), compiled; nil when it has none. The TCP proxy
	// reports every connection with it.
	TCPStats *istiostats.Config
	// MetadataExchange is the ALPN protocol of the chain's
	// istio.metadata_exchange network filter ("" for none; only before a
	// tcp_proxy): a TLS connection that negotiated it runs Istio's TCP
	// metadata exchange (istiostats.MXConn), as on istiod's inbound TCP
	// chains.
	MetadataExchange string
	// AccessLogs are the HCM's or the tcp_proxy's access_log, compiled:
	// each request (connection) is written to every logger whose filter
	// matches. None: nothing is logged, as in Envoy.
	AccessLogs []*accesslog.AccessLogger
}

// XFCCMode is HttpConnectionManager.forward_client_cert_details: what the
// connection manager does with the x-forwarded-client-cert header.
type XFCCMode int

// XFCC modes, Envoy's names.
const (
	XFCCSanitize          XFCCMode = iota // remove the header (the default)
	XFCCForwardOnly                       // forward it on mTLS connections
	XFCCAppendForward                     // on mTLS, append the client's details
	XFCCSanitizeSet                       // on mTLS, replace it with the client's details
	XFCCAlwaysForwardOnly                 // forward it on every connection
)

// XFCC is how a filter chain's HCM treats x-forwarded-client-cert: Mode,
// and which details of the client certificate APPEND_FORWARD and
// SANITIZE_SET write besides By (the proxy's URI SANs) and Hash (the
// SHA-256 of the client certificate).
type XFCC struct {
	Mode                           XFCCMode
	Subject, URI, Cert, Chain, DNS bool
}

// DefaultHandshakeTimeout bounds a downstream TLS handshake when the
// filter chain sets no transport_socket_connect_timeout (Envoy has none;
// a bound keeps a silent client from holding a goroutine forever).
const DefaultHandshakeTimeout = 10 * time.Second

// NetworkFilter is one compiled network filter of a chain.
type NetworkFilter struct {
	Name   string
	Filter filter.NetworkFilter
}

// MatchInput is what filter chain selection reads of a connection.
type MatchInput struct {
	// Destination is the (restored) local address; Source the peer's.
	Destination, Source netip.AddrPort
	// ServerName is the SNI, "" for none.
	ServerName string
	// TransportProtocol is TransportTLS or TransportRawBuffer.
	TransportProtocol string
	// ApplicationProtocols are the ALPN values the client offered (TLS)
	// or the one http_inspector detected.
	ApplicationProtocols []string
}

// Select returns the filter chain of a connection, Envoy's way: the
// criteria are applied in the order destination port, destination IP,
// server name, transport protocol, application protocols, direct source
// IP, source type, source IP, source port; at each step only the chains
// that match the connection most specifically go on (a chain that sets
// the criterion to a value the connection does not have is dropped; a
// chain that leaves it empty goes on only when no chain matched it
// specifically). At most one chain is left at the end (Build refuses
// chains with the same match). It returns DefaultFilterChain when none
// is left, which may be nil: close the connection. Safe for concurrent
// use.
func (l *Listener) Select(in *MatchInput) *FilterChain {
	var buf [16]*FilterChain
	cand := append(buf[:0], l.FilterChains...)
	dst, src := in.Destination.Addr().Unmap(), in.Source.Addr().Unmap()
	sni := strings.ToLower(in.ServerName)
	local := src.IsLoopback() || src == dst
	steps := [...]func(m *FilterChainMatch) int{
		func(m *FilterChainMatch) int { return matchPort(m.DestinationPort, in.Destination.Port()) },
		func(m *FilterChainMatch) int { return matchPrefix(m.PrefixRanges, dst) },
		func(m *FilterChainMatch) int { return matchServerName(m.ServerNames, sni) },
		func(m *FilterChainMatch) int { return matchString(m.TransportProtocol, in.TransportProtocol) },
		func(m *FilterChainMatch) int { return matchALPN(m.ApplicationProtocols, in.ApplicationProtocols) },
		func(m *FilterChainMatch) int { return matchPrefix(m.DirectSourcePrefixRanges, src) },
		func(m *FilterChainMatch) int { return matchSourceType(m.SourceType, local) },
		func(m *FilterChainMatch) int { return matchPrefix(m.SourcePrefixRanges, src) },
		func(m *FilterChainMatch) int { return matchPorts(m.SourcePorts, in.Source.Port()) },
	}
	for _, score := range steps {
		if cand = prune(cand, score); len(cand) == 0 {
			return l.DefaultFilterChain
		}
	}
	return cand[0]
}

// prune keeps the chains with the best score: > 0 is a specific match
// (higher is more specific), 0 an unset criterion, < 0 a mismatch.
func prune(cand []*FilterChain, score func(*FilterChainMatch) int) []*FilterChain {
	best := -1
	for _, fc := range cand {
		best = max(best, score(&fc.Match))
	}
	if best < 0 {
		return cand[:0]
	}
	out := cand[:0]
	for _, fc := range cand {
		if score(&fc.Match) == best {
			out = append(out, fc)
		}
	}
	return out
}

func matchPort(want uint32, got uint16) int {
	switch {
	case want == 0:
		return 0
	case want == uint32(got):
		return 1
	}
	return -1
}

func matchPorts(want []uint32, got uint16) int {
	if len(want) == 0 {
		return 0
	}
	if slices.Contains(want, uint32(got)) {
		return 1
	}
	return -1
}

// matchPrefix scores the longest range containing a: its length + 1.
func matchPrefix(ranges []netip.Prefix, a netip.Addr) int {
	if len(ranges) == 0 {
		return 0
	}
	best := -1
	for _, p := range ranges {
		if p.Contains(a) {
			best = max(best, p.Bits()+1)
		}
	}
	return best
}

// exactNameScore ranks an exact server name above every wildcard.
const exactNameScore = 1 << 20

// matchServerName scores an exact name above the longest wildcard suffix
// that matches sni ("*.b.example.com" over "*.example.com").
func matchServerName(names []string, sni string) int {
	if len(names) == 0 {
		return 0
	}
	if sni == "" {
		return -1
	}
	best := -1
	for _, n := range names {
		if n == sni {
			return exactNameScore
		}
		if suffix, ok := strings.CutPrefix(n, "*"); ok && len(sni) > len(suffix) && strings.HasSuffix(sni, suffix) {
			best = max(best, len(suffix))
		}
	}
	return best
}

func matchString(want, got string) int {
	switch {
	case want == "":
		return 0
	case want == got:
		return 1
	}
	return -1
}

// matchALPN follows Envoy: the connection's protocols are tried in the
// client's order, and the first one some chain lists selects.
func matchALPN(want, got []string) int {
	if len(want) == 0 {
		return 0
	}
	for i, p := range got {
		if slices.Contains(want, p) {
			return len(got) - i
		}
	}
	return -1
}

func matchSourceType(t SourceType, local bool) int {
	switch {
	case t == SourceAny:
		return 0
	case (t == SourceSameIPOrLocal) == local:
		return 1
	}
	return -1
}

// ---- building ----

// listenerFields are the Listener fields this version reads; any other
// field set is refused. enable_reuse_port and metadata have no effect on
// behaviour here (one process; metadata is informational).
var listenerFields = []string{
	"name", "address", "filter_chains", "default_filter_chain", "use_original_dst", "bind_to_port",
	"listener_filters", "listener_filters_timeout", "continue_on_listener_filters_timeout",
	"traffic_direction", "metadata", "enable_reuse_port", "stat_prefix",
}

func buildListener(fb *filterBuilder, l *listenerv3.Listener) (*Listener, []*RouteTable, error) {
	rl := &Listener{Name: l.GetName(), BindToPort: true, ListenerFiltersTimeout: DefaultListenerFiltersTimeout}
	addr, err := endpointAddress("address", l.GetAddress())
	if err != nil {
		return nil, nil, err
	}
	rl.Address = addr
	if IsPipe(addr) {
		rl.PipeMode = fs.FileMode(l.GetAddress().GetPipe().GetMode())
	}
	if len(l.GetAdditionalAddresses()) > 0 {
		return nil, nil, ferr("additional_addresses", "not supported")
	}
	if err := onlyFields("", l, listenerFields...); err != nil {
		return nil, nil, err
	}
	switch l.GetTrafficDirection() {
	case corev3.TrafficDirection_UNSPECIFIED:
		rl.Direction = DirectionUnspecified
	case corev3.TrafficDirection_INBOUND:
		rl.Direction = DirectionInbound
	case corev3.TrafficDirection_OUTBOUND:
		rl.Direction = DirectionOutbound
	default:
		return nil, nil, verr("traffic_direction", l.GetTrafficDirection().String(), "must be UNSPECIFIED, INBOUND or OUTBOUND")
	}
	if b := l.GetBindToPort(); b != nil {
		rl.BindToPort = b.GetValue()
	}
	rl.UseOriginalDst = l.GetUseOriginalDst().GetValue()
	if rl.ListenerFiltersTimeout, err = duration(l.GetListenerFiltersTimeout(), "listener_filters_timeout", DefaultListenerFiltersTimeout); err != nil {
		return nil, nil, err
	}
	rl.ContinueOnListenerFiltersTimeout = l.GetContinueOnListenerFiltersTimeout()
	seen := map[ListenerFilterKind]bool{}
	for i, lf := range l.GetListenerFilters() {
		f, err := buildListenerFilter(lf)
		if err != nil {
			return nil, nil, under(idx("listener_filters", i), err)
		}
		if seen[f.Kind] {
			return nil, nil, verr(idx("listener_filters", i)+".name", lf.GetName(), "must not repeat a listener filter")
		}
		seen[f.Kind] = true
		rl.ListenerFilters = append(rl.ListenerFilters, f)
	}
	if rl.UseOriginalDst && !seen[OriginalDst] {
		// Envoy adds the filter itself when use_original_dst is set
		// (ListenerImpl::buildOriginalDstListenerFilter); Istio's
		// virtualOutbound lists no listener filters.
		rl.ListenerFilters = append([]ListenerFilter{{Kind: OriginalDst}}, rl.ListenerFilters...)
	}

	chains := l.GetFilterChains()
	if len(chains) == 0 && l.GetDefaultFilterChain() == nil {
		return nil, nil, ferr("filter_chains", "must not be empty without a default_filter_chain")
	}
	names := map[string]int{}
	for _, fc := range chains {
		names[fc.GetName()]++
	}
	if d := l.GetDefaultFilterChain(); d != nil {
		names[d.GetName()]++
	}
	fb.inbound = rl.Direction == DirectionInbound
	var inlines []*RouteTable
	tuples := map[string]int{}
	keys := map[string]bool{}
	for i, fc := range chains {
		p := idx("filter_chains", i)
		c, inline, err := buildFilterChain(fb, rl.Name, fc, names[fc.GetName()] == 1, false)
		if err != nil {
			return nil, nil, under(p, err)
		}
		if c.Tracing != nil {
			c.Tracing.Egress = rl.Direction == DirectionOutbound
		}
		if err := checkDuplicateMatch(&c.Match, i, tuples); err != nil {
			return nil, nil, under(p+".filter_chain_match", err)
		}
		if keys[c.Key] {
			return nil, nil, verr(p+".name", fc.GetName(), "must be unique (two unnamed chains must differ in filter_chain_match)")
		}
		keys[c.Key] = true
		if inline != nil {
			inlines = append(inlines, inline)
		}
		rl.FilterChains = append(rl.FilterChains, c)
	}
	if d := l.GetDefaultFilterChain(); d != nil {
		if d.GetFilterChainMatch() != nil {
			return nil, nil, ferr("default_filter_chain.filter_chain_match", "must not be set")
		}
		c, inline, err := buildFilterChain(fb, rl.Name, d, names[d.GetName()] == 1, true)
		if err != nil {
			return nil, nil, under("default_filter_chain", err)
		}
		if c.Tracing != nil {
			c.Tracing.Egress = rl.Direction == DirectionOutbound
		}
		if inline != nil {
			inlines = append(inlines, inline)
		}
		rl.DefaultFilterChain = c
	}
	rl.byKey = make(map[string]*FilterChain, len(rl.FilterChains)+1)
	for _, fc := range rl.AllChains() {
		rl.byKey[fc.Key] = fc
	}
	return rl, inlines, nil
}

func buildListenerFilter(lf *listenerv3.ListenerFilter) (ListenerFilter, error) {
	var f ListenerFilter
	if err := onlyFields("", lf, "name", "typed_config", "filter_disabled"); err != nil {
		return f, err
	}
	var (
		m    proto.Message
		path = "typed_config"
	)
	switch lf.GetName() {
	case TLSInspectorName:
		f.Kind, m = TLSInspector, &tlsinspv3.TlsInspector{}
	case HTTPInspectorName:
		f.Kind, m = HTTPInspector, &httpinspv3.HttpInspector{}
	case OriginalDstName:
		f.Kind, m = OriginalDst, &origdstv3.OriginalDst{}
	default:
		return f, verr("name", lf.GetName(), "must be %s, %s or %s", TLSInspectorName, HTTPInspectorName, OriginalDstName)
	}
	if tc := lf.GetTypedConfig(); tc != nil {
		if err := anyTo(tc, m); err != nil {
			return f, ferr(path, "%v", err)
		}
		// No option of the three filters is implemented (tls_inspector's
		// JA3/JA4 fingerprints, buffer sizes; original_dst's Windows
		// traffic_direction).
		if err := onlyFields(path, m); err != nil {
			return f, err
		}
	}
	if d := lf.GetFilterDisabled(); d != nil {
		p, err := buildListenerFilterPredicate(d)
		if err != nil {
			return f, under("filter_disabled", err)
		}
		f.Disabled = p
	}
	return f, nil
}

func buildListenerFilterPredicate(m *listenerv3.ListenerFilterChainMatchPredicate) (*ListenerFilterPredicate, error) {
	switch r := m.GetRule().(type) {
	case *listenerv3.ListenerFilterChainMatchPredicate_AnyMatch:
		if !r.AnyMatch {
			return nil, verr("any_match", "false", "must be true")
		}
		return &ListenerFilterPredicate{Op: "any"}, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange:
		s, e := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if s < 0 || e > 65536 || s >= e {
			return nil, verr("destination_port_range", fmt.Sprintf("[%d, %d)", s, e), "must be a non-empty range of ports")
		}
		return &ListenerFilterPredicate{Op: "port", PortStart: uint32(s), PortEnd: uint32(e)}, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_NotMatch:
		sub, err := buildListenerFilterPredicate(r.NotMatch)
		if err != nil {
			return nil, under("not_match", err)
		}
		return &ListenerFilterPredicate{Op: "not", Rules: []*ListenerFilterPredicate{sub}}, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_OrMatch, *listenerv3.ListenerFilterChainMatchPredicate_AndMatch:
		op, field, rules := "or", "or_match", m.GetOrMatch().GetRules()
		if m.GetAndMatch() != nil {
			op, field, rules = "and", "and_match", m.GetAndMatch().GetRules()
		}
		if len(rules) < 2 {
			return nil, ferr(field+".rules", "must have at least 2 rules")
		}
		p := &ListenerFilterPredicate{Op: op}
		for i, sub := range rules {
			s, err := buildListenerFilterPredicate(sub)
			if err != nil {
				return nil, under(idx(field+".rules", i), err)
			}
			p.Rules = append(p.Rules, s)
		}
		return p, nil
	}
	return nil, ferr("rule", "must be set")
}

// chainDigest hashes a message deterministically.
func chainDigest(m proto.Message) uint64 {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

func buildFilterChain(fb *filterBuilder, listener string, fc *listenerv3.FilterChain, uniqueName, isDefault bool) (*FilterChain, *RouteTable, error) {
	c := &FilterChain{Name: fc.GetName(), Hash: chainDigest(fc)}
	if err := onlyFields("", fc, "filter_chain_match", "filters", "transport_socket", "transport_socket_connect_timeout", "name", "metadata"); err != nil {
		return nil, nil, err
	}
	switch {
	case uniqueName:
		c.Key = c.Name
	case isDefault:
		c.Key = c.Name + "#default"
	default:
		c.Key = c.Name + "#" + strconv.FormatUint(chainDigest(fc.GetFilterChainMatch()), 16)
	}
	var err error
	if c.Match, err = buildFilterChainMatch(fc.GetFilterChainMatch()); err != nil {
		return nil, nil, under("filter_chain_match", err)
	}
	if c.TLS, err = buildDownstreamTransportSocket(fc.GetTransportSocket()); err != nil {
		return nil, nil, under("transport_socket", err)
	}
	if c.HandshakeTimeout, err = duration(fc.GetTransportSocketConnectTimeout(), "transport_socket_connect_timeout", 0); err != nil {
		return nil, nil, err
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, nil, ferr("filters", "must end with "+HCMFilterName+" or "+TCPProxyFilterName)
	}
	last := len(filters) - 1
	for i, f := range filters[:last] {
		if isStatsFilter(f.GetName(), f.GetTypedConfig()) {
			if err := onlyFields(idx("filters", i), f, "name", "typed_config"); err != nil {
				return nil, nil, err
			}
			if c.TCPStats != nil {
				return nil, nil, verr(idx("filters", i)+".name", f.GetName(), "a second istio.stats filter")
			}
			if c.TCPStats, err = fb.statsFilter(f.GetTypedConfig()); err != nil {
				return nil, nil, under(idx("filters", i), err)
			}
			continue
		}
		if isMetadataExchange(f.GetName(), f.GetTypedConfig()) {
			if err := onlyFields(idx("filters", i), f, "name", "typed_config"); err != nil {
				return nil, nil, err
			}
			if c.MetadataExchange != "" {
				return nil, nil, verr(idx("filters", i)+".name", f.GetName(), "a second "+istiostats.MXFilterName)
			}
			if filters[last].GetName() != TCPProxyFilterName {
				return nil, nil, verr(idx("filters", i)+".name", f.GetName(), "only on a filter chain that ends with "+TCPProxyFilterName)
			}
			if c.MetadataExchange, err = metadataExchange(f.GetTypedConfig()); err != nil {
				return nil, nil, under(idx("filters", i), err)
			}
			continue
		}
		nf, err := fb.networkFilter(f)
		if err != nil {
			return nil, nil, under(idx("filters", i), err)
		}
		c.NetworkFilters = append(c.NetworkFilters, nf)
	}
	f := filters[last]
	p := idx("filters", last)
	if err := onlyFields(p, f, "name", "typed_config"); err != nil {
		return nil, nil, err
	}
	switch f.GetName() {
	case TCPProxyFilterName:
		var tp tcpv3.TcpProxy
		if err := anyTo(f.GetTypedConfig(), &tp); err != nil {
			return nil, nil, ferr(p+".typed_config", "%v", err)
		}
		if c.TCPProxy, err = buildTCPProxy(&tp); err != nil {
			return nil, nil, under(p+".typed_config", err)
		}
		if c.AccessLogs, err = buildAccessLogs("access_log", tp.GetAccessLog()); err != nil {
			return nil, nil, under(p+".typed_config", err)
		}
		c.StatPrefix = c.TCPProxy.StatPrefix
		return c, nil, nil
	case HCMFilterName:
		var hcm hcmv3.HttpConnectionManager
		if err := anyTo(f.GetTypedConfig(), &hcm); err != nil {
			return nil, nil, ferr(p+".typed_config", "%v", err)
		}
		inline, err := buildHCM(fb, listener, c, &hcm)
		if err != nil {
			return nil, nil, under(p+".typed_config", err)
		}
		return c, inline, nil
	}
	if fb.networkFactory(f) != nil {
		return nil, nil, verr(p+".name", f.GetName(), "the last filter must be %s or %s", HCMFilterName, TCPProxyFilterName)
	}
	return nil, nil, verr(p+".name", f.GetName(), "must be "+HCMFilterName+" or "+TCPProxyFilterName)
}

var sourceTypes = map[listenerv3.FilterChainMatch_ConnectionSourceType]SourceType{
	listenerv3.FilterChainMatch_ANY:                 SourceAny,
	listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK: SourceSameIPOrLocal,
	listenerv3.FilterChainMatch_EXTERNAL:            SourceExternal,
}

func buildFilterChainMatch(m *listenerv3.FilterChainMatch) (FilterChainMatch, error) {
	var fm FilterChainMatch
	if m == nil {
		return fm, nil
	}
	if err := onlyFields("", m, "destination_port", "prefix_ranges", "direct_source_prefix_ranges", "source_type",
		"source_prefix_ranges", "source_ports", "server_names", "transport_protocol", "application_protocols"); err != nil {
		return fm, err
	}
	if dp := m.GetDestinationPort(); dp != nil {
		if dp.GetValue() < 1 || dp.GetValue() > 65535 {
			return fm, verr("destination_port", strconv.FormatUint(uint64(dp.GetValue()), 10), "must be 1-65535")
		}
		fm.DestinationPort = dp.GetValue()
	}
	var err error
	if fm.PrefixRanges, err = cidrs("prefix_ranges", m.GetPrefixRanges()); err != nil {
		return fm, err
	}
	if fm.DirectSourcePrefixRanges, err = cidrs("direct_source_prefix_ranges", m.GetDirectSourcePrefixRanges()); err != nil {
		return fm, err
	}
	if fm.SourcePrefixRanges, err = cidrs("source_prefix_ranges", m.GetSourcePrefixRanges()); err != nil {
		return fm, err
	}
	st, ok := sourceTypes[m.GetSourceType()]
	if !ok {
		return fm, verr("source_type", m.GetSourceType().String(), "must be ANY, SAME_IP_OR_LOOPBACK or EXTERNAL")
	}
	fm.SourceType = st
	for i, p := range m.GetSourcePorts() {
		if p < 1 || p > 65535 {
			return fm, verr(idx("source_ports", i), strconv.FormatUint(uint64(p), 10), "must be 1-65535")
		}
		fm.SourcePorts = append(fm.SourcePorts, p)
	}
	for i, n := range m.GetServerNames() {
		ln := strings.ToLower(n)
		if err := checkServerName(ln); err != nil {
			return fm, verr(idx("server_names", i), n, "%v", err)
		}
		fm.ServerNames = append(fm.ServerNames, ln)
	}
	switch tp := m.GetTransportProtocol(); tp {
	case "", TransportTLS, TransportRawBuffer:
		fm.TransportProtocol = tp
	default:
		return fm, verr("transport_protocol", tp, "must be %q or %q", TransportTLS, TransportRawBuffer)
	}
	for i, p := range m.GetApplicationProtocols() {
		if p == "" {
			return fm, ferr(idx("application_protocols", i), "must not be empty")
		}
		fm.ApplicationProtocols = append(fm.ApplicationProtocols, p)
	}
	return fm, nil
}

// checkServerName accepts a host name or a wildcard "*.suffix".
func checkServerName(n string) error {
	rest := n
	if s, ok := strings.CutPrefix(n, "*."); ok {
		rest = s
	}
	if rest == "" || strings.Contains(rest, "*") {
		return errors.New(`must be a host name or a wildcard "*.example.com"`)
	}
	return nil
}

// cidrs parses CidrRanges into masked prefixes.
func cidrs(path string, rs []*corev3.CidrRange) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range rs {
		p := idx(path, i)
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, verr(p+".address_prefix", r.GetAddressPrefix(), "must be an IP address")
		}
		a = a.Unmap()
		bits := a.BitLen()
		if pl := r.GetPrefixLen(); pl != nil {
			bits = int(pl.GetValue())
		}
		if bits > a.BitLen() {
			return nil, verr(p+".prefix_len", strconv.Itoa(bits), "must be at most %d", a.BitLen())
		}
		out = append(out, netip.PrefixFrom(a, bits).Masked())
	}
	return out, nil
}

// checkDuplicateMatch refuses a chain one of whose match combinations an
// earlier chain (index in seen) already has: Envoy's "multiple filter
// chains with the same matching rules are defined".
func checkDuplicateMatch(m *FilterChainMatch, chain int, seen map[string]int) error {
	dims := [][]string{
		{strconv.FormatUint(uint64(m.DestinationPort), 10)},
		prefixStrings(m.PrefixRanges),
		orEmpty(m.ServerNames),
		{m.TransportProtocol},
		orEmpty(m.ApplicationProtocols),
		prefixStrings(m.DirectSourcePrefixRanges),
		{strconv.Itoa(int(m.SourceType))},
		prefixStrings(m.SourcePrefixRanges),
		portStrings(m.SourcePorts),
	}
	n := 1
	for _, d := range dims {
		n *= len(d)
		if n > maxMatchCombinations {
			return fmt.Errorf("more than %d combinations of its values; split the chain", maxMatchCombinations)
		}
	}
	pos := make([]int, len(dims))
	var b strings.Builder
	for {
		b.Reset()
		for i, d := range dims {
			b.WriteString(d[pos[i]])
			b.WriteByte(0)
		}
		k := b.String()
		if j, dup := seen[k]; dup && j != chain {
			return fmt.Errorf("must differ from filter_chains[%d]'s (multiple filter chains with the same matching rules)", j)
		}
		seen[k] = chain
		i := len(dims) - 1
		for ; i >= 0; i-- {
			if pos[i]++; pos[i] < len(dims[i]) {
				break
			}
			pos[i] = 0
		}
		if i < 0 {
			return nil
		}
	}
}

func orEmpty(s []string) []string {
	if len(s) == 0 {
		return []string{""}
	}
	return s
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, max(1, len(ps)))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return orEmpty(out)
}

func portStrings(ps []uint32) []string {
	out := make([]string, 0, max(1, len(ps)))
	for _, p := range ps {
		out = append(out, strconv.FormatUint(uint64(p), 10))
	}
	return orEmpty(out)
}

// HandOffTarget returns the listener a use_original_dst listener hands a
// connection to original destination dst over to: the listener whose
// address is dst, else the one on the wildcard address of dst's port
// (0.0.0.0 or [::] by dst's family), else nil. Envoy's
// use_original_dst.
func (g *Generation) HandOffTarget(dst netip.AddrPort) *Listener {
	if g == nil {
		return nil
	}
	a := dst.Addr().Unmap()
	if l := g.byAddress[netip.AddrPortFrom(a, dst.Port()).String()]; l != nil {
		return l
	}
	wild := netip.IPv4Unspecified()
	if a.Is6() {
		wild = netip.IPv6Unspecified()
	}
	return g.byAddress[netip.AddrPortFrom(wild, dst.Port()).String()]
}

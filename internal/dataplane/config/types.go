package config

import (
	"math"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/matcher"
	"github.com/loom-mesh/loom/internal/dataplane/routestats"
)

// Generation is one complete runtime config. It is immutable and safe for
// concurrent use; a new config is a new Generation.
type Generation struct {
	// Number counts generations built by this process, from 1.
	Number uint64
	// Versions is the xDS version_info applied, per type URL.
	Versions map[string]string
	// Listeners by name.
	Listeners map[string]*Listener
	// Routes are route tables by RouteConfiguration name.
	Routes map[string]*RouteTable
	// Clusters by name, each with its endpoints.
	Clusters map[string]*Cluster
	// source is the protos this generation was built from, or, when
	// encoded is set, nothing: Source decodes encoded anew. For
	// /config_dump only; the request path never reads either.
	source  Resources
	encoded *Encoded
	// SecretRefs are the secrets the listeners' and clusters' TLS
	// contexts name, sorted by name, once each; the proxy feeds its
	// secret sources from them (files, ADS subscriptions).
	SecretRefs []SecretRef
	// byAddress indexes Listeners by normalized address, for
	// HandOffTarget.
	byAddress map[string]*Listener
}

// Resources is a full set of xDS resources of the four types, as received.
type Resources struct {
	Listeners []proto.Message // *listenerv3.Listener
	Routes    []proto.Message // *routev3.RouteConfiguration
	Clusters  []proto.Message // *clusterv3.Cluster
	Endpoints []proto.Message // *endpointv3.ClusterLoadAssignment
	// Versions is the xDS version_info of each type URL these resources
	// come from; Build copies it to Generation.Versions. Nil for a
	// bootstrap file (static resources).
	Versions map[string]string
}

// Encoded is a full set of xDS resources of the four types kept
// serialized: each the value of the Any it came in (the wire bytes of a
// Listener, RouteConfiguration, Cluster or ClusterLoadAssignment), with
// the version_info of each type URL. A decoded resource is several times
// its wire size (a ClusterLoadAssignment's per-endpoint metadata Structs
// above all), so the xDS client keeps resources this way between updates
// and decodes them for each build (BuildEncoded).
type Encoded struct {
	Listeners [][]byte // envoy.config.listener.v3.Listener
	Routes    [][]byte // envoy.config.route.v3.RouteConfiguration
	Clusters  [][]byte // envoy.config.cluster.v3.Cluster
	Endpoints [][]byte // envoy.config.endpoint.v3.ClusterLoadAssignment
	Versions  map[string]string
}

// Direction is a listener's traffic direction (Envoy's TrafficDirection).
type Direction int

// Directions.
const (
	DirectionUnspecified Direction = iota
	DirectionInbound
	DirectionOutbound
)

// HTTPFilter is one compiled filter of a listener's chain
// (HttpConnectionManager.http_filters[i]).
type HTTPFilter struct {
	// Name is the HCM's filter name, the key of its typed_per_filter_config.
	Name   string
	Filter filter.Filter
	// Slot is the index of the filter's override in Route.FilterOverrides
	// (see Route.Override); slots are numbered per Generation.
	Slot int
}

// RouteTable is a compiled RouteConfiguration
// (envoy.config.route.v3.RouteConfiguration).
type RouteTable struct {
	Name         string
	VirtualHosts []*VirtualHost
	// exact, suffix ("*.foo") and prefix ("foo.*") domain indexes and the
	// catch-all "*", filled by Build; see RouteTable.VirtualHostFor.
	exact    map[string]*VirtualHost
	suffixes []domainEntry
	prefixes []domainEntry
	catchAll *VirtualHost
}

type domainEntry struct {
	pattern string
	vh      *VirtualHost
}

// VirtualHost is envoy.config.route.v3.VirtualHost: domains and ordered routes.
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []*Route
	// RequireTLS is require_tls ALL (Istio's Gateway httpsRedirect): a
	// request that did not come over TLS gets a 301 to its https:// URL
	// (SSLRedirect) instead of its route.
	RequireTLS bool
}

// SSLRedirect is the route a RequireTLS virtual host answers plain-text
// requests with, as Envoy's SslRedirectRoute: 301 to the same authority
// and path with scheme https.
var SSLRedirect = &Route{Name: "ssl_redirect", Action: ActionRedirect,
	Redirect: &Redirect{Scheme: "https", Code: http.StatusMovedPermanently}}

// Route is envoy.config.route.v3.Route: a match and what to do with
// matching requests (Action). The first matching route in a virtual host
// wins.
type Route struct {
	Name  string
	Match RouteMatch
	// Operation is Route.decorator.operation, the span name of the
	// requests the route takes ("" none); PropagateOperation is its
	// propagate (default true): an egress span sends it upstream, an
	// ingress span downstream, in x-envoy-decorator-operation.
	Operation          string
	PropagateOperation bool
	// Action is route (forward to Clusters), redirect (Redirect) or
	// direct_response (DirectResponse).
	Action         ActionKind
	Redirect       *Redirect
	DirectResponse *DirectResponse
	// RequestHeaders and ResponseHeaders are the *_headers_to_add and
	// *_headers_to_remove of the route, its virtual host and its route
	// configuration (the weighted cluster's are on WeightedCluster).
	RequestHeaders  HeaderMutations
	ResponseHeaders HeaderMutations
	// Rewrite is nil when RouteAction rewrites neither path nor host.
	Rewrite *Rewrite
	// Mirrors are RouteAction.request_mirror_policies.
	Mirrors []MirrorPolicy
	// Clusters is where the request goes: one entry for RouteAction.cluster,
	// several for weighted_clusters; empty unless Action is ActionRoute.
	// Weights are relative; TotalWeight is their sum (> 0).
	Clusters    []WeightedCluster
	TotalWeight uint32
	// picks counts Pick calls on a weighted route; nil otherwise. It is
	// the one mutable field: shared by every request of the generation.
	picks *atomic.Uint64
	// Timeout is the whole request's timeout, retries included. 0 means
	// none (Envoy: timeout 0s disables it; Istio sets 0 unless the
	// VirtualService has timeout).
	Timeout time.Duration
	// GRPCTimeout, when not nil, makes a gRPC request's timeout its
	// grpc-timeout header (RouteAction.max_grpc_timeout, or
	// max_stream_duration.grpc_timeout_header_max); nil: Timeout applies.
	GRPCTimeout *GRPCTimeout
	// Retry is nil when the route does not retry.
	Retry *RetryPolicy
	// HashPolicies feed RING_HASH and MAGLEV clusters (RequestHash).
	HashPolicies []HashPolicy
	// FilterOverrides are the parsed typed_per_filter_config of the route,
	// else of its virtual host, else of its route configuration, indexed
	// by HTTPFilter.Slot; nil when there are none, and an entry is nil
	// when that filter has no override. It may be shorter than a slot:
	// read it with Override.
	FilterOverrides []filter.Config
	// Upgrades are RouteAction.upgrade_configs: upgrade type (lower case)
	// to enabled, overriding the listener's; nil when none.
	Upgrades Upgrades
	// StatPrefix is Route.stat_prefix (Istio's HTTPMatchRequest.statPrefix):
	// "" keeps no route-level stats. Stats are its
	// vhost.<virtual host name>.route.<stat_prefix>.* stats, resolved at
	// build (filter.Deps.RouteStats); nil counts nothing.
	StatPrefix string
	Stats      *routestats.Stats
	// RateLimits are RouteAction.rate_limits and its virtual host's
	// rate_limits, which the rate limit filters read; nil when neither
	// has any (and for redirects and direct responses).
	RateLimits *filter.RateLimitPolicy
}

// WeightedCluster is one destination of a route.
type WeightedCluster struct {
	Name   string
	Weight uint32
	// RequestHeaders and ResponseHeaders are the cluster's
	// *_headers_to_add/remove (weighted_clusters only); nil when none.
	RequestHeaders  *HeaderMutation
	ResponseHeaders *HeaderMutation
}

// PathMatchKind says which of RouteMatch's path fields applies.
type PathMatchKind int

// Path match kinds (RouteMatch.path_specifier).
const (
	PathPrefix PathMatchKind = iota // Prefix; "" matches every path
	PathExact                       // Path
	PathRegex                       // Regex (RE2, whole path)
)

// RouteMatch is envoy.config.route.v3.RouteMatch: a path match plus header,
// query parameter and dynamic metadata matchers, all of which must match.
type RouteMatch struct {
	PathKind PathMatchKind
	Prefix   string
	Path     string
	Regex    *regexp.Regexp // anchored: matches the whole path
	// CaseInsensitive applies to Prefix and Path (RouteMatch.case_sensitive = false).
	CaseInsensitive bool
	Headers         []HeaderMatcher
	// Query is RouteMatch.query_parameters; nil means the query is not
	// looked at (and not parsed).
	Query []QueryMatcher
	// Metadata is RouteMatch.dynamic_metadata: matchers on the metadata
	// the filters wrote (Istio's JWT claim routing reads jwt_authn's
	// payload). Before any filter ran the metadata is empty; a route that
	// needs it is matched again once a filter clears the route cache.
	Metadata []matcher.MetadataMatch
}

// StringMatchKind says how a HeaderMatcher or QueryMatcher compares.
type StringMatchKind int

// String match kinds (envoy.type.matcher.v3.StringMatcher, HeaderMatcher and
// QueryParameterMatcher).
const (
	MatchExact StringMatchKind = iota
	MatchPrefix
	MatchSuffix
	MatchRegex
	MatchPresent
)

// HeaderMatcher is envoy.config.route.v3.HeaderMatcher.
type HeaderMatcher struct {
	Name  string // canonical header name; ":authority", ":method", ":path" and ":scheme" read the request line
	Kind  StringMatchKind
	Value string         // for Exact, Prefix, Suffix
	Regex *regexp.Regexp // for Regex; anchored
	// Present, for MatchPresent: true matches when the header is there.
	Present bool
	// Invert negates the result (HeaderMatcher.invert_match).
	Invert bool
	// TreatMissingAsEmpty, for every Kind but MatchPresent, matches an
	// absent header as if it were sent with the value ""
	// (HeaderMatcher.treat_missing_header_as_empty); Invert then applies as
	// usual. When false an absent header never matches, inverted or not.
	TreatMissingAsEmpty bool
}

// QueryMatcher is envoy.config.route.v3.QueryParameterMatcher. It reads the
// first parameter named Name in the request's raw query, neither name nor
// value percent-decoded, as Envoy does; a parameter without "=" has the
// value "".
type QueryMatcher struct {
	// Name is the parameter's key, compared byte for byte. Never empty.
	Name string
	// Kind is MatchExact, MatchPrefix, MatchSuffix, MatchRegex
	// (string_match) or MatchPresent (present_match, or no specifier).
	Kind  StringMatchKind
	Value string         // for Exact, Prefix, Suffix
	Regex *regexp.Regexp // for Regex; anchored
	// IgnoreCase makes Exact, Prefix and Suffix compare ASCII letters
	// case-insensitively (StringMatcher.ignore_case); it has no effect on
	// Regex, as in Envoy.
	IgnoreCase bool
	// Present, for MatchPresent: true matches when the parameter is in the
	// query, false when it is not. A parameter that is absent matches no
	// other Kind.
	Present bool
}

// GRPCTimeout is Envoy's gRPC timeout of a route (FilterUtility::
// finalTimeout): a gRPC request's timeout is its grpc-timeout header, less
// Offset when that leaves it positive, capped at Max; with neither header
// nor cap, none. Max 0 means no cap. Istio sets Max to the
// VirtualService's timeout, so a client's deadline bounds its request in
// the proxy too.
type GRPCTimeout struct {
	Max    time.Duration
	Offset time.Duration // grpc_timeout_offset
}

// Final is the timeout of a gRPC request with grpc-timeout header value
// header ("" when absent): 0 means none. A malformed header counts as
// absent, as Envoy's Grpc::Common::getGrpcTimeout.
func (g *GRPCTimeout) Final(header string) time.Duration {
	t, _ := ParseGRPCTimeout(header)
	if g.Offset > 0 && g.Offset < t {
		t -= g.Offset
	}
	if g.Max > 0 && (t == 0 || t > g.Max) {
		t = g.Max
	}
	return t
}

// ParseGRPCTimeout reads a grpc-timeout header: 1 to 8 digits and a unit
// (H, M, S, m, u, n), per gRPC's HTTP/2 protocol. false when v is not one.
func ParseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	var n int64
	for i := 0; i < len(v)-1; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > math.MaxInt64/int64(unit) {
		// 8 digits of hours overflow nanoseconds: that long is forever.
		return math.MaxInt64, true
	}
	return time.Duration(n) * unit, true
}

// FormatGRPCTimeout writes d as a grpc-timeout header in milliseconds, or
// the coarsest unit that keeps it within 8 digits, as Envoy's
// Grpc::Common::toGrpcTimeout.
func FormatGRPCTimeout(d time.Duration) string {
	const maxValue = 99999999
	v := int64(d / time.Millisecond)
	if v == 0 && d > 0 {
		v = 1 // 0 would mean no time at all
	}
	units := [...]struct {
		div  int64
		name byte
	}{{1, 'm'}, {1000, 'S'}, {60, 'M'}, {60, 'H'}}
	u := 0
	for v > maxValue && u < len(units)-1 {
		u++
		v /= units[u].div
	}
	if v > maxValue {
		v = maxValue
	}
	return strconv.FormatInt(v, 10) + string(units[u].name)
}

// RetryPolicy is envoy.config.route.v3.RetryPolicy.
type RetryPolicy struct {
	// RetryOn holds Envoy's conditions: "5xx", "gateway-error", "reset",
	// "connect-failure", "retriable-4xx", "refused-stream",
	// "retriable-status-codes".
	RetryOn       []string
	NumRetries    uint32
	PerTryTimeout time.Duration // 0: the route's timeout
	// RetriableStatusCodes are the codes "retriable-status-codes" retries
	// (RetryPolicy.retriable_status_codes).
	RetriableStatusCodes []uint32
	// RetriableHeaders retry a response whose headers match any of them
	// (retriable_headers); RetriableRequestHeaders, when set, allow
	// retries only for a request matching one of them.
	RetriableHeaders        []HeaderMatcher
	RetriableRequestHeaders []HeaderMatcher
	// AvoidPreviousHosts is retry_host_predicate
	// envoy.retry_host_predicates.previous_hosts: a retry avoids the hosts
	// already tried. HostSelectionMaxAttempts is
	// host_selection_retry_max_attempts; 0 is Envoy's default, 1.
	AvoidPreviousHosts       bool
	HostSelectionMaxAttempts int64
	// PreviousPrioritiesEvery is retry_priority
	// envoy.retry_priorities.previous_priorities' update_frequency (Istio's
	// retryRemoteLocalities): after every this many attempts, the priority
	// levels attempted so far are avoided. 0: no retry priority.
	PreviousPrioritiesEvery uint32
	// BaseInterval and MaxInterval are retry_back_off; 0 means Envoy's
	// defaults (25ms, and 10 times the base interval).
	BaseInterval time.Duration
	MaxInterval  time.Duration
}

// PreviousPrioritiesFor returns p's PreviousPrioritiesEvery; 0 for a nil
// policy.
func (p *RetryPolicy) PreviousPrioritiesFor() uint32 {
	if p == nil {
		return 0
	}
	return p.PreviousPrioritiesEvery
}

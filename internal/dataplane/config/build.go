package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/matcher"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Names of the only extensions this version supports.
const (
	HCMFilterName    = "envoy.filters.network.http_connection_manager"
	RouterFilterName = "envoy.filters.http.router"
	// HTTPProtocolOptionsKey is the key of Cluster.typed_extension_protocol_options
	// that selects the upstream HTTP version.
	HTTPProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// Defaults Envoy applies when a field is unset.
const (
	// DefaultRouteTimeout is RouteAction.timeout when unset (Envoy: 15s).
	DefaultRouteTimeout = 15 * time.Second
	// DefaultConnectTimeout is Cluster.connect_timeout when unset (Envoy: 5s).
	DefaultConnectTimeout = 5 * time.Second
)

// InlineRouteName is the key in Generation.Routes of the inline
// route_config of the filter chain whose Key is chain in listener:
// "inline:" + listener + "/" + chain. RDS names never take this form in
// Loom.
func InlineRouteName(listener, chain string) string { return "inline:" + listener + "/" + chain }

// Build validates a complete set of xDS resources and compiles them into a
// new Generation. It is pure and safe for concurrent use; res is not
// modified and the Generation keeps references to its protos only for
// Source.
//
// prev is the generation currently applied (nil for the first one); the new
// Generation's Number is prev.Number+1.
//
// Any invalid resource, or one that uses a feature this version does not
// implement and that would change behaviour, makes Build return a single
// error naming the resource and the field, such as
//
//	listener "virtualOutbound": filter_chains[0].filters[0].name = "x": must be envoy.filters.network.http_connection_manager
//
// and no Generation. Missing references are not errors: a route to an
// unknown cluster is served 503 NC, an RDS name that has not arrived 404 NR,
// an EDS cluster without ClusterLoadAssignment has no endpoints (503 UH).
func Build(res Resources, prev *Generation) (*Generation, error) {
	return BuildWith(res, prev, filter.Deps{})
}

// BuildEncoded is BuildWith on enc decoded (Encoded.Decode), with the same
// errors. It decodes one resource at a time and drops it once compiled,
// so the decoded protos never all live at once, and the Generation keeps
// enc, not them: its Source decodes enc again. enc must not be modified
// after.
func BuildEncoded(enc *Encoded, prev *Generation, deps filter.Deps) (*Generation, error) {
	g, err := buildWith(enc.lists(), enc.Versions, prev, deps)
	if err != nil {
		return nil, err
	}
	g.encoded = enc
	return g, nil
}

// Decode unmarshals every resource of e. An error names the index within
// its type and the type URL:
//
//	resources[3]: decode type.googleapis.com/envoy.config.cluster.v3.Cluster: ...
func (e *Encoded) Decode() (Resources, error) {
	res := Resources{Versions: e.Versions}
	l := e.lists()
	var err error
	if res.Listeners, err = l.listeners.all(); err != nil {
		return Resources{}, err
	}
	if res.Routes, err = l.routes.all(); err != nil {
		return Resources{}, err
	}
	if res.Clusters, err = l.clusters.all(); err != nil {
		return Resources{}, err
	}
	if res.Endpoints, err = l.endpoints.all(); err != nil {
		return Resources{}, err
	}
	return res, nil
}

// lists are e's four types as resourceLists that decode on demand.
func (e *Encoded) lists() resourceLists {
	return resourceLists{
		listeners: encodedList(e.Listeners, xdsapi.ListenerType, func() proto.Message { return new(listenerv3.Listener) }),
		routes:    encodedList(e.Routes, xdsapi.RouteType, func() proto.Message { return new(routev3.RouteConfiguration) }),
		clusters:  encodedList(e.Clusters, xdsapi.ClusterType, func() proto.Message { return new(clusterv3.Cluster) }),
		endpoints: encodedList(e.Endpoints, xdsapi.EndpointType, func() proto.Message { return new(endpointv3.ClusterLoadAssignment) }),
	}
}

// resourceList is one type's resources for buildWith to walk: decoded
// already (msgs) or serialized (raw, decoded by at).
type resourceList struct {
	msgs    []proto.Message
	raw     [][]byte
	typeURL string
	newMsg  func() proto.Message
}

// resourceLists are the four types' resourceLists.
type resourceLists struct {
	listeners, routes, clusters, endpoints resourceList
}

func decodedList(ms []proto.Message) resourceList { return resourceList{msgs: ms} }

func encodedList(raw [][]byte, typeURL string, newMsg func() proto.Message) resourceList {
	return resourceList{raw: raw, typeURL: typeURL, newMsg: newMsg}
}

func (l resourceList) len() int {
	if l.newMsg != nil {
		return len(l.raw)
	}
	return len(l.msgs)
}

// at returns resource i, decoding it when l is serialized.
func (l resourceList) at(i int) (proto.Message, error) {
	if l.newMsg == nil {
		return l.msgs[i], nil
	}
	m := l.newMsg()
	if err := proto.Unmarshal(l.raw[i], m); err != nil {
		return nil, fmt.Errorf("resources[%d]: decode %s: %w", i, l.typeURL, err)
	}
	return m, nil
}

func (l resourceList) all() ([]proto.Message, error) {
	if l.len() == 0 {
		return nil, nil
	}
	out := make([]proto.Message, l.len())
	for i := range out {
		m, err := l.at(i)
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

// Source returns the protos g was built from, for /config_dump: Build's
// input, or BuildEncoded's decoded anew (an error only if that fails).
// The caller must not modify them.
func (g *Generation) Source() (Resources, error) {
	if g.encoded != nil {
		return g.encoded.Decode()
	}
	return g.source, nil
}

// BuildWith is Build with the proxy's services for the HTTP filters'
// Build (filter.Deps): gRPC clients and the service cluster. Its
// HasCluster is set by BuildWith to the generation's own clusters.
func BuildWith(res Resources, prev *Generation, deps filter.Deps) (*Generation, error) {
	g, err := buildWith(resourceLists{listeners: decodedList(res.Listeners), routes: decodedList(res.Routes),
		clusters: decodedList(res.Clusters), endpoints: decodedList(res.Endpoints)}, res.Versions, prev, deps)
	if err != nil {
		return nil, err
	}
	g.source = res
	return g, nil
}

func buildWith(res resourceLists, versions map[string]string, prev *Generation, deps filter.Deps) (*Generation, error) {
	g := &Generation{
		Number:    1,
		Versions:  maps.Clone(versions),
		Listeners: make(map[string]*Listener, res.listeners.len()),
		Routes:    make(map[string]*RouteTable, res.routes.len()),
		Clusters:  make(map[string]*Cluster, res.clusters.len()),
	}
	if g.Versions == nil {
		g.Versions = map[string]string{}
	}
	if prev != nil {
		g.Number = prev.Number + 1
	}
	deps.HasCluster = func(name string) bool { _, ok := g.Clusters[name]; return ok }
	fb, err := newFilterBuilder(deps)
	if err != nil {
		return nil, err
	}

	// Endpoints first: clusters pick them up by name.
	clas := make(map[string]loadAssignment, res.endpoints.len())
	for i := range res.endpoints.len() {
		m, err := res.endpoints.at(i)
		if err != nil {
			return nil, err
		}
		cla, ok := m.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			return nil, fmt.Errorf("endpoints[%d]: got %T, want ClusterLoadAssignment", i, m)
		}
		name := cla.GetClusterName()
		if name == "" {
			return nil, fmt.Errorf("cluster_load_assignment[%d]: cluster_name: must not be empty", i)
		}
		if _, dup := clas[name]; dup {
			return nil, resErr("cluster_load_assignment", name, ferr("cluster_name", "duplicate"))
		}
		eps, err := buildEndpoints(cla)
		if err == nil {
			err = envoyValidate(cla)
		}
		if err != nil {
			return nil, resErr("cluster_load_assignment", name, err)
		}
		clas[name] = eps
	}

	for i := range res.clusters.len() {
		m, err := res.clusters.at(i)
		if err != nil {
			return nil, err
		}
		c, ok := m.(*clusterv3.Cluster)
		if !ok {
			return nil, fmt.Errorf("clusters[%d]: got %T, want Cluster", i, m)
		}
		if c.GetName() == "" {
			return nil, fmt.Errorf("cluster[%d]: name: must not be empty", i)
		}
		if _, dup := g.Clusters[c.GetName()]; dup {
			return nil, resErr("cluster", c.GetName(), ferr("name", "duplicate"))
		}
		rc, err := buildCluster(c, clas)
		if err == nil {
			err = envoyValidate(c)
		}
		if err != nil {
			return nil, resErr("cluster", c.GetName(), err)
		}
		g.Clusters[rc.Name] = rc
	}

	for i := range res.routes.len() {
		m, err := res.routes.at(i)
		if err != nil {
			return nil, err
		}
		rc, ok := m.(*routev3.RouteConfiguration)
		if !ok {
			return nil, fmt.Errorf("routes[%d]: got %T, want RouteConfiguration", i, m)
		}
		if rc.GetName() == "" {
			return nil, fmt.Errorf("route_config[%d]: name: must not be empty", i)
		}
		if _, dup := g.Routes[rc.GetName()]; dup {
			return nil, resErr("route_config", rc.GetName(), ferr("name", "duplicate"))
		}
		rt, err := buildRouteTable(fb, rc.GetName(), rc)
		if err == nil {
			err = envoyValidate(rc)
		}
		if err != nil {
			return nil, resErr("route_config", rc.GetName(), err)
		}
		g.Routes[rt.Name] = rt
	}

	for i := range res.listeners.len() {
		m, err := res.listeners.at(i)
		if err != nil {
			return nil, err
		}
		l, ok := m.(*listenerv3.Listener)
		if !ok {
			return nil, fmt.Errorf("listeners[%d]: got %T, want Listener", i, m)
		}
		if l.GetName() == "" {
			return nil, fmt.Errorf("listener[%d]: name: must not be empty", i)
		}
		if _, dup := g.Listeners[l.GetName()]; dup {
			return nil, resErr("listener", l.GetName(), ferr("name", "duplicate"))
		}
		rl, inlines, err := buildListener(fb, l)
		if err == nil {
			err = envoyValidate(l)
		}
		if err != nil {
			return nil, resErr("listener", l.GetName(), err)
		}
		for _, rt := range inlines {
			g.Routes[rt.Name] = rt
		}
		g.Listeners[rl.Name] = rl
	}
	g.SecretRefs = secretRefs(g)
	g.byAddress = make(map[string]*Listener, len(g.Listeners))
	for _, name := range slices.Sorted(maps.Keys(g.Listeners)) {
		l := g.Listeners[name]
		k := listenerAddressKey(l.Address)
		if _, dup := g.byAddress[k]; !dup {
			g.byAddress[k] = l
		}
	}
	return g, nil
}

// secretRefs lists the secrets g's listeners and clusters name, sorted by
// name, once each.
func secretRefs(g *Generation) []SecretRef {
	seen := map[SecretRef]bool{}
	add := func(c *CommonTLS) {
		for _, r := range c.SecretRefs() {
			seen[r] = true
		}
	}
	for _, l := range g.Listeners {
		for _, fc := range l.AllChains() {
			if fc.TLS != nil {
				add(&fc.TLS.CommonTLS)
			}
		}
	}
	for _, c := range g.Clusters {
		for _, t := range c.Transports {
			if t.TLS != nil {
				add(&t.TLS.CommonTLS)
			}
		}
	}
	out := slices.Collect(maps.Keys(seen))
	slices.SortFunc(out, func(a, b SecretRef) int {
		if a.Name != b.Name {
			return strings.Compare(a.Name, b.Name)
		}
		return int(a.Source) - int(b.Source)
	})
	return out
}

// ADSSecretNames returns the names of the secrets g fetches over ADS
// (SecretADS), sorted.
func (g *Generation) ADSSecretNames() []string {
	var out []string
	for _, r := range g.SecretRefs {
		if r.Source == SecretADS && (len(out) == 0 || out[len(out)-1] != r.Name) {
			out = append(out, r.Name)
		}
	}
	return out
}

// LocalSecretNames returns the names of the secrets g resolves in-process
// (SecretLocal: "default", "ROOTCA", file-cert: and file-root: names),
// sorted.
func (g *Generation) LocalSecretNames() []string {
	var out []string
	for _, r := range g.SecretRefs {
		if r.Source == SecretLocal && (len(out) == 0 || out[len(out)-1] != r.Name) {
			out = append(out, r.Name)
		}
	}
	return out
}

// listenerAddressKey normalizes "ip:port" ("::0" and "::" alike).
func listenerAddressKey(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return addr
}

// envoyValidate runs the protoc-gen-validate rules of Envoy's protos (the
// constraints Envoy itself enforces) as a backstop behind Build's own
// checks, which give better messages for the fields this version reads.
func envoyValidate(m interface{ Validate() error }) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("violates Envoy's constraints: %w", err)
	}
	return nil
}

// fieldError is a validation failure at a field path inside one resource;
// the filters' parsers return the same type.
type fieldError = filter.FieldError

func ferr(path, format string, args ...any) error { return filter.FieldErr(path, format, args...) }

func verr(path, value, format string, args ...any) error {
	return filter.ValueErr(path, value, format, args...)
}

// under prefixes the path of a fieldError with parent.
func under(parent string, err error) error {
	var fe *fieldError
	if errors.As(err, &fe) {
		c := *fe
		if c.Path == "" {
			c.Path = parent
		} else if strings.HasPrefix(c.Path, "[") {
			c.Path = parent + c.Path
		} else {
			c.Path = parent + "." + c.Path
		}
		return &c
	}
	return fmt.Errorf("%s: %w", parent, err)
}

func resErr(kind, name string, err error) error {
	return fmt.Errorf("%s %q: %w", kind, name, err)
}

func idx(name string, i int) string { return name + "[" + strconv.Itoa(i) + "]" }

// compileRegex compiles an Envoy safe_regex (RE2) anchored to match the
// whole input, as Envoy's RegexMatcher does.
func compileRegex(path string, m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m == nil {
		return nil, ferr(path, "must be set")
	}
	re := m.GetRegex()
	if _, err := regexp.Compile(re); err != nil {
		return nil, verr(path+".regex", re, "must be RE2: %v", err)
	}
	return regexp.MustCompile(`^(?:` + re + `)$`), nil
}

func duration(d *durationpb.Duration, path string, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, ferr(path, "%v", err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, verr(path, v.String(), "must not be negative")
	}
	return v, nil
}

// MaxPipePath is the longest unix domain socket path, in bytes
// (xdsapi.MaxPipePath, shared with the control plane's validation).
const MaxPipePath = xdsapi.MaxPipePath

// IsPipe reports whether addr, a Listener's or an Endpoint's Address,
// names a unix domain socket (an Envoy Address.pipe): it starts with "/"
// (a filesystem path) or "@" (Linux's abstract namespace). "ip:port" and
// "host:port" never do.
func IsPipe(addr string) bool {
	return strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "@")
}

// Network is the net package's network to listen on or dial addr: "unix"
// for a pipe (IsPipe), "tcp" otherwise. Go's "unix" network takes a
// leading "@" as the abstract namespace, as Envoy does.
func Network(addr string) string {
	if IsPipe(addr) {
		return "unix"
	}
	return "tcp"
}

// PipePeer is the downstream remote address of a connection accepted on
// the pipe listener at local whose peer's address is peer (Go's
// RemoteAddr text): an unnamed unix peer ("" or "@", what a client that
// did not bind gives) is local itself, as Envoy's peerAddress falls back
// to its own socket's name; a bound peer keeps its path.
func PipePeer(peer, local string) string {
	if peer == "" || peer == "@" {
		return local
	}
	return peer
}

// pipeAddress validates an Address with a pipe (Envoy's Pipe) and returns
// its path: absolute ("/...") or abstract ("@name"), at most MaxPipePath
// bytes, mode at most 0777 (Envoy's constraint).
func pipeAddress(path string, a *corev3.Address) (string, error) {
	p := a.GetPipe()
	switch {
	case p.GetPath() == "":
		return "", ferr(path+".pipe.path", "must not be empty")
	case !IsPipe(p.GetPath()):
		return "", verr(path+".pipe.path", p.GetPath(), "must be an absolute path or @name (abstract)")
	case len(p.GetPath()) > MaxPipePath:
		return "", verr(path+".pipe.path", p.GetPath(), "must be at most %d bytes (a unix socket path)", MaxPipePath)
	case p.GetMode() > 0o777:
		return "", verr(path+".pipe.mode", strconv.FormatUint(uint64(p.GetMode()), 8), "must be at most 0777")
	}
	return p.GetPath(), nil
}

// socketAddress validates an Address with a socket_address holding an IP
// literal and a port, and returns "ip:port".
func socketAddress(path string, a *corev3.Address) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", ferr(path+".socket_address", "must be set")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", verr(path+".socket_address.protocol", sa.GetProtocol().String(), "must be TCP")
	}
	if sa.GetResolverName() != "" || sa.GetNamedPort() != "" {
		return "", ferr(path+".socket_address", "resolver_name and named_port are not supported")
	}
	if _, err := netip.ParseAddr(sa.GetAddress()); err != nil {
		return "", verr(path+".socket_address.address", sa.GetAddress(), "must be an IP address")
	}
	port := sa.GetPortValue()
	if port == 0 || port > 65535 {
		return "", verr(path+".socket_address.port_value", strconv.FormatUint(uint64(port), 10), "must be 1-65535")
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port), 10)), nil
}

func anyTo(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return errors.New("must be set")
	}
	want := "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
	if a.GetTypeUrl() != want {
		return fmt.Errorf("type_url %q: must be %s", a.GetTypeUrl(), want)
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("decode %s: %w", want, err)
	}
	return nil
}

// ---- listeners ----

// buildHCM fills chain c (of listener) from its HTTP connection manager;
// it returns the inline route table, if any.
func buildHCM(fb *filterBuilder, listener string, c *FilterChain, hcm *hcmv3.HttpConnectionManager) (*RouteTable, error) {
	rl := c
	rl.StatPrefix = hcm.GetStatPrefix()
	if rl.StatPrefix == "" {
		return nil, ferr("stat_prefix", "must not be empty")
	}
	if hcm.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
		return nil, verr("codec_type", hcm.GetCodecType().String(), "must be AUTO")
	}
	var inline *RouteTable
	switch rs := hcm.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if rs.Rds.GetConfigSource().GetAds() == nil {
			return nil, ferr("rds.config_source", "must be ads")
		}
		if rs.Rds.GetRouteConfigName() == "" {
			return nil, ferr("rds.route_config_name", "must not be empty")
		}
		rl.RouteConfigName = rs.Rds.GetRouteConfigName()
	case *hcmv3.HttpConnectionManager_RouteConfig:
		name := InlineRouteName(listener, c.Key)
		rt, err := buildRouteTable(fb, name, rs.RouteConfig)
		if err != nil {
			return nil, under("route_config", err)
		}
		inline = rt
		rl.RouteConfigName = name
	default:
		return nil, ferr("route_specifier", "must be rds or route_config")
	}
	chain, stats, alpn, err := fb.httpFilters(hcm.GetHttpFilters())
	if err != nil {
		return nil, err
	}
	rl.HTTPFilters = chain
	rl.HTTPStats = stats
	rl.ALPNOverride = alpn
	rl.XFF = filter.XFF{UseRemoteAddress: hcm.GetUseRemoteAddress().GetValue(), TrustedHops: hcm.GetXffNumTrustedHops()}
	rl.MaxRequestHeaderBytes = DefaultMaxRequestHeaderBytes
	if kb := hcm.GetMaxRequestHeadersKb(); kb != nil {
		rl.MaxRequestHeaderBytes = int(kb.GetValue()) << 10 // 1-8192, checked by Validate below
	}
	rl.MaxRequestHeaders = DefaultMaxRequestHeaders
	if n := hcm.GetCommonHttpProtocolOptions().GetMaxHeadersCount(); n != nil {
		rl.MaxRequestHeaders = int(n.GetValue()) // at least 1, checked by Validate below
	}
	if rl.Upgrades, err = buildHCMUpgrades(hcm.GetUpgradeConfigs()); err != nil {
		return nil, err
	}
	if rl.XFCC, err = buildXFCC(hcm); err != nil {
		return nil, err
	}
	if rl.AccessLogs, err = buildAccessLogs("access_log", hcm.GetAccessLog()); err != nil {
		return nil, err
	}
	if rl.Tracing, err = buildTracing(hcm.GetTracing()); err != nil {
		return nil, err
	}
	if err := hcm.Validate(); err != nil {
		return nil, ferr("", "violates Envoy's constraints: %v", err)
	}
	return inline, nil
}

// buildXFCC reads forward_client_cert_details and
// set_current_client_cert_details.
func buildXFCC(hcm *hcmv3.HttpConnectionManager) (XFCC, error) {
	var x XFCC
	switch m := hcm.GetForwardClientCertDetails(); m {
	case hcmv3.HttpConnectionManager_SANITIZE:
		x.Mode = XFCCSanitize
	case hcmv3.HttpConnectionManager_FORWARD_ONLY:
		x.Mode = XFCCForwardOnly
	case hcmv3.HttpConnectionManager_APPEND_FORWARD:
		x.Mode = XFCCAppendForward
	case hcmv3.HttpConnectionManager_SANITIZE_SET:
		x.Mode = XFCCSanitizeSet
	case hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		x.Mode = XFCCAlwaysForwardOnly
	default:
		return x, verr("forward_client_cert_details", m.String(), "must be SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET or ALWAYS_FORWARD_ONLY")
	}
	d := hcm.GetSetCurrentClientCertDetails()
	if err := onlyFields("set_current_client_cert_details", d, "subject", "cert", "chain", "dns", "uri"); err != nil {
		return x, err
	}
	x.Subject, x.URI, x.Cert, x.Chain, x.DNS = d.GetSubject().GetValue(), d.GetUri(), d.GetCert(), d.GetChain(), d.GetDns()
	return x, nil
}

// ---- routes ----

// supportedRetryOn lists Envoy's retry_on conditions this version accepts
// (x-envoy-retry-on and x-envoy-retry-grpc-on values).
var supportedRetryOn = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "reset-before-request": true,
	"connect-failure": true, "retriable-4xx": true, "refused-stream": true,
	"retriable-status-codes": true, "envoy-ratelimited": true, "retriable-headers": true,
	// gRPC conditions (Istio's default retry_on has some); they only apply
	// to gRPC responses.
	"cancelled": true, "deadline-exceeded": true, "internal": true,
	"resource-exhausted": true, "unavailable": true,
}

func buildRouteTable(fb *filterBuilder, name string, rc *routev3.RouteConfiguration) (*RouteTable, error) {
	rt := &RouteTable{Name: name, exact: map[string]*VirtualHost{}}
	rcOver, err := fb.overrides(rc.GetTypedPerFilterConfig())
	if err != nil {
		return nil, err
	}
	lv := routeLevels{rcOver: rcOver, mostSpecificWins: rc.GetMostSpecificHeaderMutationsWins(),
		maxBody: DefaultMaxDirectResponseBodyBytes}
	if m := rc.GetMaxDirectResponseBodySizeBytes(); m != nil {
		lv.maxBody = m.GetValue()
	}
	if lv.rcReq, lv.rcResp, err = levelHeaders(rc); err != nil {
		return nil, err
	}
	if len(rc.GetRequestMirrorPolicies()) > 0 {
		return nil, ferr("request_mirror_policies", "not supported on a route configuration; set it on the route")
	}
	seen := map[string]bool{}
	for i, v := range rc.GetVirtualHosts() {
		p := idx("virtual_hosts", i)
		vh, err := buildVirtualHost(fb, lv, v)
		if err != nil {
			return nil, under(p, err)
		}
		for j, d := range vh.Domains {
			ld := strings.ToLower(d)
			if seen[ld] {
				return nil, verr(idx(p+".domains", j), d, "must be unique in the route configuration")
			}
			seen[ld] = true
			switch {
			case ld == "*":
				rt.catchAll = vh
			case strings.HasPrefix(ld, "*"):
				rt.suffixes = append(rt.suffixes, domainEntry{pattern: ld[1:], vh: vh})
			case strings.HasSuffix(ld, "*"):
				rt.prefixes = append(rt.prefixes, domainEntry{pattern: ld[:len(ld)-1], vh: vh})
			default:
				rt.exact[ld] = vh
			}
		}
		rt.VirtualHosts = append(rt.VirtualHosts, vh)
	}
	// Longest wildcard first (Envoy's order); ties cannot happen as domains
	// are unique.
	longestFirst := func(a, b domainEntry) int { return len(b.pattern) - len(a.pattern) }
	slices.SortStableFunc(rt.suffixes, longestFirst)
	slices.SortStableFunc(rt.prefixes, longestFirst)
	return rt, nil
}

func buildVirtualHost(fb *filterBuilder, lv routeLevels, v *routev3.VirtualHost) (*VirtualHost, error) {
	vh := &VirtualHost{Name: v.GetName()}
	if vh.Name == "" {
		return nil, ferr("name", "must not be empty")
	}
	if len(v.GetDomains()) == 0 {
		return nil, ferr("domains", "must not be empty")
	}
	for j, d := range v.GetDomains() {
		if err := checkDomain(d); err != nil {
			return nil, verr(idx("domains", j), d, "%s", err)
		}
		vh.Domains = append(vh.Domains, d)
	}
	switch v.GetRequireTls() {
	case routev3.VirtualHost_NONE:
	case routev3.VirtualHost_ALL:
		vh.RequireTLS = true
	default:
		return nil, verr("require_tls", v.GetRequireTls().String(), "must be NONE or ALL")
	}
	var err error
	if lv.vhReq, lv.vhResp, err = levelHeaders(v); err != nil {
		return nil, err
	}
	if lv.vhOver, err = fb.overrides(v.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	if lv.vhRateLimits, err = buildRateLimits("rate_limits", v.GetRateLimits()); err != nil {
		return nil, err
	}
	if v.GetRetryPolicy() != nil || v.GetRetryPolicyTypedConfig() != nil || v.GetHedgePolicy() != nil {
		return nil, ferr("retry_policy", "not supported on a virtual host; set it on the route")
	}
	//nolint:staticcheck // cors is deprecated in favour of typed_per_filter_config.
	if v.GetCors() != nil {
		return nil, ferr("cors", "not supported; use typed_per_filter_config[\"envoy.filters.http.cors\"]")
	}
	if len(v.GetRequestMirrorPolicies()) > 0 {
		return nil, ferr("request_mirror_policies", "not supported on a virtual host; set it on the route")
	}
	for k, r := range v.GetRoutes() {
		rr, err := buildRoute(fb, r, lv)
		if err != nil {
			return nil, under(idx("routes", k), err)
		}
		// Envoy names a route's stats by its virtual host's name
		// (vhost.<name>.route.<stat_prefix>.), so the handle is made here.
		if rr.StatPrefix != "" && fb.deps.RouteStats != nil {
			rr.Stats = fb.deps.RouteStats(vh.Name, rr.StatPrefix)
		}
		vh.Routes = append(vh.Routes, rr)
	}
	return vh, nil
}

// checkDomain accepts "*", "host", "host:port", "*suffix" and "prefix*".
func checkDomain(d string) error {
	if d == "" {
		return errors.New("must not be empty")
	}
	if d == "*" {
		return nil
	}
	n := strings.Count(d, "*")
	switch {
	case n == 0:
		return nil
	case n == 1 && (strings.HasPrefix(d, "*") || strings.HasSuffix(d, "*")):
		return nil
	}
	return errors.New(`must be "*", a host, or have one wildcard at its start or end`)
}

// routeLevels is what a route inherits from its virtual host and route
// configuration.
type routeLevels struct {
	rcOver, vhOver   map[string]filter.Config
	rcReq, rcResp    *HeaderMutation
	vhReq, vhResp    *HeaderMutation
	vhRateLimits     []filter.RateLimit
	mostSpecificWins bool
	maxBody          uint32 // max_direct_response_body_size_bytes
}

// headerLevel is a message with the four header mutation fields.
type headerLevel interface {
	GetRequestHeadersToAdd() []*corev3.HeaderValueOption
	GetRequestHeadersToRemove() []string
	GetResponseHeadersToAdd() []*corev3.HeaderValueOption
	GetResponseHeadersToRemove() []string
}

func levelHeaders(m headerLevel) (req, resp *HeaderMutation, err error) {
	if req, err = buildHeaderMutation("request_headers_to_add", m.GetRequestHeadersToAdd(),
		"request_headers_to_remove", m.GetRequestHeadersToRemove()); err != nil {
		return nil, nil, err
	}
	if resp, err = buildHeaderMutation("response_headers_to_add", m.GetResponseHeadersToAdd(),
		"response_headers_to_remove", m.GetResponseHeadersToRemove()); err != nil {
		return nil, nil, err
	}
	return req, resp, nil
}

// mutations orders the route, virtual host and route configuration levels
// as Envoy evaluates them: most specific first, so that the least
// specific wins, unless most_specific_header_mutations_wins.
func mutations(mostSpecificWins bool, route, vh, rc *HeaderMutation) HeaderMutations {
	order := []*HeaderMutation{route, vh, rc}
	if mostSpecificWins {
		order = []*HeaderMutation{rc, vh, route}
	}
	m := HeaderMutations{WeightedLast: mostSpecificWins}
	for _, l := range order {
		if !l.Empty() {
			m.Levels = append(m.Levels, l)
		}
	}
	return m
}

func buildRoute(fb *filterBuilder, r *routev3.Route, lv routeLevels) (*Route, error) {
	rr := &Route{Name: r.GetName(), StatPrefix: r.GetStatPrefix()}
	if d := r.GetDecorator(); d != nil {
		if d.GetOperation() == "" {
			return nil, ferr("decorator.operation", "must not be empty")
		}
		rr.Operation = d.GetOperation()
		rr.PropagateOperation = d.GetPropagate() == nil || d.GetPropagate().GetValue()
	}
	m, err := buildMatch(r.GetMatch())
	if err != nil {
		return nil, under("match", err)
	}
	rr.Match = m
	rReq, rResp, err := levelHeaders(r)
	if err != nil {
		return nil, err
	}
	rr.RequestHeaders = mutations(lv.mostSpecificWins, rReq, lv.vhReq, lv.rcReq)
	rr.ResponseHeaders = mutations(lv.mostSpecificWins, rResp, lv.vhResp, lv.rcResp)
	rOver, err := fb.overrides(r.GetTypedPerFilterConfig())
	if err != nil {
		return nil, err
	}
	rr.FilterOverrides = fb.routeOverrides(lv.rcOver, lv.vhOver, rOver)
	switch act := r.GetAction().(type) {
	case *routev3.Route_Route:
		rr.Action = ActionRoute
		if err := buildRouteAction(rr, act.Route); err != nil {
			return nil, under("route", err)
		}
		if rr.RateLimits, err = routeRateLimits(act.Route, lv.vhRateLimits); err != nil {
			return nil, under("route", err)
		}
	case *routev3.Route_Redirect:
		rr.Action = ActionRedirect
		if rr.Redirect, err = buildRedirect(act.Redirect); err != nil {
			return nil, under("redirect", err)
		}
		if rr.Redirect.PathKind == RedirectPrefix && rr.Match.PathKind == PathRegex {
			return nil, ferr("redirect.prefix_rewrite", "must not be used with a safe_regex match")
		}
	case *routev3.Route_DirectResponse:
		rr.Action = ActionDirectResponse
		if rr.DirectResponse, err = buildDirectResponse(act.DirectResponse, lv.maxBody); err != nil {
			return nil, under("direct_response", err)
		}
	default:
		return nil, ferr("action", "must be route, redirect or direct_response")
	}
	return rr, nil
}

// buildRouteAction fills rr from a RouteAction; error paths are relative
// to the RouteAction.
func buildRouteAction(rr *Route, a *routev3.RouteAction) error {
	var err error
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return ferr("cluster", "must not be empty")
		}
		rr.Clusters = []WeightedCluster{{Name: cs.Cluster, Weight: 1}}
		rr.TotalWeight = 1
	case *routev3.RouteAction_WeightedClusters:
		wcs := cs.WeightedClusters.GetClusters()
		if len(wcs) == 0 {
			return ferr("weighted_clusters.clusters", "must not be empty")
		}
		var total uint64
		for i, wc := range wcs {
			p := idx("weighted_clusters.clusters", i)
			if wc.GetName() == "" {
				return ferr(p+".name", "must not be empty (cluster_header is not supported)")
			}
			if len(wc.GetTypedPerFilterConfig()) > 0 || wc.GetHostRewriteLiteral() != "" {
				return ferr(p, "only name, weight and the header mutations are supported")
			}
			req, resp, err := levelHeaders(wc)
			if err != nil {
				return under(p, err)
			}
			w := wc.GetWeight().GetValue()
			total += uint64(w)
			rr.Clusters = append(rr.Clusters, WeightedCluster{Name: wc.GetName(), Weight: w, RequestHeaders: req, ResponseHeaders: resp})
		}
		if total == 0 || total > 1<<32-1 {
			return verr("weighted_clusters", strconv.FormatUint(total, 10), "sum of weights must be 1 to 4294967295")
		}
		rr.TotalWeight = uint32(total)
		rr.picks = new(atomic.Uint64)
	default:
		return ferr("cluster_specifier", "must be cluster or weighted_clusters")
	}
	if rr.Rewrite, err = buildRewrite(a, rr.Match.PathKind); err != nil {
		return err
	}
	if rr.Mirrors, err = buildMirrors(a.GetRequestMirrorPolicies()); err != nil {
		return err
	}
	//nolint:staticcheck // cors is deprecated in favour of typed_per_filter_config.
	if a.GetCors() != nil {
		return ferr("cors", "not supported; use typed_per_filter_config[\"envoy.filters.http.cors\"]")
	}
	if rr.Upgrades, err = buildRouteUpgrades(a.GetUpgradeConfigs()); err != nil {
		return err
	}
	if a.GetRetryPolicyTypedConfig() != nil || a.GetHedgePolicy() != nil {
		return ferr("", "retry_policy_typed_config and hedge_policy are not supported")
	}
	if rr.Timeout, err = duration(a.GetTimeout(), "timeout", DefaultRouteTimeout); err != nil {
		return err
	}
	if rr.GRPCTimeout, err = buildGRPCTimeout(a); err != nil {
		return err
	}
	if rr.HashPolicies, err = buildHashPolicies("hash_policy", a.GetHashPolicy()); err != nil {
		return err
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		pol, err := buildRetry(rp)
		if err != nil {
			return under("retry_policy", err)
		}
		rr.Retry = pol
	}
	return nil
}

// buildGRPCTimeout reads max_grpc_timeout and grpc_timeout_offset (what
// Istio sets), or their replacements in max_stream_duration; nil when
// neither max is set. A max_stream_duration.max_stream_duration other than
// 0 is refused: Loom bounds a stream by the route's timeout alone.
func buildGRPCTimeout(a *routev3.RouteAction) (*GRPCTimeout, error) {
	//nolint:staticcheck // max_grpc_timeout is deprecated, yet what Istio sends.
	maxT, offset := a.GetMaxGrpcTimeout(), a.GetGrpcTimeoutOffset()
	maxPath, offPath := "max_grpc_timeout", "grpc_timeout_offset"
	if msd := a.GetMaxStreamDuration(); msd != nil {
		if d := msd.GetMaxStreamDuration(); d != nil && d.AsDuration() != 0 {
			return nil, verr("max_stream_duration.max_stream_duration", d.AsDuration().String(), "not supported; use timeout")
		}
		if maxT != nil && msd.GetGrpcTimeoutHeaderMax() != nil {
			return nil, ferr("max_stream_duration.grpc_timeout_header_max", "must not be set with max_grpc_timeout")
		}
		if msd.GetGrpcTimeoutHeaderMax() != nil {
			maxT, offset = msd.GetGrpcTimeoutHeaderMax(), msd.GetGrpcTimeoutHeaderOffset()
			maxPath, offPath = "max_stream_duration.grpc_timeout_header_max", "max_stream_duration.grpc_timeout_header_offset"
		}
	}
	if maxT == nil {
		return nil, nil
	}
	g := &GRPCTimeout{}
	var err error
	if g.Max, err = duration(maxT, maxPath, 0); err != nil {
		return nil, err
	}
	if g.Offset, err = duration(offset, offPath, 0); err != nil {
		return nil, err
	}
	return g, nil
}

// buildRewrite reads prefix_rewrite, regex_rewrite and host_rewrite_literal.
func buildRewrite(a *routev3.RouteAction, kind PathMatchKind) (*Rewrite, error) {
	rw := &Rewrite{Prefix: a.GetPrefixRewrite()}
	if a.GetPathRewritePolicy() != nil {
		return nil, ferr("path_rewrite_policy", "not supported")
	}
	if rs := a.GetRegexRewrite(); rs != nil {
		if rw.Prefix != "" {
			return nil, ferr("regex_rewrite", "must not be set with prefix_rewrite")
		}
		re, sub, err := buildRegexRewrite("regex_rewrite", rs)
		if err != nil {
			return nil, err
		}
		rw.Regex, rw.Substitution = re, sub
	}
	switch hs := a.GetHostRewriteSpecifier().(type) {
	case nil:
	case *routev3.RouteAction_HostRewriteLiteral:
		if strings.ContainsAny(hs.HostRewriteLiteral, "/?#@ \r\n") {
			return nil, verr("host_rewrite_literal", hs.HostRewriteLiteral, "must be a host")
		}
		rw.Host = hs.HostRewriteLiteral
	default:
		return nil, ferr("host_rewrite_specifier", "must be host_rewrite_literal (auto_host_rewrite, host_rewrite_header and host_rewrite_path_regex are not supported)")
	}
	if rw.Prefix == "" && rw.Regex == nil && rw.Host == "" {
		return nil, nil
	}
	return rw, nil
}

func buildRetry(rp *routev3.RetryPolicy) (*RetryPolicy, error) {
	pol := &RetryPolicy{NumRetries: 1}
	for c := range strings.SplitSeq(rp.GetRetryOn(), ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if !supportedRetryOn[c] {
			return nil, verr("retry_on", rp.GetRetryOn(), "condition %q is not supported", c)
		}
		pol.RetryOn = append(pol.RetryOn, c)
	}
	if rp.GetNumRetries() != nil {
		pol.NumRetries = rp.GetNumRetries().GetValue()
	}
	var err error
	if pol.PerTryTimeout, err = duration(rp.GetPerTryTimeout(), "per_try_timeout", 0); err != nil {
		return nil, err
	}
	for i, c := range rp.GetRetriableStatusCodes() {
		if c < 100 || c > 599 {
			return nil, verr(idx("retriable_status_codes", i), strconv.FormatUint(uint64(c), 10), "must be an HTTP status code")
		}
		pol.RetriableStatusCodes = append(pol.RetriableStatusCodes, c)
	}
	if err := buildRetryExtensions(rp, pol); err != nil {
		return nil, err
	}
	return pol, nil
}

func buildMatch(m *routev3.RouteMatch) (RouteMatch, error) {
	var rm RouteMatch
	if m == nil {
		return rm, ferr("", "must be set")
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.PathKind, rm.Prefix = PathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		rm.PathKind, rm.Path = PathExact, ps.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex("safe_regex", ps.SafeRegex)
		if err != nil {
			return rm, err
		}
		rm.PathKind, rm.Regex = PathRegex, re
	default:
		return rm, ferr("path_specifier", "must be prefix, path or safe_regex")
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		rm.CaseInsensitive = true
	}
	if m.GetGrpc() != nil || m.GetRuntimeFraction() != nil || m.GetTlsContext() != nil ||
		len(m.GetCookies()) > 0 || len(m.GetFilterState()) > 0 {
		return rm, ferr("", "only path, case_sensitive, headers, query_parameters and dynamic_metadata are supported")
	}
	for i, dm := range m.GetDynamicMetadata() {
		mm, err := matcher.NewMetadata(dm)
		if err != nil {
			return rm, ferr(idx("dynamic_metadata", i), "%v", err)
		}
		rm.Metadata = append(rm.Metadata, mm)
	}
	for i, h := range m.GetHeaders() {
		hm, err := buildHeaderMatcher(h)
		if err != nil {
			return rm, under(idx("headers", i), err)
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm, err := buildQueryMatcher(q)
		if err != nil {
			return rm, under(idx("query_parameters", i), err)
		}
		rm.Query = append(rm.Query, qm)
	}
	return rm, nil
}

// buildQueryMatcher compiles a QueryParameterMatcher. present_match: false
// matches an absent parameter: Envoy's behaviour with
// envoy.reloadable_features.enable_new_query_param_present_match_behavior.
func buildQueryMatcher(q *routev3.QueryParameterMatcher) (QueryMatcher, error) {
	qm := QueryMatcher{Name: q.GetName()}
	if qm.Name == "" {
		return qm, ferr("name", "must not be empty")
	}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case nil:
		// Envoy: no specifier means "the parameter is present".
		qm.Kind, qm.Present = MatchPresent, true
	case *routev3.QueryParameterMatcher_PresentMatch:
		qm.Kind, qm.Present = MatchPresent, s.PresentMatch
	case *routev3.QueryParameterMatcher_StringMatch:
		var err error
		if qm.Kind, qm.Value, qm.Regex, err = buildStringMatch("string_match", s.StringMatch); err != nil {
			return qm, err
		}
		qm.IgnoreCase = s.StringMatch.GetIgnoreCase() && qm.Kind != MatchRegex
	default:
		return qm, ferr("query_parameter_match_specifier", "must be string_match or present_match")
	}
	return qm, nil
}

// buildStringMatch compiles the pattern of an envoy.type.matcher.v3.StringMatcher
// at path; the caller handles ignore_case.
func buildStringMatch(path string, sm *matcherv3.StringMatcher) (StringMatchKind, string, *regexp.Regexp, error) {
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return MatchExact, p.Exact, nil, nil
	case *matcherv3.StringMatcher_Prefix:
		return MatchPrefix, p.Prefix, nil, nil
	case *matcherv3.StringMatcher_Suffix:
		return MatchSuffix, p.Suffix, nil, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(path+".safe_regex", p.SafeRegex)
		if err != nil {
			return 0, "", nil, err
		}
		return MatchRegex, "", re, nil
	}
	return 0, "", nil, ferr(path, "must be exact, prefix, suffix or safe_regex")
}

func buildHeaderMatcher(h *routev3.HeaderMatcher) (HeaderMatcher, error) {
	hm := HeaderMatcher{Invert: h.GetInvertMatch()}
	name := strings.ToLower(h.GetName())
	switch {
	case name == "":
		return hm, ferr("name", "must not be empty")
	case name == "host":
		hm.Name = ":authority"
	case strings.HasPrefix(name, ":"):
		switch name {
		case ":authority", ":method", ":path", ":scheme":
			hm.Name = name
		default:
			return hm, verr("name", h.GetName(), "must be a header or :authority, :method, :path or :scheme")
		}
	default:
		hm.Name = http.CanonicalHeaderKey(name)
	}
	hm.TreatMissingAsEmpty = h.GetTreatMissingHeaderAsEmpty()
	//nolint:staticcheck // the deprecated matchers are still sent by some control planes.
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		// Envoy: no specifier means "the header is present".
		hm.Kind, hm.Present = MatchPresent, true
	case *routev3.HeaderMatcher_PresentMatch:
		hm.Kind, hm.Present = MatchPresent, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		hm.Kind, hm.Value = MatchExact, s.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.Kind, hm.Value = MatchPrefix, s.PrefixMatch
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.Kind, hm.Value = MatchSuffix, s.SuffixMatch
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileRegex("safe_regex_match", s.SafeRegexMatch)
		if err != nil {
			return hm, err
		}
		hm.Kind, hm.Regex = MatchRegex, re
	case *routev3.HeaderMatcher_StringMatch:
		sm := s.StringMatch
		if sm.GetIgnoreCase() {
			return hm, ferr("string_match.ignore_case", "not supported")
		}
		var err error
		if hm.Kind, hm.Value, hm.Regex, err = buildStringMatch("string_match", sm); err != nil {
			return hm, err
		}
	default:
		return hm, ferr("header_match_specifier", "must be string_match, present_match, exact_match, prefix_match, suffix_match or safe_regex_match")
	}
	return hm, nil
}

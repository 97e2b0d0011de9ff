package translate

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// Resources is the full xDS config of one proxy, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Secrets are the SDS secrets the listeners and clusters name over
	// ADS (credentialSecrets): they hold private keys, so they go to this
	// proxy only and are never logged.
	Secrets []*tlsv3.Secret
}

// Generate builds the xDS resources of proxy p from pc. It is pure and safe
// for concurrent use: the same pc and p always give equal resources, each
// list sorted by name.
//
// A sidecar whose INTERCEPTION_MODE is REDIRECT gets Istio's transparent
// layout (redirectSidecarResources). Any other sidecar is in explicit
// mode: it gets the listeners virtualOutbound (p.IP:15001, an explicit
// HTTP proxy routed by the http_proxy table) and virtualInbound
// (p.IP:15006, routed by inbound|http), a TCP proxy listener on p.IP:PORT
// per TCP service port it sees (sidecarTCPListeners), an outbound EDS cluster per service
// port and DestinationRule subset, a static inbound cluster per port of the
// services selecting its workload (per listener port, and a bound inbound
// listener, when its Sidecar has ingress listeners: sidecarListeners),
// BlackHoleCluster and PassthroughCluster. A router gets a
// listener and a route table per HTTP server port of the Gateways selecting
// it, and the same outbound clusters.
//
// It fails when p is nil, its IP is missing or not an IP address, it is of
// an unknown type, or a typed config cannot be packed into an Any.
func Generate(pc *model.PushContext, p *model.Proxy) (*Resources, error) {
	return GenerateWith(pc, p, Options{})
}

// Options are translation's inputs besides the push context and the
// proxy: what loomd holds outside the config store. The zero value is
// Istio's defaults with nothing fetched.
type Options struct {
	// Mesh is the mesh config (nil: Istio's defaults).
	Mesh *meshv1alpha1.MeshConfig
	// Jwks are the JWKS loomd fetched for RequestAuthentication rules
	// without inline jwks (nil: none yet; such rules get a placeholder key
	// set that fails every token, as Istio's FakeJwks).
	Jwks *model.JwksSet
	// RateLimitService is the "ip:port" proxies reach loomd's rate limit
	// service at; "" when loomd runs none (RateLimitPolicy global limits
	// are then left out; loomd's validation refuses them).
	RateLimitService string
	// Tracing, when non-nil, gives the proxy's client and server tracing
	// specs; nil: the Telemetry API's resolution for the proxy
	// (EffectiveTelemetry), which is mesh config alone (MeshTracingSpecs)
	// when no Telemetry configures tracing.
	Tracing *TracingSpecs
	// Warn, if non-nil, is told what translation left out for the proxy
	// without failing (a tracing provider whose service is not in the
	// registry, as Istio logs and skips it).
	Warn func(msg string)
	// WithoutCA says that no proxy has a workload certificate (loomd runs
	// no CA): clients then never originate auto mTLS, which would fail
	// every handshake. The zero value is Istio's: a CA, auto mTLS on
	// (unless MeshConfig.enableAutoMtls is false).
	WithoutCA bool
}

// GenerateMesh is Generate under mesh config mesh (nil: Istio's defaults).
// Of the mesh config, outboundTrafficPolicy decides how a sidecar's
// http_proxy table ends: the "allow_any" virtual host to
// PassthroughCluster (ALLOW_ANY, the default) or "block_all" answering 502
// (REGISTRY_ONLY); every proxy gets PassthroughCluster. trustDomain,
// trustDomainAliases and extensionProviders shape the authorization
// filters of the AuthorizationPolicies that apply to the proxy (authz.go),
// on a sidecar's inbound listener and on a gateway's listeners.
func GenerateMesh(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig) (*Resources, error) {
	return GenerateWith(pc, p, Options{Mesh: mesh})
}

// GenerateWith is Generate under o. A RequestAuthentication that applies
// to the proxy puts Envoy's jwt_authn filter (jwtFilter) first on its
// inbound HTTP connection manager (sidecar) or on every gateway listener
// (router); outbound listeners get none, as in Istio. After the
// EnvoyFilters, the RateLimitPolicies selecting p are applied
// (applyRateLimitPolicies).
func GenerateWith(pc *model.PushContext, p *model.Proxy, o Options) (*Resources, error) {
	mesh := o.Mesh
	if pc == nil || p == nil {
		return nil, errors.New("translate: nil push context or proxy")
	}
	if p.IP == "" {
		return nil, fmt.Errorf("translate proxy %q: no IP", p.ID)
	}
	if _, err := netip.ParseAddr(p.IP); err != nil {
		return nil, fmt.Errorf("translate proxy %q: IP %q: %w", p.ID, p.IP, err)
	}
	// What the proxy may see: exportTo, Istio's order for DestinationRules
	// (proxy namespace, service namespace, root), and the egress hosts of
	// the Sidecar that applies to it, whose outboundTrafficPolicy
	// overrides the mesh's.
	pc = pc.ForProxy(p)
	mesh = sidecarMeshConfig(pc.Sidecar(), mesh)
	// The Telemetry API's settings for this proxy: tracing below, access
	// logs and metrics on each listener.
	tel := EffectiveTelemetry(pc, p, mesh)
	authz, err := newAuthzBuilder(pc, p, mesh).httpFilters()
	if err != nil {
		return nil, fmt.Errorf("translate proxy %q: authorization: %w", p.ID, err)
	}
	// Authentication before authorization, as Istio orders them.
	jwt, err := jwtFilter(pc, p, o.Jwks)
	if err != nil {
		return nil, fmt.Errorf("translate proxy %q: request authentication: %w", p.ID, err)
	}
	if jwt != nil {
		authz = append([]*hcmv3.HttpFilter{jwt}, authz...)
	}
	var r *Resources
	switch p.Type {
	case model.SidecarProxy:
		if isRedirect(p) {
			tcpAuthz, err := newAuthzBuilder(pc, p, mesh).tcpFilters()
			if err != nil {
				return nil, fmt.Errorf("translate proxy %q: authorization: %w", p.ID, err)
			}
			if r, err = redirectSidecarResources(pc, p, mesh, o, inboundAuthz{http: authz, tcp: tcpAuthz}); err != nil {
				return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
			}
			break
		}
		// TCP authorization filters only where a Sidecar ingress
		// listener gives TCP an inbound hop (explicitIngressListeners).
		var tcpAuthz []*listenerv3.Filter
		if hasIngress(pc) {
			if tcpAuthz, err = newAuthzBuilder(pc, p, mesh).tcpFilters(); err != nil {
				return nil, fmt.Errorf("translate proxy %q: authorization: %w", p.ID, err)
			}
		}
		listeners, err := sidecarListeners(pc, p, mesh, inboundAuthz{http: authz, tcp: tcpAuthz})
		if err == nil {
			listeners, err = appendTCPListeners(listeners, pc, p)
		}
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		outbound, err := outboundClusters(pc, newClusterTLSEnv(pc, mesh, o), true)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		inbound, err := inboundClusters(pc, p)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		bh, err := blackHoleCluster()
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		proxyRoute, err := httpProxyRoute(pc, p)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		addCatchAll(proxyRoute, mesh, egressProxyCluster(pc.Sidecar()))
		egressListeners, egressRoutes, err := explicitEgressHTTPListeners(pc, p, mesh, listeners)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		pipeListeners, pipeRoutes, err := pipeEgressListeners(pc, p, mesh)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		egressListeners, egressRoutes = append(egressListeners, pipeListeners...), append(egressRoutes, pipeRoutes...)
		r = &Resources{
			Listeners: append(listeners, egressListeners...),
			Routes:    append([]*routev3.RouteConfiguration{proxyRoute, inboundRoute(pc, p)}, egressRoutes...),
			Clusters:  append(append(outbound, inbound...), bh, passthroughCluster()),
			Endpoints: outboundEndpoints(pc, p),
		}
	case model.RouterProxy:
		servers := gatewayServers(pc, p)
		listeners, err := gatewayListeners(pc, p, servers, authz)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		outbound, err := outboundClusters(pc, newClusterTLSEnv(pc, mesh, o), false)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		dnat, err := sniDNATClusters(pc, servers)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		outbound = append(outbound, dnat...)
		bh, err := blackHoleCluster()
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		routes, err := gatewayRoutes(pc, p, servers)
		if err != nil {
			return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
		}
		r = &Resources{
			Listeners: listeners,
			Routes:    routes,
			Clusters:  append(outbound, bh, passthroughCluster()),
			Endpoints: outboundEndpoints(pc, p),
		}
	default:
		return nil, fmt.Errorf("translate proxy %q: type %q: must be %q or %q", p.ID, p.Type, model.SidecarProxy, model.RouterProxy)
	}
	addMetadataExchange(r, p)
	if err := addStatsFilters(r, p, tel); err != nil {
		return nil, fmt.Errorf("translate proxy %q: stats: %w", p.ID, err)
	}
	specs := MeshTracingSpecs(mesh)
	if o.Tracing != nil {
		specs = *o.Tracing
	} else if tel.Tracing != nil {
		specs = *tel.Tracing
	}
	warnings, err := applyTracing(r, pc, p, mesh, specs)
	if err != nil {
		return nil, fmt.Errorf("translate proxy %q: tracing: %w", p.ID, err)
	}
	if o.Warn != nil {
		for _, w := range warnings {
			o.Warn(w)
		}
	}
	warn := o.Warn
	if warn == nil {
		warn = func(string) {}
	}
	if err := applyAccessLogs(r, pc, p, tel, mesh, warn); err != nil {
		return nil, fmt.Errorf("translate proxy %q: access log: %w", p.ID, err)
	}
	if err := applyEnvoyFilters(r, p.Type, pc.EnvoyFiltersForProxy(p)); err != nil {
		return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
	}
	if err := applyRateLimitPolicies(r, p.Type, pc.RateLimitPoliciesForProxy(p), o.RateLimitService); err != nil {
		return nil, fmt.Errorf("translate proxy %q: %w", p.ID, err)
	}
	r.Secrets = credentialSecrets(pc, p, r)
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(r.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(r.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return cmp.Compare(a.GetClusterName(), b.GetClusterName())
	})
	return r, nil
}

// adsConfigSource points at the ADS stream the resource came on.
func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// socketAddress is a TCP address.
func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// pipeAddress is the Envoy Address of unix domain socket path (an
// absolute path, or "@NAME" in Linux's abstract namespace), as Istio's
// BuildAddress makes it of a "unix://PATH" bind or endpoint: a pipe whose
// path is PATH, without the scheme.
func pipeAddress(path string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
}

// packAny packs m deterministically into an Any.
func packAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("pack %T: %w", m, err)
	}
	return a, nil
}

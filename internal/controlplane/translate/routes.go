package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Istio's default retry policy (pilot/pkg/networking/core/route/retry):
// two retries on connection-level failures and 503.
const (
	defaultRetryOn       = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
	defaultNumRetries    = 2
	retriableStatusCodes = "retriable-status-codes"
)

// defaultRouteName is the name Istio gives a route it makes itself.
const defaultRouteName = "default"

// httpProxyRoute is the explicit-mode sidecar's outbound table
// "http_proxy": a virtual host per (service, HTTP port) (outboundHTTPRoute).
func httpProxyRoute(pc *model.PushContext, p *model.Proxy) (*routev3.RouteConfiguration, error) {
	return outboundHTTPRoute(pc, p, xdsapi.HTTPProxyRoute, 0)
}

// outboundHTTPRoute is a sidecar's outbound table called name: a virtual
// host per (service, HTTP port), named "host:port", for every HTTP port
// of the services p sees or, when onlyPort is not 0, for that port only
// (Istio's per-port table "9080" of transparent mode). Its domains are the
// service's names (serviceDomains) and its virtual IPs, each with and
// without the port, minus those an earlier virtual host took. It is routed
// by the VirtualService bound to the mesh for the host, or to the service
// port's cluster. With Sidecar egress listeners that have a port, each
// port holds only the services and VirtualServices its listener imports
// (PushContext.ForEgressPort). It fails only when a typed config cannot be
// packed.
func outboundHTTPRoute(pc *model.PushContext, p *model.Proxy, name string, onlyPort uint32) (*routev3.RouteConfiguration, error) {
	rc := &routev3.RouteConfiguration{Name: name, MaxDirectResponseBodySizeBytes: maxDirectResponseBody}
	used := map[string]bool{}
	for _, svc := range pc.Services() {
		for _, port := range svc.Ports {
			if !port.Protocol.IsHTTP() || onlyPort != 0 && port.Number != onlyPort || !pc.EgressServes(svc, port.Number) {
				continue
			}
			domains := uniqueDomains(used, append(serviceDomains(svc.Hostname, port.Number, p.Namespace), vipDomains(svc, port.Number)...))
			if len(domains) == 0 {
				continue
			}
			// The port's egress listener imports the VirtualServices
			// routing it, as Istio's per-listener route configuration.
			pv := pc.ForEgressPort(port.Number)
			var routes []*routev3.Route
			if vs := pv.VirtualServiceForHost(model.MeshGateway, svc.Hostname); vs != nil {
				var err error
				if routes, err = virtualServiceRoutes(pv, p, vs, []string{model.MeshGateway}, port.Number); err != nil {
					return nil, err
				}
			}
			if len(routes) == 0 {
				// As Istio's default outbound route: the service's
				// consistentHash, and then no previous_hosts predicate.
				hp := defaultRouteHashPolicies(pc, svc.Hostname, port.Number)
				rp := defaultRetryPolicy()
				if len(hp) > 0 {
					rp.RetryHostPredicate = nil
				}
				r := defaultRoute(xdsapi.ClusterName(xdsapi.Outbound, port.Number, "", svc.Hostname), rp)
				r.GetRoute().HashPolicy = hp
				r.Decorator = traceOperation(svc.Hostname, port.Number)
				routes = []*routev3.Route{r}
			}
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
				Name:    hostPort(svc.Hostname, port.Number),
				Domains: domains,
				Routes:  routes,
			})
		}
	}
	sortVirtualHosts(rc)
	return rc, nil
}

// vipDomains are the virtual IPs of svc (its ServiceEntry addresses that
// are IP addresses) as an authority would carry them, without and with
// port, as Istio lists a service's cluster IP in its virtual host.
func vipDomains(svc *registry.Service, port uint32) []string {
	var out []string
	for _, a := range serviceVIPs(svc) {
		out = append(out, a, hostPort(a, port))
	}
	return out
}

// inboundRoute is the sidecar's inbound table: a virtual host per HTTP
// service port of the services selecting the workload, whose domains are
// those services' names, routed to "inbound|PORT||"; and a "*" virtual host
// to the lowest such port for any other authority.
func inboundRoute(pc *model.PushContext, p *model.Proxy) *routev3.RouteConfiguration {
	return inboundRouteFor(pc, p, nil)
}

// inboundRouteFor is inboundRoute with only the instances whose target
// port keep accepts (nil: all); the catch-all goes to the lowest service
// port kept, and there is none when nothing is kept.
//
// With Sidecar ingress listeners, the table has a virtual host per HTTP
// listener port instead (ingressInboundVirtualHosts).
func inboundRouteFor(pc *model.PushContext, p *model.Proxy, keep func(targetPort uint32) bool) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: xdsapi.InboundRoute, MaxDirectResponseBodySizeBytes: maxDirectResponseBody}
	byPort := map[uint32]*routev3.VirtualHost{}
	var ports []uint32
	used := map[string]bool{}
	if hasIngress(pc) {
		byPort, ports = ingressInboundVirtualHosts(pc, p, keep)
	}
	for _, si := range pc.InstancesForProxy(p) {
		if hasIngress(pc) {
			break
		}
		port := si.Instance.ServicePort
		if !port.Protocol.IsHTTP() || keep != nil && !keep(si.Instance.TargetPort) {
			continue
		}
		vh := byPort[port.Number]
		if vh == nil {
			r := defaultRoute(xdsapi.ClusterName(xdsapi.Inbound, port.Number, "", ""), nil)
			r.Decorator = traceOperation(si.Service.Hostname, port.Number)
			vh = &routev3.VirtualHost{
				Name:   inboundVirtualHostName(strconv.FormatUint(uint64(port.Number), 10)),
				Routes: []*routev3.Route{r},
			}
			byPort[port.Number] = vh
			ports = append(ports, port.Number)
		}
		vh.Domains = append(vh.Domains, uniqueDomains(used, serviceDomains(si.Service.Hostname, port.Number, p.Namespace))...)
	}
	slices.Sort(ports)
	for _, n := range ports {
		rc.VirtualHosts = append(rc.VirtualHosts, byPort[n])
	}
	if len(ports) > 0 {
		// The catch-all is the lowest port's route under another name.
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    inboundVirtualHostName("*"),
			Domains: []string{"*"},
			Routes:  []*routev3.Route{proto.Clone(byPort[ports[0]].Routes[0]).(*routev3.Route)},
		})
	}
	sortVirtualHosts(rc)
	return rc
}

// ingressInboundVirtualHosts are the virtual hosts of the explicit-mode
// inbound table under Sidecar ingress listeners, by port, and their ports
// in order: one per HTTP listener port (sidecarIngressChainConfigs) whose
// port keep accepts (nil: all), routed to "inbound|PORT||". Its domains
// are the names of the services whose target port it is, on their service
// ports (peers address them at IP:15006 with those names), and
// PROXY_IP:PORT, the workload's own address on the port.
func ingressInboundVirtualHosts(pc *model.PushContext, p *model.Proxy, keep func(targetPort uint32) bool) (map[uint32]*routev3.VirtualHost, []uint32) {
	byPort := map[uint32]*routev3.VirtualHost{}
	var ports []uint32
	used := map[string]bool{}
	instances := pc.InstancesForProxy(p)
	for _, cc := range sidecarIngressChainConfigs(pc, p, true) {
		if inboundProtocol(cc.protocol) == protocolTCP || keep != nil && !keep(cc.targetPort) {
			continue
		}
		r := defaultRoute(cc.clusterName(), nil)
		r.Decorator = traceOperation(cc.telemetryHost, cc.servicePort)
		vh := &routev3.VirtualHost{
			Name:   inboundVirtualHostName(strconv.FormatUint(uint64(cc.targetPort), 10)),
			Routes: []*routev3.Route{r},
		}
		for _, si := range instances {
			if si.Instance.TargetPort == cc.targetPort && si.Service != nil {
				vh.Domains = append(vh.Domains, uniqueDomains(used, serviceDomains(si.Service.Hostname, si.Instance.ServicePort.Number, p.Namespace))...)
			}
		}
		vh.Domains = append(vh.Domains, uniqueDomains(used, []string{hostPort(p.IP, cc.targetPort)})...)
		byPort[cc.targetPort] = vh
		ports = append(ports, cc.targetPort)
	}
	return byPort, ports
}

func inboundVirtualHostName(port string) string { return "inbound|http|" + port }

// splitServerHost splits a Gateway server host "ns/host" into its
// namespace filter and host; a host without one has filter "*".
func splitServerHost(s string) (ns, host string) {
	if ns, host, ok := strings.Cut(s, "/"); ok {
		return ns, host
	}
	return "*", s
}

// serverNamespaceAllows applies a server host's namespace filter: "*" any
// namespace, "." the Gateway's own, else exactly that namespace.
func serverNamespaceAllows(filter, vsNamespace, gatewayNamespace string) bool {
	switch filter {
	case "*":
		return true
	case ".":
		return vsNamespace == gatewayNamespace
	}
	return filter == vsNamespace
}

// intersectHosts returns the more specific of a VirtualService host and a
// server host when one covers the other.
func intersectHosts(vsHost, serverHost string) (string, bool) {
	switch {
	case model.HostMatches(serverHost, vsHost):
		return vsHost, true
	case model.HostMatches(vsHost, serverHost):
		return serverHost, true
	}
	return "", false
}

// virtualServiceRoutes translates the HTTP routes of vs as seen by proxy p
// through gateways (["mesh"] for a sidecar, else the Gateways binding vs to
// the router's port) on listener port: one envoy Route per match that
// applies (its port, sourceLabels, sourceNamespace and gateways fit), in
// order, each built by httpRoute. The routes are vs.HTTP: a route with a
// delegate is already replaced by the delegate's routes merged with it
// (model.VirtualService.HTTP), so http[i] in an error counts those. HTTP
// routes with neither destinations, redirect nor directResponse are left
// out. Nothing after a catch-all route is emitted, as in Istio.
// It fails only when a typed config cannot be packed.
func virtualServiceRoutes(pc *model.PushContext, p *model.Proxy, vs *model.VirtualService, gateways []string, port uint32) ([]*routev3.Route, error) {
	var out []*routev3.Route
	for i, hr := range vs.HTTP {
		base, err := httpRoute(pc, vs.Namespace, hr, port)
		if err != nil {
			return nil, fmt.Errorf("VirtualService %s/%s http[%d]: %w", vs.Namespace, vs.Name, i, err)
		}
		if base == nil {
			continue
		}
		if len(hr.GetMatch()) == 0 {
			base.Name = hr.GetName()
			base.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
			base.Decorator = routeOperation(base, vs.Name, port)
			return append(out, base), nil
		}
		for _, m := range hr.GetMatch() {
			if !matchApplies(m, p, vs.Namespace, gateways, port) {
				continue
			}
			r := proto.Clone(base).(*routev3.Route)
			r.Name = routeName(hr, m)
			r.Match = routeMatch(m)
			// Istio's translateRoute: each match's own statPrefix names the
			// route-level stats of the Envoy route that match becomes.
			r.StatPrefix = m.GetStatPrefix()
			r.Decorator = routeOperation(r, vs.Name, port)
			out = append(out, r)
			if isCatchAll(r.GetMatch()) {
				return out, nil
			}
		}
	}
	return out, nil
}

// routeOperation is the route's Decorator, the span name of requests it
// routes, as Istio's getRouteOperation: "HOST:PORT" of its one cluster
// (else "VSNAME:LISTENERPORT") followed by the match's path: "PREFIX*",
// the exact path or the regex, and "/*" when it matches any path.
func routeOperation(r *routev3.Route, vsName string, port uint32) *routev3.Decorator {
	path := "/*"
	switch ps := r.GetMatch().GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		path = ps.Prefix + "*"
	case *routev3.RouteMatch_Path:
		path = ps.Path
	case *routev3.RouteMatch_SafeRegex:
		path = ps.SafeRegex.GetRegex()
	}
	if _, p, _, host, ok := xdsapi.ParseClusterName(r.GetRoute().GetCluster()); ok && host != "" {
		return &routev3.Decorator{Operation: hostPort(host, p) + path}
	}
	return &routev3.Decorator{Operation: hostPort(vsName, port) + path}
}

// traceOperation is the Decorator of the routes Istio makes without a
// VirtualService (the default outbound and the inbound route):
// "HOST:PORT/*".
func traceOperation(host string, port uint32) *routev3.Decorator {
	return &routev3.Decorator{Operation: hostPort(host, port) + "/*"}
}

// isCatchAll reports whether m matches every request, as Istio's
// IsCatchAllRoute: prefix "/" or regex ".*", with no header, query
// parameter or dynamic metadata (JWT claim) matcher.
func isCatchAll(m *routev3.RouteMatch) bool {
	if len(m.GetHeaders()) > 0 || len(m.GetQueryParameters()) > 0 || len(m.GetDynamicMetadata()) > 0 {
		return false
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return ps.Prefix == "/"
	case *routev3.RouteMatch_SafeRegex:
		return ps.SafeRegex.GetRegex() == ".*"
	}
	return false
}

// httpRoute is the envoy Route of hr without its name and match, as
// Istio's translateRoute: hr.headers on the route (an authority set there
// becomes the action's host_rewrite_literal); the action is hr.redirect's
// RedirectAction, else hr.directResponse's DirectResponseAction, else
// routeAction's RouteAction; hr.fault and hr.corsPolicy go to
// typed_per_filter_config. It returns nil when hr has none of the three
// actions, and fails only when a typed config cannot be packed.
func httpRoute(pc *model.PushContext, vsNamespace string, hr *networking.HTTPRoute, port uint32) (*routev3.Route, error) {
	r := &routev3.Route{}
	ops := translateHeaders(hr.GetHeaders())
	ops.applyToRoute(r)
	switch {
	case hr.GetRedirect() != nil:
		r.Action = &routev3.Route_Redirect{Redirect: redirectAction(hr.GetRedirect(), port)}
	case hr.GetDirectResponse() != nil:
		r.Action = &routev3.Route_DirectResponse{DirectResponse: directResponseAction(hr.GetDirectResponse())}
	case len(hr.GetRoute()) > 0:
		ra, err := routeAction(pc, vsNamespace, hr, port, r, ops.authority)
		if err != nil {
			return nil, err
		}
		r.Action = &routev3.Route_Route{Route: ra}
	default:
		return nil, nil
	}
	filters, err := routeFilterConfig(hr)
	if err != nil {
		return nil, err
	}
	r.TypedPerFilterConfig = filters
	return r, nil
}

func routeName(hr *networking.HTTPRoute, m *networking.HTTPMatchRequest) string {
	switch {
	case hr.GetName() != "" && m.GetName() != "":
		return hr.GetName() + "." + m.GetName()
	case m.GetName() != "":
		return m.GetName()
	}
	return hr.GetName()
}

// matchApplies reports whether match m can be used on this proxy, through
// one of gateways, on this port. HTTPMatchRequest.port must equal the
// port; gateways, when set, must name one of gateways. sourceLabels must be
// contained in the proxy's labels and sourceNamespace equal its namespace;
// both describe the client workload, so they apply only to sidecars (the
// "mesh" gateway): on a router a match setting either never applies.
func matchApplies(m *networking.HTTPMatchRequest, p *model.Proxy, vsNamespace string, gateways []string, port uint32) bool {
	if m.GetPort() != 0 && m.GetPort() != port {
		return false
	}
	mesh := slices.Contains(gateways, model.MeshGateway)
	if len(m.GetSourceLabels()) > 0 && (!mesh || !registry.LabelsContain(p.Labels, m.GetSourceLabels())) {
		return false
	}
	if ns := m.GetSourceNamespace(); ns != "" && (!mesh || ns != p.Namespace) {
		return false
	}
	if len(m.GetGateways()) > 0 && !slices.ContainsFunc(m.GetGateways(), func(g string) bool {
		return slices.Contains(gateways, model.ResolveGatewayName(g, vsNamespace))
	}) {
		return false
	}
	return true
}

// routeMatch translates an HTTPMatchRequest: uri to the path specifier
// (none means prefix "/"), ignoreUriCase to case_sensitive false, headers,
// withoutHeaders (inverted), method, authority and scheme to header
// matchers, sorted by name, headers and withoutHeaders on JWT claims
// ("@request.auth.claims...") to dynamic_metadata matchers (claimMatcher),
// and queryParams to query parameter matchers, sorted by name.
func routeMatch(m *networking.HTTPMatchRequest) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	switch u := m.GetUri().GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		if u.Prefix != "" {
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
		}
	case *networking.StringMatch_Regex:
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: u.Regex}}
	}
	if m.GetIgnoreUriCase() {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, name := range sortedKeys(m.GetHeaders()) {
		if claims, ok := validation.JWTClaimRoute(name); ok {
			rm.DynamicMetadata = append(rm.DynamicMetadata, claimMatcher(claims, m.GetHeaders()[name], false))
			continue
		}
		rm.Headers = append(rm.Headers, headerMatcher(strings.ToLower(name), m.GetHeaders()[name]))
	}
	for _, name := range sortedKeys(m.GetWithoutHeaders()) {
		if claims, ok := validation.JWTClaimRoute(name); ok {
			rm.DynamicMetadata = append(rm.DynamicMetadata, claimMatcher(claims, m.GetWithoutHeaders()[name], true))
			continue
		}
		hm := headerMatcher(strings.ToLower(name), m.GetWithoutHeaders()[name])
		hm.InvertMatch = true
		// As Istio: a request without the header does not carry the
		// value, so it matches withoutHeaders. Envoy's inverted matcher
		// alone fails on a missing header; treating it as empty makes
		// the value comparison fail and the inversion succeed.
		if hm.GetStringMatch() != nil {
			hm.TreatMissingHeaderAsEmpty = true
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, pseudo := range []struct {
		name string
		sm   *networking.StringMatch
	}{{":authority", m.GetAuthority()}, {":method", m.GetMethod()}, {":scheme", m.GetScheme()}} {
		if pseudo.sm != nil {
			rm.Headers = append(rm.Headers, headerMatcher(pseudo.name, pseudo.sm))
		}
	}
	slices.SortStableFunc(rm.Headers, func(a, b *routev3.HeaderMatcher) int { return cmp.Compare(a.GetName(), b.GetName()) })
	for _, name := range sortedKeys(m.GetQueryParams()) {
		qm := &routev3.QueryParameterMatcher{Name: name}
		if s := stringMatcher(m.GetQueryParams()[name]); s != nil {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: s}
		} else {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm
}

// claimMatcher is Istio's translateMetadataMatch of a headers (or, with
// invert, withoutHeaders) key "@request.auth.claims..." with the claim path
// claims: jwt_authn's dynamic metadata at [payload, claims...] must be a
// string matching sm or a list with an element that does
// (MetadataMatcherForJWTClaims). Validation has made sure sm has a value.
// Only a proxy whose jwt_authn clears the route cache (a gateway's) matches
// such a route on a verified token; elsewhere the metadata is missing when
// routes are matched, so it never matches, and inverted always does.
func claimMatcher(claims []string, sm *networking.StringMatch, invert bool) *matcherv3.MetadataMatcher {
	str := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: stringMatcher(sm)}}
	list := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: str}}}}
	m := metadataMatcher(jwtAuthnFilter, append([]string{jwtPayloadKey}, claims...),
		&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{list, str}}}})
	m.Invert = invert
	return m
}

// headerMatcher matches header name against sm; an empty StringMatch (or
// an empty prefix) only asks for the header to be present, as in Istio.
func headerMatcher(name string, sm *networking.StringMatch) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: name}
	if s := stringMatcher(sm); s != nil {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: s}
	} else {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	}
	return hm
}

// stringMatcher translates an Istio StringMatch: exact, prefix or regex
// (RE2, as safe_regex). It returns nil for an empty StringMatch or an empty
// prefix, which Istio reads as "present".
func stringMatcher(sm *networking.StringMatch) *matcherv3.StringMatcher {
	switch t := sm.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.Exact}}
	case *networking.StringMatch_Prefix:
		if t.Prefix != "" {
			return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: t.Prefix}}
		}
	case *networking.StringMatch_Regex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: t.Regex}}}
	}
	return nil
}

// routeAction translates HTTPRoute.route, timeout, retries, rewrite and
// mirrors as Istio's applyHTTPRouteDestination. rewrite.uriRegexRewrite
// becomes regex_rewrite, else rewrite.uri prefix_rewrite (Envoy swaps the
// matched prefix, or the whole path of an exact or regex match, for it);
// the host is rewritten to rewrite.authority, else to authority (from the
// route's headers), else to the single destination's header authority. With
// one destination its headers are appended to route r's; with several,
// each weighted cluster carries its own. It fails only when a typed config
// cannot be packed.
func routeAction(pc *model.PushContext, vsNamespace string, hr *networking.HTTPRoute, port uint32, r *routev3.Route, authority string) (*routev3.RouteAction, error) {
	ra := &routev3.RouteAction{
		// Istio disables Envoy's 15s default: no timeout unless asked.
		Timeout:               durationpb.New(0),
		HashPolicy:            hashPolicies(pc, vsNamespace, hr),
		RequestMirrorPolicies: mirrorPolicies(pc, vsNamespace, hr, port),
	}
	if t := hr.GetTimeout(); t != nil {
		ra.Timeout = durationpb.New(t.AsDuration())
	}
	// As Istio: a gRPC request's grpc-timeout is its timeout, capped by
	// the route's (0: uncapped). The field is deprecated but what Istio
	// sends; its replacement has regressions in Envoy.
	ra.MaxGrpcTimeout = durationpb.New(ra.Timeout.AsDuration()) //nolint:staticcheck
	if rw := hr.GetRewrite(); rw != nil {
		if rr := rw.GetUriRegexRewrite(); rr != nil {
			ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: rr.GetMatch()},
				Substitution: rr.GetRewrite(),
			}
		} else if uri := rw.GetUri(); uri != "" {
			ra.PrefixRewrite = uri
		}
		if a := rw.GetAuthority(); a != "" {
			authority = a
		}
	}
	if authority != "" {
		ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: authority}
	}
	dests := hr.GetRoute()
	if len(dests) > 1 {
		// Destinations of weight 0 get no traffic; when none has a weight,
		// all share it equally.
		weighted := slices.DeleteFunc(slices.Clone(dests), func(d *networking.HTTPRouteDestination) bool { return d.GetWeight() <= 0 })
		if len(weighted) > 0 {
			dests = weighted
		}
	}
	if len(dests) == 1 {
		d := dests[0]
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: destinationCluster(pc, vsNamespace, d.GetDestination(), port)}
		ops := translateHeaders(d.GetHeaders())
		ops.applyToRoute(r)
		if ops.authority != "" && ra.HostRewriteSpecifier == nil {
			ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: ops.authority}
		}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, d := range dests {
			cw := &routev3.WeightedCluster_ClusterWeight{
				Name:   destinationCluster(pc, vsNamespace, d.GetDestination(), port),
				Weight: wrapperspb.UInt32(uint32(max(d.GetWeight(), 1))),
			}
			translateHeaders(d.GetHeaders()).applyToClusterWeight(cw)
			wc.Clusters = append(wc.Clusters, cw)
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	// Retries keep to the host a consistent hash picked (Istio's
	// DefaultConsistentHashPolicy), which Istio decides on the single
	// destination only.
	var err error
	if ra.RetryPolicy, err = retryPolicy(hr.GetRetries(), len(dests) == 1 && len(ra.HashPolicy) > 0); err != nil {
		return nil, err
	}
	return ra, nil
}

// destinationCluster names the cluster of a route destination, as Istio's
// GetDestinationCluster: the port is destination.port, else the service's
// only port, else the listener port. A destination with no service still
// gets its name (the proxy answers 503 NC).
func destinationCluster(pc *model.PushContext, vsNamespace string, d *networking.Destination, listenerPort uint32) string {
	host := model.ResolveShortName(d.GetHost(), vsNamespace)
	port := listenerPort
	if n := d.GetPort().GetNumber(); n != 0 {
		port = n
	} else if svc := pc.ServiceForHost(host); svc != nil && len(svc.Ports) == 1 {
		port = svc.Ports[0].Number
	}
	return xdsapi.ClusterName(xdsapi.Outbound, port, d.GetSubset(), host)
}

// retryPolicy translates HTTPRoute.retries as Istio's retry.ConvertPolicy:
// unset gives Istio's default, attempts 0 none. Otherwise the default with
// num_retries = attempts; retryOn's numeric entries (HTTP statuses 100-599)
// become retriable status codes, with "retriable-status-codes" added to
// retry_on, and its other conditions (HTTP and gRPC ones) pass through;
// perTryTimeout to per_try_timeout; backoff to retry_back_off's
// base_interval; retryIgnorePreviousHosts false drops, and true keeps, the
// previous_hosts predicate; retryRemoteLocalities true adds the
// previous_priorities retry priority (update_frequency 2). consistentHash
// leaves out the previous_hosts predicate, as Istio does when the route
// hashes to a host. It fails only when a typed config cannot be packed.
func retryPolicy(r *networking.HTTPRetry, consistentHash bool) (*routev3.RetryPolicy, error) {
	if r != nil && r.GetAttempts() <= 0 {
		return nil, nil
	}
	rp := defaultRetryPolicy()
	if consistentHash {
		rp.RetryHostPredicate = nil
	}
	if r == nil {
		return rp, nil
	}
	rp.NumRetries = wrapperspb.UInt32(uint32(r.GetAttempts()))
	if r.GetRetryOn() != "" {
		var on []string
		var codes []uint32
		for _, s := range strings.Split(r.GetRetryOn(), ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if c, err := strconv.ParseUint(s, 10, 32); err == nil {
				// An HTTP status goes to retriable_status_codes, never
				// into retry_on; validation refuses numbers outside
				// 100-599, which the proxy would NACK.
				if c >= 100 && c <= 599 && !slices.Contains(codes, uint32(c)) {
					codes = append(codes, uint32(c))
				}
				continue
			}
			if !slices.Contains(on, s) {
				on = append(on, s)
			}
		}
		if len(codes) > 0 && !slices.Contains(on, retriableStatusCodes) {
			on = append(on, retriableStatusCodes)
		}
		rp.RetryOn = strings.Join(on, ",")
		rp.RetriableStatusCodes = codes
	}
	if t := r.GetPerTryTimeout(); t != nil {
		rp.PerTryTimeout = durationpb.New(t.AsDuration())
	}
	if b := r.GetBackoff(); b != nil {
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(b.AsDuration())}
	}
	if ih := r.GetRetryIgnorePreviousHosts(); ih != nil {
		rp.RetryHostPredicate = nil
		if ih.GetValue() {
			rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{previousHostsPredicate()}
		}
	}
	if r.GetRetryRemoteLocalities().GetValue() {
		cfg, err := packAny(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: previousPrioritiesUpdateFrequency})
		if err != nil {
			return nil, err
		}
		rp.RetryPriority = &routev3.RetryPolicy_RetryPriority{
			Name:       previousPrioritiesRetryPriority,
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: cfg},
		}
	}
	return rp, nil
}

// Envoy's retry extensions Istio configures.
const (
	previousHostsRetryPredicate     = "envoy.retry_host_predicates.previous_hosts"
	previousPrioritiesRetryPriority = "envoy.retry_priorities.previous_priorities"
	// previousPrioritiesUpdateFrequency is Istio's: the priority load is
	// recomputed after every 2 attempts.
	previousPrioritiesUpdateFrequency = 2
	// hostSelectionRetryMaxAttempts is how often Envoy re-picks a host the
	// predicate rejects; Istio's fixed 5.
	hostSelectionRetryMaxAttempts = 5
)

// previousHostsPredicate is Istio's retry host predicate: retries prefer a
// host not tried yet. Its config is an empty PreviousHostsPredicate, whose
// Any has no value bytes.
func previousHostsPredicate() *routev3.RetryPolicy_RetryHostPredicate {
	return &routev3.RetryPolicy_RetryHostPredicate{
		Name: previousHostsRetryPredicate,
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: &anypb.Any{
			TypeUrl: "type.googleapis.com/" + string(proto.MessageName(&previoushostsv3.PreviousHostsPredicate{})),
		}},
	}
}

// defaultRetryPolicy is Istio's DefaultPolicy: two retries on
// connection-level failures and 503, preferring hosts not tried yet.
func defaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:                       defaultRetryOn,
		NumRetries:                    wrapperspb.UInt32(defaultNumRetries),
		RetriableStatusCodes:          []uint32{503},
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{previousHostsPredicate()},
		HostSelectionRetryMaxAttempts: hostSelectionRetryMaxAttempts,
	}
}

// maxDirectResponseBody is RouteConfiguration.max_direct_response_body_size_bytes,
// 1 MiB as Istio sets it (Envoy's default is 4 KiB), matching the bound
// validation puts on directResponse.body.
var maxDirectResponseBody = wrapperspb.UInt32(1 << 20)

// defaultRoute sends everything to cluster, with no timeout but a gRPC
// client's own (grpc-timeout), as Istio's default routes.
func defaultRoute(cluster string, retry *routev3.RetryPolicy) *routev3.Route {
	return &routev3.Route{
		Name:  defaultRouteName,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(0),
			MaxGrpcTimeout:   durationpb.New(0), //nolint:staticcheck // as Istio
			RetryPolicy:      retry,
		}},
	}
}

// serviceDomains are the names a client may use for host on port, as
// Istio's generateVirtualHostDomains: "host", "host:port" and, for a
// Kubernetes-style host "svc.ns.svc.cluster.local", "svc.ns" and
// "svc.ns.svc" (and "svc" when ns is the proxy's namespace), each with and
// without the port.
func serviceDomains(host string, port uint32, proxyNamespace string) []string {
	names := []string{host}
	suffix := ".svc." + model.DomainSuffix
	if short, ok := strings.CutSuffix(host, suffix); ok && !strings.HasPrefix(host, "*") {
		if name, ns, ok := strings.Cut(short, "."); ok && !strings.Contains(ns, ".") {
			if ns == proxyNamespace {
				names = append(names, name)
			}
			names = append(names, short, short+".svc")
		}
	}
	out := make([]string, 0, 2*len(names))
	for _, n := range names {
		out = append(out, n, hostPort(n, port))
	}
	return out
}

// uniqueDomains drops the domains already used in a route table (Envoy
// rejects a domain in two virtual hosts) and marks the rest used.
func uniqueDomains(used map[string]bool, domains []string) []string {
	var out []string
	for _, d := range domains {
		if !used[d] {
			used[d] = true
			out = append(out, d)
		}
	}
	return out
}

func hostPort(host string, port uint32) string {
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}

func sortVirtualHosts(rc *routev3.RouteConfiguration) {
	slices.SortFunc(rc.VirtualHosts, func(a, b *routev3.VirtualHost) int { return cmp.Compare(a.GetName(), b.GetName()) })
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

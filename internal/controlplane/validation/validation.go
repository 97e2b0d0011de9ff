package validation

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// Validate checks one resource on its own, as Istio's validating webhook
// does for its kind, and returns every problem found (nil when it is valid).
// Each error names the resource's source, key and field path. It is safe
// for concurrent use and does not block.
func Validate(r *config.Resource) config.Errors {
	c := &checker{r: r}
	c.metadata()
	switch spec := r.Spec.(type) {
	case *networking.VirtualService:
		c.virtualService(spec)
	case *networking.DestinationRule:
		c.destinationRule(spec)
	case *networking.Gateway:
		c.gateway(spec)
	case *networking.ServiceEntry:
		c.serviceEntry(spec)
	case *networking.WorkloadEntry:
		c.workloadEntry("spec", spec)
	case nil:
		c.errf("spec", "Required value")
	default:
		c.errf("spec", "no validation for %T", r.Spec)
	}
	return c.errs
}

// checker collects the errors of one resource.
type checker struct {
	r    *config.Resource
	errs config.Errors
}

func (c *checker) errf(field, format string, args ...any) {
	c.errs = append(c.errs, &config.Error{Source: c.r.Source, Key: c.r.Key(), Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) metadata() {
	if msg := dns1123Subdomain(c.r.Name); msg != "" {
		c.errf("metadata.name", "Invalid value: %q: %s", c.r.Name, msg)
	}
	if !isDNS1123Label(c.r.Namespace) {
		c.errf("metadata.namespace", "Invalid value: %q: must be a DNS-1123 label", c.r.Namespace)
	}
	c.labels("metadata.labels", c.r.Labels)
}

// VirtualService (Istio's validateVirtualService).

func (c *checker) virtualService(vs *networking.VirtualService) {
	if len(vs.Hosts) == 0 {
		c.errf("spec.hosts", "Required value: a VirtualService must have at least one host")
	}
	for i, h := range vs.Hosts {
		if msg := wildcardDomainOrIP(h); msg != "" {
			c.errf(fmt.Sprintf("spec.hosts[%d]", i), "Invalid value: %q: %s", h, msg)
		}
	}
	c.gatewayNames("spec.gateways", vs.Gateways)
	if len(vs.Http) == 0 && len(vs.Tcp) == 0 && len(vs.Tls) == 0 {
		c.errf("spec", "http, tcp or tls must be provided in virtual service")
	}
	for i, h := range vs.Http {
		c.httpRoute(fmt.Sprintf("spec.http[%d]", i), h)
	}
	if len(vs.Tcp) > 0 {
		c.unsupported("spec.tcp")
	}
	if len(vs.Tls) > 0 {
		c.unsupported("spec.tls")
	}
	for i, t := range vs.Tcp {
		p := fmt.Sprintf("spec.tcp[%d]", i)
		for j, m := range t.Match {
			mp := fmt.Sprintf("%s.match[%d]", p, j)
			c.subnets(mp+".destinationSubnets", m.DestinationSubnets)
			c.port(mp+".port", m.Port, true)
			c.labels(mp+".sourceLabels", m.SourceLabels)
			c.gatewayNames(mp+".gateways", m.Gateways)
		}
		c.routeDestinations(p, t.Route)
	}
	for i, t := range vs.Tls {
		p := fmt.Sprintf("spec.tls[%d]", i)
		if len(t.Match) == 0 {
			c.errf(p+".match", "Required value: TLS route must have at least one match condition")
		}
		for j, m := range t.Match {
			mp := fmt.Sprintf("%s.match[%d]", p, j)
			if len(m.SniHosts) == 0 {
				c.errf(mp+".sniHosts", "Required value: TLS match must have at least one SNI host")
			}
			for k, h := range m.SniHosts {
				if msg := wildcardDomain(h); msg != "" {
					c.errf(fmt.Sprintf("%s.sniHosts[%d]", mp, k), "Invalid value: %q: %s", h, msg)
				}
			}
			c.subnets(mp+".destinationSubnets", m.DestinationSubnets)
			c.port(mp+".port", m.Port, true)
			c.labels(mp+".sourceLabels", m.SourceLabels)
			c.gatewayNames(mp+".gateways", m.Gateways)
		}
		c.routeDestinations(p, t.Route)
	}
}

// Unsupported is the message of a field Loom accepts in Istio's schema but
// does not serve yet, where ignoring it would change what happens to a
// request: the resource is refused rather than misrouting traffic.
const Unsupported = "not supported by this version of Loom"

func (c *checker) unsupported(field string) { c.errf(field, "%s", Unsupported) }

// unsupportedHTTP refuses the HTTPRoute fields the translator does not
// serve: every one changes the response or where the request goes.
func (c *checker) unsupportedHTTP(p string, h *networking.HTTPRoute) {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"redirect", h.Redirect != nil},
		{"directResponse", h.DirectResponse != nil},
		{"delegate", h.Delegate != nil},
		{"rewrite", h.Rewrite != nil},
		{"mirror", h.Mirror != nil},
		{"mirrors", len(h.Mirrors) > 0},
		{"mirrorPercentage", h.MirrorPercentage != nil},
		{"mirrorPercent", h.MirrorPercent != nil},
		{"corsPolicy", h.CorsPolicy != nil},
		{"headers", h.Headers != nil},
	} {
		if f.set {
			c.unsupported(p + "." + f.name)
		}
	}
	for i, r := range h.Route {
		if r.Headers != nil {
			c.unsupported(fmt.Sprintf("%s.route[%d].headers", p, i))
		}
	}
}

// fault checks HTTPRoute.fault as Istio's validateHTTPFaultInjection: an
// abort and/or a delay; an abort's percentage 0-100 and its httpStatus
// 200-599 or grpcStatus a known status (http2Error is refused, as by
// Istio, and so is an abort of no type, which Istio only warns about and
// then drops); a delay's percentage and percent 0-100 and its fixedDelay
// a positive whole number of milliseconds (exponentialDelay is refused,
// as by Istio).
func (c *checker) fault(p string, f *networking.HTTPFaultInjection) {
	if f == nil {
		return
	}
	if f.Abort == nil && f.Delay == nil {
		c.errf(p, "Invalid value: fault must have an abort and/or a delay")
	}
	if a := f.Abort; a != nil {
		c.percent(p+".abort.percentage.value", a.Percentage)
		switch t := a.ErrorType.(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			if t.HttpStatus < 200 || t.HttpStatus > 599 {
				c.errf(p+".abort.httpStatus", "Invalid value: %d: must be between 200 and 599", t.HttpStatus)
			}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if _, ok := GRPCStatusCode(t.GrpcStatus); !ok {
				c.errf(p+".abort.grpcStatus", "Invalid value: %q: must be a gRPC status name, as \"UNAVAILABLE\", or code 0-16", t.GrpcStatus)
			}
		case *networking.HTTPFaultInjection_Abort_Http2Error:
			c.errf(p+".abort.http2Error", "%s", Unsupported)
		default:
			c.errf(p+".abort", "Required value: an abort must have httpStatus or grpcStatus")
		}
	}
	if d := f.Delay; d != nil {
		c.percent(p+".delay.percentage.value", d.Percentage)
		if d.Percent < 0 || d.Percent > 100 {
			c.errf(p+".delay.percent", "Invalid value: %d: must be between 0 and 100", d.Percent)
		}
		switch t := d.HttpDelayType.(type) {
		case *networking.HTTPFaultInjection_Delay_FixedDelay:
			if t.FixedDelay == nil {
				c.errf(p+".delay.fixedDelay", "Required value")
			}
			c.duration(p+".delay.fixedDelay", t.FixedDelay)
		case *networking.HTTPFaultInjection_Delay_ExponentialDelay:
			c.duration(p+".delay.exponentialDelay", t.ExponentialDelay)
			c.errf(p+".delay.exponentialDelay", "%s", Unsupported)
		default:
			c.errf(p+".delay.fixedDelay", "Required value")
		}
	}
}

// supportedRetryOn are the retryOn conditions the Loom proxy accepts (its
// retry_on list, internal/dataplane/config); an HTTP status 100-599 is
// accepted too and becomes a retriable status code.
var supportedRetryOn = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "connect-failure": true,
	"retriable-4xx": true, "refused-stream": true, "retriable-status-codes": true,
	"unavailable": true, "cancelled": true, "deadline-exceeded": true,
	"internal": true, "resource-exhausted": true,
}

const supportedRetryOnList = `"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream", ` +
	`"retriable-status-codes", "unavailable", "cancelled", "deadline-exceeded", "internal", "resource-exhausted" or an HTTP status 100-599`

// retryOn checks HTTPRetry.retryOn, a comma-separated list: the proxy
// NACKs a whole route update with a condition it does not know.
func (c *checker) retryOn(p, on string) {
	for _, s := range strings.Split(on, ",") {
		s = strings.TrimSpace(s)
		if s == "" || supportedRetryOn[s] {
			continue
		}
		if n, err := strconv.Atoi(s); err == nil && n >= 100 && n <= 599 {
			continue
		}
		c.errf(p, "Unsupported value: %q: supported values: %s", s, supportedRetryOnList)
	}
}

func (c *checker) httpRoute(p string, h *networking.HTTPRoute) {
	c.unsupportedHTTP(p, h)
	n := 0
	for _, set := range []bool{len(h.Route) > 0, h.Redirect != nil, h.DirectResponse != nil, h.Delegate != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		c.errf(p, "Required value: an HTTP route must have one of route, redirect, directResponse or delegate")
	case n > 1:
		c.errf(p, "Invalid value: only one of route, redirect, directResponse or delegate may be set")
	}
	for j, m := range h.Match {
		mp := fmt.Sprintf("%s.match[%d]", p, j)
		c.stringMatch(mp+".uri", m.Uri, false)
		c.stringMatch(mp+".scheme", m.Scheme, false)
		c.stringMatch(mp+".method", m.Method, false)
		c.stringMatch(mp+".authority", m.Authority, false)
		c.headerMatches(mp+".headers", m.Headers)
		c.headerMatches(mp+".withoutHeaders", m.WithoutHeaders)
		for _, k := range sortedKeys(m.QueryParams) {
			c.stringMatch(fmt.Sprintf("%s.queryParams[%s]", mp, k), m.QueryParams[k], true)
		}
		c.port(mp+".port", m.Port, true)
		c.labels(mp+".sourceLabels", m.SourceLabels)
		c.gatewayNames(mp+".gateways", m.Gateways)
	}
	if h.Delegate != nil {
		if h.Delegate.Name == "" {
			c.errf(p+".delegate.name", "Required value")
		}
		if h.Delegate.Namespace != "" && !isDNS1123Label(h.Delegate.Namespace) {
			c.errf(p+".delegate.namespace", "Invalid value: %q: must be a DNS-1123 label", h.Delegate.Namespace)
		}
	}
	c.httpRouteDestinations(p, h.Route)
	if r := h.Redirect; r != nil {
		if r.Uri == "" && r.Authority == "" && r.RedirectPort == nil && r.Scheme == "" && r.PrefixRewrite == "" {
			c.errf(p+".redirect", "Invalid value: redirect must specify uri, authority, port, scheme or prefixRewrite")
		}
		if r.Uri != "" && r.PrefixRewrite != "" {
			c.errf(p+".redirect", "Invalid value: only one of uri or prefixRewrite may be set")
		}
		if code := r.RedirectCode; code != 0 && (code < 300 || code > 399) {
			c.errf(p+".redirect.redirectCode", "Invalid value: %d: must be a 3xx status", code)
		}
		if h.Rewrite != nil {
			c.errf(p+".rewrite", "Invalid value: rewrite may not be used with redirect")
		}
	}
	if d := h.DirectResponse; d != nil {
		if d.Status < 200 || d.Status > 599 {
			c.errf(p+".directResponse.status", "Invalid value: %d: must be between 200 and 599", d.Status)
		}
	}
	if rw := h.Rewrite; rw != nil {
		if rw.Uri != "" && rw.UriRegexRewrite != nil {
			c.errf(p+".rewrite", "Invalid value: only one of uri or uriRegexRewrite may be set")
		}
		if rr := rw.UriRegexRewrite; rr != nil {
			if rr.Match == "" {
				c.errf(p+".rewrite.uriRegexRewrite.match", "Required value")
			} else if _, err := regexp.Compile(rr.Match); err != nil {
				c.errf(p+".rewrite.uriRegexRewrite.match", "Invalid value: %q: %v", rr.Match, err)
			}
		}
	}
	c.duration(p+".timeout", h.Timeout)
	if r := h.Retries; r != nil {
		if r.Attempts < 0 {
			c.errf(p+".retries.attempts", "Invalid value: %d: attempts cannot be negative", r.Attempts)
		}
		c.retryOn(p+".retries.retryOn", r.RetryOn)
		c.duration(p+".retries.perTryTimeout", r.PerTryTimeout)
		c.duration(p+".retries.backoff", r.Backoff)
	}
	c.fault(p+".fault", h.Fault)
	if h.Mirror != nil {
		c.destination(p+".mirror", h.Mirror)
	}
	c.percent(p+".mirrorPercentage.value", h.MirrorPercentage)
	if h.MirrorPercent != nil && h.MirrorPercent.Value > 100 {
		c.errf(p+".mirrorPercent", "Invalid value: %d: must be between 0 and 100", h.MirrorPercent.Value)
	}
	for i, m := range h.Mirrors {
		mp := fmt.Sprintf("%s.mirrors[%d]", p, i)
		if m.Destination == nil {
			c.errf(mp+".destination", "Required value")
		} else {
			c.destination(mp+".destination", m.Destination)
		}
		c.percent(mp+".percentage.value", m.Percentage)
	}
	if cp := h.CorsPolicy; cp != nil {
		for i, o := range cp.AllowOrigins {
			c.stringMatch(fmt.Sprintf("%s.corsPolicy.allowOrigins[%d]", p, i), o, false)
		}
		c.duration(p+".corsPolicy.maxAge", cp.MaxAge)
	}
	c.headerOps(p+".headers", h.Headers)
}

func (c *checker) headerOps(p string, h *networking.Headers) {
	if h == nil {
		return
	}
	for _, op := range []struct {
		name string
		ops  *networking.Headers_HeaderOperations
	}{{"request", h.Request}, {"response", h.Response}} {
		if op.ops == nil {
			continue
		}
		for _, m := range []struct {
			name string
			m    map[string]string
		}{{"set", op.ops.Set}, {"add", op.ops.Add}} {
			for _, k := range sortedKeys(m.m) {
				if !isHeaderName(k) {
					c.errf(fmt.Sprintf("%s.%s.%s[%s]", p, op.name, m.name, k), "Invalid value: invalid header name")
				}
			}
		}
		for i, k := range op.ops.Remove {
			if !isHeaderName(k) {
				c.errf(fmt.Sprintf("%s.%s.remove[%d]", p, op.name, i), "Invalid value: %q: invalid header name", k)
			}
		}
	}
}

func (c *checker) httpRouteDestinations(p string, rs []*networking.HTTPRouteDestination) {
	weights := make([]int32, len(rs))
	for i, r := range rs {
		rp := fmt.Sprintf("%s.route[%d]", p, i)
		if r.Destination == nil {
			c.errf(rp+".destination", "Required value")
		} else {
			c.destination(rp+".destination", r.Destination)
		}
		weights[i] = r.Weight
		c.headerOps(rp+".headers", r.Headers)
	}
	c.weights(p, weights)
}

func (c *checker) routeDestinations(p string, rs []*networking.RouteDestination) {
	if len(rs) == 0 {
		c.errf(p+".route", "Required value: route is required")
	}
	weights := make([]int32, len(rs))
	for i, r := range rs {
		rp := fmt.Sprintf("%s.route[%d]", p, i)
		if r.Destination == nil {
			c.errf(rp+".destination", "Required value")
		} else {
			c.destination(rp+".destination", r.Destination)
		}
		weights[i] = r.Weight
	}
	c.weights(p, weights)
}

// weights applies Istio's rule: each weight is 0..100, and when there is
// more than one destination or any weight is set, they sum to 100.
func (c *checker) weights(p string, ws []int32) {
	var total int64
	set := false
	ok := true
	for i, w := range ws {
		if w < 0 || w > 100 {
			c.errf(fmt.Sprintf("%s.route[%d].weight", p, i), "Invalid value: %d: must be between 0 and 100", w)
			ok = false
		}
		if w != 0 {
			set = true
		}
		total += int64(w)
	}
	if ok && (len(ws) > 1 || set) && total != 100 {
		c.errf(p+".route", "Invalid value: total destination weight %d != 100", total)
	}
}

func (c *checker) destination(p string, d *networking.Destination) {
	if d.Host == "" {
		c.errf(p+".host", "Required value: destination.host is required")
	} else if msg := wildcardDomainOrIP(d.Host); msg != "" {
		c.errf(p+".host", "Invalid value: %q: %s", d.Host, msg)
	}
	if d.Subset != "" && !isDNS1123Label(d.Subset) {
		c.errf(p+".subset", "Invalid value: %q: subset name must be a DNS-1123 label", d.Subset)
	}
	if d.Port != nil {
		c.port(p+".port.number", d.Port.Number, false)
	}
}

func (c *checker) headerMatches(p string, m map[string]*networking.StringMatch) {
	for _, k := range sortedKeys(m) {
		fp := fmt.Sprintf("%s[%s]", p, k)
		if !isHeaderName(k) {
			c.errf(fp, "Invalid value: %q: invalid header name", k)
		}
		c.stringMatch(fp, m[k], true)
	}
}

// stringMatch checks an Istio StringMatch. presence allows an empty match,
// which for headers and query parameters means "is present".
func (c *checker) stringMatch(p string, m *networking.StringMatch, presence bool) {
	if m == nil {
		return
	}
	switch t := m.MatchType.(type) {
	case nil:
		if !presence {
			c.errf(p, "Invalid value: must set exactly one of exact, prefix or regex")
		}
	case *networking.StringMatch_Regex:
		if t.Regex == "" {
			c.errf(p+".regex", "Invalid value: empty regex")
		} else if _, err := regexp.Compile(t.Regex); err != nil {
			c.errf(p+".regex", "Invalid value: %q: not an RE2 regular expression: %v", t.Regex, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
	}
}

func (c *checker) gatewayNames(p string, gws []string) {
	for i, g := range gws {
		if msg := gatewayName(g); msg != "" {
			c.errf(fmt.Sprintf("%s[%d]", p, i), "Invalid value: %q: %s", g, msg)
		}
	}
}

func gatewayName(g string) string {
	if g == "mesh" {
		return ""
	}
	ns, name, ok := strings.Cut(g, "/")
	if !ok {
		name, ns = g, ""
	} else if !isDNS1123Label(ns) {
		return "namespace must be a DNS-1123 label"
	}
	if strings.Contains(name, ".") {
		if msg := fqdn(name); msg != "" {
			return "gateway name " + msg
		}
		return ""
	}
	if !isDNS1123Label(name) {
		return `must be "mesh", NAME or NAMESPACE/NAME with DNS-1123 labels`
	}
	return ""
}

// DestinationRule (Istio's ValidateDestinationRule).

func (c *checker) destinationRule(dr *networking.DestinationRule) {
	if dr.Host == "" {
		c.errf("spec.host", "Required value")
	} else if msg := wildcardDomain(dr.Host); msg != "" {
		c.errf("spec.host", "Invalid value: %q: %s", dr.Host, msg)
	}
	if dr.TrafficPolicy != nil {
		c.trafficPolicy("spec.trafficPolicy", dr.TrafficPolicy, true)
	}
	names := map[string]bool{}
	for i, s := range dr.Subsets {
		p := fmt.Sprintf("spec.subsets[%d]", i)
		switch {
		case s.Name == "":
			c.errf(p+".name", "Required value")
		case !isDNS1123Label(s.Name):
			c.errf(p+".name", "Invalid value: %q: subset name must be a DNS-1123 label", s.Name)
		case names[s.Name]:
			c.errf(p+".name", "Duplicate value: %q", s.Name)
		}
		names[s.Name] = true
		c.labels(p+".labels", s.Labels)
		if s.TrafficPolicy != nil {
			c.trafficPolicy(p+".trafficPolicy", s.TrafficPolicy, true)
		}
	}
	if ws := dr.WorkloadSelector; ws != nil {
		c.selector("spec.workloadSelector.matchLabels", ws.MatchLabels)
	}
}

func (c *checker) trafficPolicy(p string, tp *networking.TrafficPolicy, portLevel bool) {
	if tp.LoadBalancer == nil && tp.ConnectionPool == nil && tp.OutlierDetection == nil && tp.Tls == nil &&
		len(tp.PortLevelSettings) == 0 && tp.Tunnel == nil && tp.ProxyProtocol == nil && tp.RetryBudget == nil {
		c.errf(p, "Invalid value: traffic policy must have at least one field")
	}
	c.loadBalancer(p+".loadBalancer", tp.LoadBalancer)
	c.connectionPool(p+".connectionPool", tp.ConnectionPool)
	c.outlierDetection(p+".outlierDetection", tp.OutlierDetection)
	c.clientTLS(p+".tls", tp.Tls)
	if t := tp.Tunnel; t != nil {
		if t.Protocol != "" && t.Protocol != "CONNECT" && t.Protocol != "POST" {
			c.errf(p+".tunnel.protocol", "Unsupported value: %q: supported values: \"CONNECT\", \"POST\"", t.Protocol)
		}
		if t.TargetHost == "" {
			c.errf(p+".tunnel.targetHost", "Required value")
		}
		c.port(p+".tunnel.targetPort", t.TargetPort, false)
	}
	if rb := tp.RetryBudget; rb != nil {
		if rb.Percent != nil && (rb.Percent.Value < 0 || rb.Percent.Value > 100) {
			c.errf(p+".retryBudget.percent", "Invalid value: %v: must be between 0 and 100", rb.Percent.Value)
		}
		c.duration(p+".retryBudget.budgetInterval", rb.BudgetInterval)
	}
	if !portLevel && len(tp.PortLevelSettings) > 0 {
		c.errf(p+".portLevelSettings", "Forbidden: not allowed here")
	}
	ports := map[uint32]bool{}
	for i, pls := range tp.PortLevelSettings {
		pp := fmt.Sprintf("%s.portLevelSettings[%d]", p, i)
		if pls.Port == nil {
			c.errf(pp+".port", "Required value: port must be specified")
		} else {
			c.port(pp+".port.number", pls.Port.Number, false)
			if ports[pls.Port.Number] {
				c.errf(pp+".port.number", "Duplicate value: %d", pls.Port.Number)
			}
			ports[pls.Port.Number] = true
		}
		if pls.LoadBalancer == nil && pls.ConnectionPool == nil && pls.OutlierDetection == nil && pls.Tls == nil {
			c.errf(pp, "Invalid value: port traffic policy must have at least one field")
		}
		c.loadBalancer(pp+".loadBalancer", pls.LoadBalancer)
		c.connectionPool(pp+".connectionPool", pls.ConnectionPool)
		c.outlierDetection(pp+".outlierDetection", pls.OutlierDetection)
		c.clientTLS(pp+".tls", pls.Tls)
	}
}

func (c *checker) loadBalancer(p string, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		if cookie := ch.GetHttpCookie(); cookie != nil {
			if cookie.Name == "" {
				c.errf(p+".consistentHash.httpCookie.name", "Required value")
			}
			if cookie.Ttl != nil && (cookie.Ttl.AsDuration() < 0 || !cookie.Ttl.IsValid()) {
				c.errf(p+".consistentHash.httpCookie.ttl", "Invalid value: must not be negative")
			}
		}
		if ch.GetHttpHeaderName() == "" {
			if _, ok := ch.HashKey.(*networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName); ok {
				c.errf(p+".consistentHash.httpHeaderName", "Required value")
			}
		}
		if ch.HashKey == nil {
			c.errf(p+".consistentHash", "Required value: one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName")
		}
	}
	if w := lb.Warmup; w != nil {
		wp := p + ".warmup"
		if w.Duration == nil {
			c.errf(wp+".duration", "Required value")
		} else {
			c.duration(wp+".duration", w.Duration)
		}
		if w.MinimumPercent != nil && (w.MinimumPercent.Value < 0 || w.MinimumPercent.Value > 100) {
			c.errf(wp+".minimumPercent", "Invalid value: %v: must be between 0 and 100", w.MinimumPercent.Value)
		}
		if w.Aggression != nil && w.Aggression.Value < 1 {
			c.errf(wp+".aggression", "Invalid value: %v: must be at least 1", w.Aggression.Value)
		}
	}
	if lb.WarmupDurationSecs != nil {
		c.duration(p+".warmupDurationSecs", lb.WarmupDurationSecs)
		if lb.Warmup != nil {
			c.errf(p+".warmupDurationSecs", "Invalid value: only one of warmupDurationSecs or warmup may be set")
		}
	}
	if l := lb.LocalityLbSetting; l != nil {
		if len(l.Distribute) > 0 && len(l.Failover) > 0 {
			c.errf(p+".localityLbSetting", "Invalid value: can not simultaneously specify 'distribute' and 'failover'")
		}
		for i, d := range l.Distribute {
			var sum uint32
			for _, v := range d.To {
				sum += v
			}
			if sum != 100 {
				c.errf(fmt.Sprintf("%s.localityLbSetting.distribute[%d].to", p, i), "Invalid value: total weight %d != 100", sum)
			}
		}
	}
}

func (c *checker) connectionPool(p string, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	if cp.Tcp == nil && cp.Http == nil {
		c.errf(p, "Invalid value: must set either tcp or http settings")
	}
	if t := cp.Tcp; t != nil {
		if t.MaxConnections < 0 {
			c.errf(p+".tcp.maxConnections", "Invalid value: %d: must not be negative", t.MaxConnections)
		}
		c.duration(p+".tcp.connectTimeout", t.ConnectTimeout)
		c.duration(p+".tcp.maxConnectionDuration", t.MaxConnectionDuration)
		c.duration(p+".tcp.idleTimeout", t.IdleTimeout)
		if ka := t.TcpKeepalive; ka != nil {
			c.duration(p+".tcp.tcpKeepalive.time", ka.Time)
			c.duration(p+".tcp.tcpKeepalive.interval", ka.Interval)
		}
	}
	if h := cp.Http; h != nil {
		for _, f := range []struct {
			name string
			v    int32
		}{
			{"http1MaxPendingRequests", h.Http1MaxPendingRequests},
			{"http2MaxRequests", h.Http2MaxRequests},
			{"maxRequestsPerConnection", h.MaxRequestsPerConnection},
			{"maxRetries", h.MaxRetries},
			{"maxConcurrentStreams", h.MaxConcurrentStreams},
		} {
			if f.v < 0 {
				c.errf(p+".http."+f.name, "Invalid value: %d: must not be negative", f.v)
			}
		}
		c.duration(p+".http.idleTimeout", h.IdleTimeout)
		if ka := h.Http2KeepAlive; ka != nil {
			c.duration(p+".http.http2KeepAlive.interval", ka.Interval)
			c.duration(p+".http.http2KeepAlive.timeout", ka.Timeout)
		}
	}
}

func (c *checker) outlierDetection(p string, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	if od.ConsecutiveErrors < 0 {
		c.errf(p+".consecutiveErrors", "Invalid value: %d: must not be negative", od.ConsecutiveErrors)
	}
	c.duration(p+".interval", od.Interval)
	c.duration(p+".baseEjectionTime", od.BaseEjectionTime)
	if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
		c.errf(p+".maxEjectionPercent", "Invalid value: %d: must be between 0 and 100", od.MaxEjectionPercent)
	}
	if od.MinHealthPercent < 0 || od.MinHealthPercent > 100 {
		c.errf(p+".minHealthPercent", "Invalid value: %d: must be between 0 and 100", od.MinHealthPercent)
	}
	if od.ConsecutiveLocalOriginFailures != nil && !od.SplitExternalLocalOriginErrors {
		c.errf(p+".consecutiveLocalOriginFailures", "Invalid value: requires splitExternalLocalOriginErrors: true")
	}
}

func (c *checker) clientTLS(p string, t *networking.ClientTLSSettings) {
	if t == nil {
		return
	}
	switch t.Mode {
	case networking.ClientTLSSettings_MUTUAL:
		if t.CredentialName == "" {
			if t.ClientCertificate == "" {
				c.errf(p+".clientCertificate", "Required value: client certificate required for mutual tls")
			}
			if t.PrivateKey == "" {
				c.errf(p+".privateKey", "Required value: private key required for mutual tls")
			}
		}
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		if t.ClientCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "" || t.CredentialName != "" {
			c.errf(p, "Invalid value: cannot specify certificates, keys or credentialName with mode ISTIO_MUTUAL")
		}
	}
}

// Gateway (Istio's ValidateGateway).

var protocols = map[string]bool{
	"HTTP": true, "HTTPS": true, "HTTP2": true, "GRPC": true, "GRPC-WEB": true, "HTTP_PROXY": true,
	"TCP": true, "TLS": true, "UDP": true, "MONGO": true, "REDIS": true, "MYSQL": true,
}

const protocolList = "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL"

// gatewayProtocols are the Gateway server protocols the translator serves
// (plain-text HTTP of any version); a server of another protocol would get
// no listener.
var gatewayProtocols = map[string]bool{"HTTP": true, "HTTP2": true, "GRPC": true, "GRPC-WEB": true}

func (c *checker) gateway(gw *networking.Gateway) {
	if len(gw.Servers) == 0 {
		c.errf("spec.servers", "Required value: gateway must have at least one server")
	}
	names := map[string]bool{}
	for i, s := range gw.Servers {
		p := fmt.Sprintf("spec.servers[%d]", i)
		if s.Port == nil {
			c.errf(p+".port", "Required value: port is required")
		} else {
			if proto := strings.ToUpper(s.Port.Protocol); !protocols[proto] {
				c.errf(p+".port.protocol", "Unsupported value: %q: supported protocols are %s", s.Port.Protocol, protocolList)
			} else if !gatewayProtocols[proto] {
				c.unsupported(p + ".port.protocol")
			}
			if s.Port.Number > 0 || !strings.HasPrefix(s.Bind, "unix://") {
				c.port(p+".port.number", s.Port.Number, false)
			}
			if s.Port.Name == "" {
				c.errf(p+".port.name", "Required value: port name must be set")
			}
		}
		if len(s.Hosts) == 0 {
			c.errf(p+".hosts", "Required value: server config must contain at least one host")
		}
		for j, h := range s.Hosts {
			if msg := namespacedHost(h); msg != "" {
				c.errf(fmt.Sprintf("%s.hosts[%d]", p, j), "Invalid value: %q: %s", h, msg)
			}
		}
		if s.Name != "" {
			if names[s.Name] {
				c.errf(p+".name", "Duplicate value: %q", s.Name)
			}
			names[s.Name] = true
		}
		if s.Port != nil {
			proto := strings.ToUpper(s.Port.Protocol)
			if (proto == "HTTPS" || proto == "TLS") && s.Tls == nil {
				c.errf(p+".tls", "Required value: server must have TLS settings for HTTPS/TLS protocols")
			}
		}
		if s.Tls != nil {
			c.unsupported(p + ".tls")
		}
		if t := s.Tls; t != nil && !t.HttpsRedirect {
			switch t.Mode {
			case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
				if t.CredentialName == "" && len(t.CredentialNames) == 0 && len(t.TlsCertificates) == 0 {
					if t.ServerCertificate == "" {
						c.errf(p+".tls.serverCertificate", "Required value: %s mode requires a server certificate or credentialName", t.Mode)
					}
					if t.PrivateKey == "" {
						c.errf(p+".tls.privateKey", "Required value: %s mode requires a private key or credentialName", t.Mode)
					}
				}
			}
		}
	}
	c.labels("spec.selector", gw.Selector)
}

// namespacedHost checks a Gateway server host: [NAMESPACE/]DNSNAME where
// NAMESPACE is "*", "." or a label and DNSNAME may be a wildcard.
func namespacedHost(h string) string {
	ns, host, ok := strings.Cut(h, "/")
	if !ok {
		host = ns
	} else if ns != "*" && ns != "." && ns != "~" && !isDNS1123Label(ns) {
		return "namespace must be '*', '.' or a DNS-1123 label"
	}
	if host == "*" {
		return ""
	}
	return wildcardDomain(host)
}

// ServiceEntry (Istio's ValidateServiceEntry).

func (c *checker) serviceEntry(se *networking.ServiceEntry) {
	if len(se.Hosts) == 0 {
		c.errf("spec.hosts", "Required value")
	}
	for i, h := range se.Hosts {
		p := fmt.Sprintf("spec.hosts[%d]", i)
		if h == "*" {
			c.errf(p, "Invalid value: hostname cannot be wildcard")
			continue
		}
		rest := strings.TrimPrefix(strings.TrimPrefix(h, "*"), ".")
		if rest == "" {
			c.errf(p, "Invalid value: %q: not a valid host name", h)
		} else if msg := fqdn(rest); msg != "" {
			c.errf(p, "Invalid value: %q: %s", h, msg)
		}
	}
	for i, a := range se.Addresses {
		p := fmt.Sprintf("spec.addresses[%d]", i)
		if _, err := netip.ParseAddr(a); err == nil {
			continue
		}
		if _, err := netip.ParsePrefix(a); err != nil {
			c.errf(p, "Invalid value: %q: must be an IP address or a CIDR range", a)
			continue
		}
		if se.Resolution != networking.ServiceEntry_NONE && se.Resolution != networking.ServiceEntry_STATIC {
			c.errf(p, "Invalid value: %q: CIDR addresses are allowed only for NONE/STATIC resolution types", a)
		}
	}
	names := map[string]bool{}
	numbers := map[uint32]bool{}
	portNames := map[string]bool{}
	for i, port := range se.Ports {
		p := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case port.Name == "":
			c.errf(p+".name", "Required value")
		case names[port.Name]:
			c.errf(p+".name", "Duplicate value: %q", port.Name)
		case !isPortName(port.Name):
			c.errf(p+".name", "Invalid value: %q: port name must be a DNS-1123 label", port.Name)
		}
		names[port.Name] = true
		portNames[port.Name] = true
		if port.Number < 1 || port.Number > 65535 {
			c.errf(p+".number", "Invalid value: %d: port must be between 1-65535", port.Number)
		} else if numbers[port.Number] {
			c.errf(p+".number", "Invalid value: %d: port number cannot be duplicated", port.Number)
		}
		numbers[port.Number] = true
		if port.TargetPort != 0 {
			c.port(p+".targetPort", port.TargetPort, false)
		}
		if port.Protocol != "" && !protocols[strings.ToUpper(port.Protocol)] {
			c.errf(p+".protocol", "Unsupported value: %q: supported protocols are %s", port.Protocol, protocolList)
		}
	}
	if se.WorkloadSelector != nil {
		if len(se.Endpoints) > 0 {
			c.errf("spec", "Invalid value: only one of WorkloadSelector or Endpoints can be set")
		}
		c.selector("spec.workloadSelector.labels", se.WorkloadSelector.Labels)
	}
	switch se.Resolution {
	case networking.ServiceEntry_NONE:
		if len(se.Endpoints) > 0 {
			c.errf("spec.endpoints", "Invalid value: NONE mode cannot set endpoints")
		}
	case networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(se.Endpoints) > 1 {
			c.errf("spec.endpoints", "Invalid value: DNS_ROUND_ROBIN mode cannot have multiple endpoints")
		}
	}
	for i, ep := range se.Endpoints {
		p := fmt.Sprintf("spec.endpoints[%d]", i)
		if ep == nil {
			c.errf(p, "Required value")
			continue
		}
		c.workloadEntry(p, ep)
		if se.Resolution == networking.ServiceEntry_STATIC && ep.Address != "" && !strings.HasPrefix(ep.Address, "unix://") {
			if _, err := netip.ParseAddr(ep.Address); err != nil {
				c.errf(p+".address", "Invalid value: %q: STATIC resolution requires an IP address", ep.Address)
			}
		}
		for _, name := range sortedKeys(ep.Ports) {
			if !portNames[name] {
				c.errf(fmt.Sprintf("%s.ports[%s]", p, name), "Invalid value: endpoint port %q is not defined by the service entry", name)
			}
		}
	}
}

// workloadEntry checks a WorkloadEntry spec, or a ServiceEntry endpoint at
// path p (Istio's ValidateWorkloadEntry).
func (c *checker) workloadEntry(p string, we *networking.WorkloadEntry) {
	addr := we.Address
	switch {
	case addr == "":
		if we.Network == "" {
			c.errf(p+".address", "Required value: Address is required")
		}
	case strings.HasPrefix(addr, "unix://"):
		if len(we.Ports) > 0 {
			c.errf(p+".ports", "Invalid value: UDS may not include ports")
		}
		path := strings.TrimPrefix(addr, "unix://")
		if strings.HasSuffix(path, "/") {
			c.errf(p+".address", "Invalid value: %q: UDS may not be a dir", addr)
		} else if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
			c.errf(p+".address", "Invalid value: %q: UDS must be an absolute path or abstract socket", addr)
		}
	default:
		if _, err := netip.ParseAddr(addr); err != nil {
			if msg := fqdn(addr); msg != "" {
				c.errf(p+".address", "Invalid value: %q: must be an IP address, a host name or unix://PATH: %s", addr, msg)
			}
		}
	}
	for _, name := range sortedKeys(we.Ports) {
		pp := fmt.Sprintf("%s.ports[%s]", p, name)
		if !isPortName(name) {
			c.errf(pp, "Invalid value: %q: port name must be a DNS-1123 label", name)
		}
		if n := we.Ports[name]; n < 1 || n > 65535 {
			c.errf(pp, "Invalid value: %d: port must be between 1-65535", n)
		}
	}
	c.labels(p+".labels", we.Labels)
	if we.ServiceAccount != "" {
		if msg := dns1123Subdomain(we.ServiceAccount); msg != "" {
			c.errf(p+".serviceAccount", "Invalid value: %q: %s", we.ServiceAccount, msg)
		}
	}
}

// Shared field checks.

func (c *checker) port(p string, n uint32, optional bool) {
	if optional && n == 0 {
		return
	}
	if n < 1 || n > 65535 {
		c.errf(p, "Invalid value: %d: port must be between 1-65535", n)
	}
}

func (c *checker) subnets(p string, ss []string) {
	for i, s := range ss {
		if _, err := netip.ParsePrefix(s); err != nil {
			if _, err := netip.ParseAddr(s); err != nil {
				c.errf(fmt.Sprintf("%s[%d]", p, i), "Invalid value: %q: must be an IP address or a CIDR range", s)
			}
		}
	}
}

// duration checks an optional duration as Istio's ValidateDuration does:
// positive, at least 1ms, in whole milliseconds.
func (c *checker) duration(p string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		c.errf(p, "Invalid value: %v", err)
		return
	}
	dur := d.AsDuration()
	switch {
	case dur <= 0:
		c.errf(p, "Invalid value: %s: duration must be positive", dur)
	case dur < time.Millisecond:
		c.errf(p, "Invalid value: %s: duration must be at least 1ms", dur)
	case dur%time.Millisecond != 0:
		c.errf(p, "Invalid value: %s: only durations to ms precision are supported", dur)
	}
}

func (c *checker) percent(p string, pc *networking.Percent) {
	if pc != nil && (pc.Value < 0 || pc.Value > 100) {
		c.errf(p, "Invalid value: %v: percentage must be between 0 and 100", pc.Value)
	}
}

// labels checks Kubernetes label keys and values.
func (c *checker) labels(p string, ls map[string]string) {
	for _, k := range sortedKeys(ls) {
		if msg := labelKey(k); msg != "" {
			c.errf(fmt.Sprintf("%s[%s]", p, k), "Invalid value: %q: %s", k, msg)
			continue
		}
		if v := ls[k]; v != "" && !labelValueRE.MatchString(v) {
			c.errf(fmt.Sprintf("%s[%s]", p, k), "Invalid value: %q: a label value must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v)
		}
	}
}

// selector checks workload selector labels, where Istio refuses wildcards.
func (c *checker) selector(p string, ls map[string]string) {
	rest := make(map[string]string, len(ls))
	for _, k := range sortedKeys(ls) {
		if strings.Contains(k, "*") || strings.Contains(ls[k], "*") {
			c.errf(fmt.Sprintf("%s[%s]", p, k), "Invalid value: wildcard is not supported in selector")
			continue
		}
		rest[k] = ls[k]
	}
	c.labels(p, rest)
}

var (
	dns1123LabelRE = regexp.MustCompile(`^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
	lowerLabelRE   = regexp.MustCompile(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$`)
	subdomainRE    = regexp.MustCompile(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$`)
	labelValueRE   = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$`)
	headerNameRE   = regexp.MustCompile("^:?[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// isDNS1123Label reports whether s is a lowercase DNS-1123 label, as
// Kubernetes requires of namespaces and Istio of subset names.
func isDNS1123Label(s string) bool { return len(s) <= 63 && lowerLabelRE.MatchString(s) }

func isPortName(s string) bool { return len(s) <= 63 && lowerLabelRE.MatchString(s) }

func isHeaderName(s string) bool { return headerNameRE.MatchString(s) }

func dns1123Subdomain(s string) string {
	if s == "" {
		return "Required value"
	}
	if len(s) > 253 || !subdomainRE.MatchString(s) {
		return "must be a lowercase DNS-1123 subdomain (letters, digits, '-' and '.')"
	}
	return ""
}

func labelKey(k string) string {
	prefix, name, ok := strings.Cut(k, "/")
	if !ok {
		name, prefix = prefix, ""
	} else if msg := dns1123Subdomain(prefix); msg != "" {
		return "label key prefix " + msg
	}
	if name == "" || !labelValueRE.MatchString(name) {
		return "a label key name must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
	}
	return ""
}

// fqdn checks a host name of DNS-1123 labels (letters of either case, as
// Istio's ValidateFQDN allows).
func fqdn(h string) string {
	if len(h) > 255 {
		return "domain name too long (max 255)"
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return "empty domain name"
	}
	for _, l := range strings.Split(h, ".") {
		if len(l) > 63 || !dns1123LabelRE.MatchString(l) {
			return fmt.Sprintf("domain name label %q is not a DNS-1123 label", l)
		}
	}
	return ""
}

// wildcardDomain checks "*", "*.example.com" or "example.com" (Istio's
// ValidateWildcardDomain).
func wildcardDomain(h string) string {
	if h == "*" {
		return ""
	}
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		return fqdn(rest)
	}
	if h == "" {
		return "empty host name"
	}
	return fqdn(h)
}

func wildcardDomainOrIP(h string) string {
	if _, err := netip.ParseAddr(h); err == nil {
		return ""
	}
	return wildcardDomain(h)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// grpcStatusCodes are the gRPC status names Istio accepts in
// HTTPFaultInjection.Abort.grpcStatus, as grpc's doc/statuscodes.md
// spells them, with their codes.
var grpcStatusCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3,
	"DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5, "ALREADY_EXISTS": 6,
	"PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
	"ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13,
	"UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// GRPCStatusCode returns the code of an Abort.grpcStatus: one of Istio's
// names ("UNAVAILABLE") or, beyond Istio, a decimal code 0-16 ("14").
func GRPCStatusCode(s string) (uint32, bool) {
	if c, ok := grpcStatusCodes[s]; ok {
		return c, true
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil && n <= 16 && s == strconv.FormatUint(n, 10) {
		return uint32(n), true
	}
	return 0, false
}

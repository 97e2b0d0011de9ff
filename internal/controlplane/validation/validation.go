package validation

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
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
		c.exportTo("spec.exportTo", spec.ExportTo, false)
	case *networking.DestinationRule:
		c.destinationRule(spec)
		c.exportTo("spec.exportTo", spec.ExportTo, false)
	case *networking.Gateway:
		c.gateway(spec)
	case *networking.ServiceEntry:
		c.serviceEntry(spec)
		c.exportTo("spec.exportTo", spec.ExportTo, true)
	case *networking.WorkloadEntry:
		c.workloadEntry("spec", spec)
	case *networking.Sidecar:
		c.sidecar(spec)
	case *networking.EnvoyFilter:
		c.envoyFilter(spec)
	case *security.AuthorizationPolicy:
		c.authorizationPolicy(spec)
	case *security.PeerAuthentication:
		c.peerAuthentication(spec)
	case *security.RequestAuthentication:
		c.requestAuthentication(spec)
	case *telemetry.Telemetry:
		c.telemetry(spec)
	case *loomv1alpha1.RateLimitPolicy:
		c.rateLimitPolicy(spec)
	case *loomv1alpha1.KubernetesSecret:
		c.kubernetesSecret(spec)
	case *loomv1alpha1.KubernetesService:
		c.kubernetesService(spec)
		c.exportTo("metadata.annotations[networking.istio.io/exportTo]", registry.KubeExportTo(r.Annotations), true)
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

// VirtualService (Istio's validateVirtualService). One without hosts is a
// delegate: used only through a root's http[].delegate, it must set no
// gateways, tcp or tls, and may not delegate further (one level only).

func (c *checker) virtualService(vs *networking.VirtualService) {
	delegate := len(vs.Hosts) == 0
	if delegate {
		if len(vs.Gateways) > 0 {
			c.errf("spec.gateways", "Invalid value: a delegate VirtualService (one without hosts) must have no gateways; the root's apply")
		}
		if len(vs.Tcp) > 0 {
			c.errf("spec.tcp", "Invalid value: a delegate VirtualService (one without hosts) must have no tcp routes")
		}
		if len(vs.Tls) > 0 {
			c.errf("spec.tls", "Invalid value: a delegate VirtualService (one without hosts) must have no tls routes")
		}
	}
	// Istio's ValidateVirtualService: "*" does not apply to the mesh
	// gateway (a sidecar's every outbound route would be this one), and
	// no host may match another of the same VirtualService.
	appliesToMesh := len(vs.Gateways) == 0 || slices.Contains(vs.Gateways, "mesh")
	allValid := true
	for i, h := range vs.Hosts {
		if msg := wildcardDomainOrIP(h); msg != "" {
			c.errf(fmt.Sprintf("spec.hosts[%d]", i), "Invalid value: %q: %s", h, msg)
			allValid = false
		} else if appliesToMesh && h == "*" {
			c.errf(fmt.Sprintf("spec.hosts[%d]", i), "Invalid value: %q: wildcard host * is not allowed for virtual services bound to the mesh gateway", h)
			allValid = false
		}
	}
	for i := 0; allValid && i < len(vs.Hosts); i++ {
		for j := i + 1; j < len(vs.Hosts); j++ {
			if hostsOverlap(vs.Hosts[i], vs.Hosts[j]) {
				c.errf(fmt.Sprintf("spec.hosts[%d]", j), "Duplicate value: %q: duplicate hosts in virtual service: %s & %s", vs.Hosts[j], vs.Hosts[i], vs.Hosts[j])
			}
		}
	}
	c.gatewayNames("spec.gateways", vs.Gateways)
	if len(vs.Http) == 0 && len(vs.Tcp) == 0 && len(vs.Tls) == 0 {
		c.errf("spec", "http, tcp or tls must be provided in virtual service")
	}
	for i, h := range vs.Http {
		p := fmt.Sprintf("spec.http[%d]", i)
		c.httpRoute(p, h)
		if delegate && h.Delegate != nil {
			c.errf(p+".delegate", "Invalid value: a delegate VirtualService (one without hosts) cannot delegate further: only one level of delegation is allowed")
		}
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

// kubernetesSecret checks a Secret meant as a TLS credential
// (config.IsCredential) with config.ParseCredential; other Secrets are
// not Loom's to judge. Messages never hold a value.
func (c *checker) kubernetesSecret(s *loomv1alpha1.KubernetesSecret) {
	if !config.IsCredential(s) {
		return
	}
	if _, err := config.ParseCredential(s); err != nil {
		var ce *config.CredentialError
		if errors.As(err, &ce) {
			c.errf(ce.Field, "%s", ce.Msg)
			return
		}
		c.errf("data", "%v", err)
	}
}

// Unsupported is the message of a field Loom accepts in Istio's schema but
// does not serve yet, where ignoring it would change what happens to a
// request: the resource is refused rather than misrouting traffic.
const Unsupported = "not supported by this version of Loom"

func (c *checker) unsupported(field string) { c.errf(field, "%s", Unsupported) }

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
		c.faultPercent(p+".abort.percentage.value", a.Percentage)
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
		c.faultPercent(p+".delay.percentage.value", d.Percentage)
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
// retry_on list, internal/dataplane/config): those of Istio's
// supportedRetryOnPolicies but http3-post-connect-failure. An HTTP status
// 100-599 is accepted too and becomes a retriable status code.
var supportedRetryOn = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "reset-before-request": true, "connect-failure": true,
	"retriable-4xx": true, "refused-stream": true, "retriable-status-codes": true,
	"unavailable": true, "cancelled": true, "deadline-exceeded": true,
	"internal": true, "resource-exhausted": true, "envoy-ratelimited": true, "retriable-headers": true,
}

const supportedRetryOnList = `"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", ` +
	`"refused-stream", "retriable-status-codes", "envoy-ratelimited", "retriable-headers", "unavailable", "cancelled", ` +
	`"deadline-exceeded", "internal", "resource-exhausted" or an HTTP status 100-599`

// retryOn checks HTTPRetry.retryOn, a comma-separated list: the proxy
// NACKs a whole route update with a condition it does not know.
// http3-post-connect-failure, which Istio accepts, is refused as
// Unsupported: it retries a request that failed on an HTTP/3 connection
// over TCP, and loom-proxy opens no HTTP/3 connection upstream.
func (c *checker) retryOn(p, on string) {
	for _, s := range strings.Split(on, ",") {
		s = strings.TrimSpace(s)
		if s == "" || supportedRetryOn[s] {
			continue
		}
		if s == "http3-post-connect-failure" {
			c.errf(p, "Unsupported value: %q: %s (loom-proxy speaks no HTTP/3 upstream, so no request fails over from it)", s, Unsupported)
			continue
		}
		if n, err := strconv.Atoi(s); err == nil && n >= 100 && n <= 599 {
			continue
		}
		c.errf(p, "Unsupported value: %q: supported values: %s", s, supportedRetryOnList)
	}
}

func (c *checker) httpRoute(p string, h *networking.HTTPRoute) {
	n := 0
	for _, set := range []bool{len(h.Route) > 0, h.Redirect != nil, h.DirectResponse != nil, h.Delegate != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		c.errf(p, "Required value: an HTTP route must have one of route, redirect, directResponse or delegate")
	case n > 1 && h.Delegate != nil:
		// Istio's validateRootHTTPRoute: the delegate's routes say where
		// requests go.
		for _, f := range []struct {
			name string
			set  bool
		}{{"route", len(h.Route) > 0}, {"redirect", h.Redirect != nil}, {"directResponse", h.DirectResponse != nil}} {
			if f.set {
				c.errf(p+"."+f.name, "Invalid value: a route with delegate must not set %s: the delegate's routes decide where requests go", f.name)
			}
		}
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
		if ns := m.SourceNamespace; ns != "" && !isDNS1123Label(ns) {
			c.errf(mp+".sourceNamespace", "Invalid value: %q: must be a DNS-1123 label", ns)
		}
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
	c.redirect(p+".redirect", h.Redirect)
	if h.Redirect != nil {
		if h.Fault != nil {
			c.errf(p+".fault", "Invalid value: HTTP route cannot contain both fault and redirect")
		}
		if h.Rewrite != nil {
			c.errf(p+".rewrite", "Invalid value: HTTP route rule cannot contain both rewrite and redirect")
		}
	}
	if h.DirectResponse != nil {
		// Istio's validateHTTPRouteConflict.
		if h.Fault != nil {
			c.errf(p+".fault", "Invalid value: directResponse cannot be used with fault")
		}
		if h.Rewrite != nil {
			c.errf(p+".rewrite", "Invalid value: directResponse cannot be used with rewrite")
		}
	}
	if h.Mirror != nil && len(h.Mirrors) > 0 {
		c.errf(p+".mirrors", "Invalid value: HTTP route cannot contain both mirror and mirrors")
	}
	c.directResponse(p+".directResponse", h.DirectResponse)
	c.rewrite(p+".rewrite", h.Rewrite)
	c.authorityOnce(p, h.Rewrite, h.Headers)
	c.duration(p+".timeout", h.Timeout)
	c.retries(p+".retries", h.Retries)
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
		switch {
		case m == nil:
			c.errf(mp, "Required value: mirror cannot be null")
		case m.Destination == nil:
			c.errf(mp+".destination", "Required value: destination is required for mirrors")
		default:
			c.destination(mp+".destination", m.Destination)
		}
		c.percent(mp+".percentage.value", m.GetPercentage())
	}
	c.corsPolicy(p+".corsPolicy", h.CorsPolicy)
	c.headerOps(p+".headers", h.Headers)
}

// redirect checks HTTPRoute.redirect as Istio's validateHTTPRedirect:
// something to redirect to, uri or prefixRewrite, scheme "http" or
// "https", a valid port, and a redirectCode Envoy can send (Istio accepts
// any 3xx but then drops the route's action for the others).
func (c *checker) redirect(p string, r *networking.HTTPRedirect) {
	if r == nil {
		return
	}
	if r.Uri == "" && r.Authority == "" && r.RedirectPort == nil && r.Scheme == "" && r.PrefixRewrite == "" {
		c.errf(p, "Invalid value: redirect must specify uri, authority, scheme, port or prefixRewrite")
	}
	if r.Uri != "" && r.PrefixRewrite != "" {
		c.errf(p, "Invalid value: only one of uri or prefixRewrite may be set")
	}
	switch code := r.RedirectCode; {
	case code == 0 || code == 301 || code == 302 || code == 303 || code == 307 || code == 308:
	case code < 300 || code > 399:
		c.errf(p+".redirectCode", "Invalid value: %d: %d is not a valid redirect code, must be 3xx", code, code)
	default:
		c.errf(p+".redirectCode", "Unsupported value: %d: supported values: 301, 302, 303, 307, 308", code)
	}
	if r.Scheme != "" && r.Scheme != "http" && r.Scheme != "https" {
		c.errf(p+".scheme", `Unsupported value: %q: invalid redirect scheme, must be "http" or "https"`, r.Scheme)
	}
	if pt, ok := r.RedirectPort.(*networking.HTTPRedirect_Port); ok {
		c.port(p+".port", pt.Port, false)
	}
}

// maxDirectResponseBody is Istio's limit on an inline directResponse body.
const maxDirectResponseBody = 1 << 20

// directResponse checks HTTPRoute.directResponse as Istio's
// validateHTTPDirectResponse: a status 200-599 and a body under 1 MiB.
func (c *checker) directResponse(p string, d *networking.HTTPDirectResponse) {
	if d == nil {
		return
	}
	if d.Status < 200 || d.Status > 599 {
		c.errf(p+".status", "Invalid value: %d: must be between 200 and 599", d.Status)
	}
	size := 0
	switch b := d.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		size = len(b.String_)
	case *networking.HTTPBody_Bytes:
		size = len(b.Bytes)
	}
	if size > maxDirectResponseBody {
		c.errf(p+".body", "Invalid value: large direct_responses may impact control plane performance, must be less than 1MB")
	}
}

// rewrite checks HTTPRoute.rewrite as Istio's validateHTTPRewrite: uri or
// uriRegexRewrite (not both) or authority, and a uriRegexRewrite with both
// fields and an RE2 match.
func (c *checker) rewrite(p string, rw *networking.HTTPRewrite) {
	if rw == nil {
		return
	}
	if rw.Uri != "" && rw.UriRegexRewrite != nil {
		c.errf(p, "Invalid value: rewrite may only contain one of uri or uriRegexRewrite")
	}
	if rw.Uri == "" && rw.UriRegexRewrite == nil && rw.Authority == "" {
		c.errf(p, "Invalid value: rewrite must specify at least one of uri, uriRegexRewrite or authority")
	}
	if rr := rw.UriRegexRewrite; rr != nil {
		if rr.Match == "" {
			c.errf(p+".uriRegexRewrite.match", "Required value: uriRegexRewrite requires both rewrite and match")
		} else {
			c.regex(p+".uriRegexRewrite.match", rr.Match)
		}
		if rr.Rewrite == "" {
			c.errf(p+".uriRegexRewrite.rewrite", "Required value: uriRegexRewrite requires both rewrite and match")
		}
	}
}

// authorityOnce applies Istio's validateAuthorityRewrite: the authority is
// rewritten in one place only, rewrite.authority or one request set/add of
// ":authority" or "host".
func (c *checker) authorityOnce(p string, rw *networking.HTTPRewrite, h *networking.Headers) {
	current := rw.GetAuthority()
	for _, op := range []struct {
		name string
		m    map[string]string
	}{{"set", h.GetRequest().GetSet()}, {"add", h.GetRequest().GetAdd()}} {
		for _, k := range sortedKeys(op.m) {
			if !isAuthorityHeader(k) {
				continue
			}
			if current != "" {
				c.errf(fmt.Sprintf("%s.headers.request.%s[%s]", p, op.name, k),
					"Invalid value: authority header cannot be set multiple times: have %q, attempting to set %q", current, op.m[k])
				continue
			}
			current = op.m[k]
		}
	}
}

// retries checks HTTPRoute.retries as Istio's validateHTTPRetry.
func (c *checker) retries(p string, r *networking.HTTPRetry) {
	if r == nil {
		return
	}
	if r.Attempts < 0 {
		c.errf(p+".attempts", "Invalid value: %d: attempts cannot be negative", r.Attempts)
	}
	if r.Attempts == 0 && (r.PerTryTimeout != nil || r.RetryOn != "" || r.RetryRemoteLocalities != nil) {
		c.errf(p, "Invalid value: http retry policy configured when attempts are set to 0 (disabled)")
	}
	c.retryOn(p+".retryOn", r.RetryOn)
	c.duration(p+".perTryTimeout", r.PerTryTimeout)
	c.duration(p+".backoff", r.Backoff)
}

// corsMethods are the allowMethods Istio accepts.
var corsMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true, "*": true,
}

// corsPolicy checks HTTPRoute.corsPolicy as Istio's validateCORSPolicy:
// each allowOrigins entry a non-empty exact, prefix or regex; methods
// Istio knows; header names valid or "*"; maxAge in whole seconds.
func (c *checker) corsPolicy(p string, cp *networking.CorsPolicy) {
	if cp == nil {
		return
	}
	for i, o := range cp.AllowOrigins {
		op := fmt.Sprintf("%s.allowOrigins[%d]", p, i)
		var v string
		switch t := o.GetMatchType().(type) {
		case *networking.StringMatch_Exact:
			v = t.Exact
		case *networking.StringMatch_Prefix:
			v = t.Prefix
		case *networking.StringMatch_Regex:
			v = t.Regex
		}
		if v == "" {
			c.errf(op, "Invalid value: %q is not a valid match type for CORS allow origins", v)
			continue
		}
		c.stringMatch(op, o, false)
	}
	for i, m := range cp.AllowMethods {
		if !corsMethods[m] {
			c.errf(fmt.Sprintf("%s.allowMethods[%d]", p, i), "Unsupported value: %q: %q is not a supported HTTP method", m, m)
		}
	}
	for _, hs := range []struct {
		name  string
		names []string
	}{{"allowHeaders", cp.AllowHeaders}, {"exposeHeaders", cp.ExposeHeaders}} {
		for i, n := range hs.names {
			if n != "*" && !isHeaderName(n) {
				c.errf(fmt.Sprintf("%s.%s[%d]", p, hs.name, i), "Invalid value: %q: invalid header name", n)
			}
		}
	}
	if cp.MaxAge != nil {
		c.duration(p+".maxAge", cp.MaxAge)
		if cp.MaxAge.Nanos > 0 {
			c.errf(p+".maxAge", "Invalid value: %s: max_age duration is accurate only to seconds precision", cp.MaxAge.AsDuration())
		}
	}
}

// isAuthorityHeader reports whether a header operation names the
// authority, which Envoy rewrites rather than sets.
func isAuthorityHeader(k string) bool {
	return strings.EqualFold(k, ":authority") || strings.EqualFold(k, "host")
}

// headerOps checks an HTTPRoute's or a destination's headers as Istio's
// ValidateHTTPHeader*OperationName: valid header names; a pseudo-header
// (":name") or "host" may be set or added on requests only as the
// authority (":authority" or "host"), and never removed or set on
// responses, as Envoy refuses to modify them.
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
				fp := fmt.Sprintf("%s.%s.%s[%s]", p, op.name, m.name, k)
				switch {
				case !isHeaderName(k):
					c.errf(fp, "Invalid value: %q: invalid header name", k)
				case op.name == "request" && isAuthorityHeader(k):
				case isInternalHeader(k):
					c.errf(fp, "Invalid value: %q: invalid header: pseudo-headers and host cannot be modified", k)
				}
				c.headerValue(fp, m.m[k])
			}
		}
		for i, k := range op.ops.Remove {
			fp := fmt.Sprintf("%s.%s.remove[%d]", p, op.name, i)
			switch {
			case !isHeaderName(k):
				c.errf(fp, "Invalid value: %q: invalid header name", k)
			case isInternalHeader(k):
				c.errf(fp, "Invalid value: %q: invalid header: pseudo-headers and host cannot be modified", k)
			}
		}
	}
}

// headerValue checks a header value to set or add. Envoy reads "%...%"
// in a value as a substitution command (%DOWNSTREAM_REMOTE_ADDRESS% and
// others), which this version of Loom does not implement, and a lone "%"
// as malformed (Istio's ValidateHTTPHeaderValue); "%%" is a literal "%".
func (c *checker) headerValue(p, v string) {
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			i++
			continue
		}
		if j := strings.IndexByte(v[i+1:], '%'); j > 0 {
			c.errf(p, "Invalid value: %q: the substitution %s is %s (write %%%% for a literal %%)", v, v[i:i+j+2], Unsupported)
		} else {
			c.errf(p, "Invalid value: %q: a lone %% must be written %%%%", v)
		}
		return
	}
}

// isInternalHeader reports whether Envoy refuses to modify header k: a
// pseudo-header or "host".
func isInternalHeader(k string) bool {
	return strings.HasPrefix(k, ":") || strings.EqualFold(k, "host")
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

// weights applies Istio's rule (validateHTTPRouteDestinations): weights
// are relative, a destination getting weight/sum of the traffic, so each
// is at least 0 and, with more than one destination, they must not all be
// 0. Their sum must also fit Envoy's weighted_clusters (a uint32), which
// Istio leaves to Envoy to refuse.
func (c *checker) weights(p string, ws []int32) {
	var total int64
	ok := true
	for i, w := range ws {
		if w < 0 {
			c.errf(fmt.Sprintf("%s.route[%d].weight", p, i), "Invalid value: %d: must not be negative", w)
			ok = false
		}
		total += int64(w)
	}
	switch {
	case !ok:
	case len(ws) > 1 && total == 0:
		c.errf(p+".route", "Invalid value: total destination weight = 0")
	case total > math.MaxUint32:
		c.errf(p+".route", "Invalid value: total destination weight %d: must be at most %d", total, uint32(math.MaxUint32))
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
		if claims, ok := JWTClaimRoute(k); ok {
			c.claimMatch(fp, k, claims, m[k])
			continue
		}
		if !isHeaderName(k) {
			c.errf(fp, "Invalid value: %q: invalid header name", k)
		}
		c.stringMatch(fp, m[k], true)
	}
}

// claimMatch checks a match on the JWT claim at path claims (Istio's
// ValidateHTTPHeaderNameOrJwtClaimRoute accepts any such key). Istio
// leaves an empty claim name, and a match without a value, to Envoy, which
// refuses the metadata matcher they make (an empty path key, a string
// matcher without a pattern); Loom refuses them here.
func (c *checker) claimMatch(p, key string, claims []string, m *networking.StringMatch) {
	if slices.Contains(claims, "") {
		c.errf(p, "Invalid value: %q: a JWT claim name must not be empty", key)
	}
	switch t := m.GetMatchType().(type) {
	case nil:
		c.errf(p, "Invalid value: a JWT claim match must set exact, prefix or regex (presence is not supported)")
		return
	case *networking.StringMatch_Prefix:
		if t.Prefix == "" {
			c.errf(p+".prefix", "Invalid value: a JWT claim match must not have an empty prefix")
		}
	}
	c.stringMatch(p, m, false)
}

// HeaderJWTClaim is the prefix of a VirtualService headers or
// withoutHeaders key that matches a claim of the request's verified JWT
// rather than a header (Istio's jwt.HeaderJWTClaim), compared in any case.
const HeaderJWTClaim = "@request.auth.claims"

// JWTClaimRoute reads key as Istio's jwt.ToRoutingClaim: the claim path of
// "@request.auth.claims.a.b" (split on ".") or "@request.auth.claims[a][b]"
// (split on "]["), with HeaderJWTClaim in any case; ok is false for any
// other key. Claim names keep their case and nothing is unescaped, so a
// claim whose name holds "." needs the bracket form. An empty name
// ("@request.auth.claims.") is returned as "" for the caller to refuse.
func JWTClaimRoute(key string) (claims []string, ok bool) {
	if len(key) < len(HeaderJWTClaim) || !strings.EqualFold(key[:len(HeaderJWTClaim)], HeaderJWTClaim) {
		return nil, false
	}
	rest := key[len(HeaderJWTClaim):]
	switch {
	case strings.HasPrefix(rest, "."):
		return strings.Split(rest[1:], "."), true
	case len(rest) >= 2 && rest[0] == '[' && rest[len(rest)-1] == ']':
		return strings.Split(rest[1:len(rest)-1], "]["), true
	}
	return nil, false
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
		} else {
			c.regex(p+".regex", t.Regex)
		}
	}
}

// hostsOverlap reports whether a and b match each other as Istio's
// host.Name.Matches: equal, or a wildcard ("*.foo.com", "*") whose suffix
// the other name ends with ("a.foo.com", "*.b.foo.com").
func hostsOverlap(a, b string) bool {
	aw, bw := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	switch {
	case aw && bw:
		if len(a) < len(b) {
			return strings.HasSuffix(b[1:], a[1:])
		}
		return strings.HasSuffix(a[1:], b[1:])
	case aw:
		return strings.HasSuffix(b, a[1:])
	case bw:
		return strings.HasSuffix(a, b[1:])
	}
	return a == b
}

// maxRegexLen is Istio's bound on a regex's length (validateStringRegexp):
// it stands in for Envoy's re2 max_program_size, which is always larger
// than the length.
const maxRegexLen = 1024

// regex checks a non-empty RE2 regular expression as Istio's
// validateStringRegexp: at most 1024 bytes, and compilable.
func (c *checker) regex(p, re string) {
	if len(re) > maxRegexLen {
		c.errf(p, "Invalid value: regex is too large (%d bytes), max length allowed is %d", len(re), maxRegexLen)
		return
	}
	if _, err := regexp.Compile(re); err != nil {
		c.errf(p, "Invalid value: %q: not an RE2 regular expression: %v", re, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
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

// Gateway (Istio's ValidateGateway).

var protocols = map[string]bool{
	"HTTP": true, "HTTPS": true, "HTTP2": true, "GRPC": true, "GRPC-WEB": true, "HTTP_PROXY": true,
	"TCP": true, "TLS": true, "UDP": true, "MONGO": true, "REDIS": true, "MYSQL": true,
}

const protocolList = "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL"

// gatewayProtocols are the Gateway server protocols the translator serves:
// HTTP of any version, HTTPS, TLS, and what is proxied as TCP. UDP and
// HTTP_PROXY would get no listener.
var gatewayProtocols = map[string]bool{"HTTP": true, "HTTP2": true, "GRPC": true, "GRPC-WEB": true,
	"HTTPS": true, "TLS": true, "TCP": true, "MONGO": true, "REDIS": true, "MYSQL": true}

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
			if s.Port.Number > 0 || !strings.HasPrefix(s.Bind, registry.UnixAddressPrefix) {
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
			c.serverTLS(p+".tls", s)
		}
	}
	c.labels("spec.selector", gw.Selector)
}

// serverTLS checks a Gateway server's tls as Istio's validateTLSOptions
// and validateServerTLS, and refuses what the translator does not serve.
func (c *checker) serverTLS(p string, s *networking.Server) {
	t := s.Tls
	proto := ""
	if s.Port != nil {
		proto = strings.ToUpper(s.Port.Protocol)
	}
	if t.HttpsRedirect {
		if proto != "HTTP" && proto != "" && gatewayProtocols[proto] && proto != "HTTP2" && proto != "GRPC" && proto != "GRPC-WEB" {
			// Istio only redirects plain-text HTTP servers; elsewhere
			// the flag would be ignored.
			c.errf(p+".httpsRedirect", "Invalid value: true: httpsRedirect applies to HTTP servers only (protocol %s)", s.Port.Protocol)
		}
		if t.Mode == networking.ServerTLSSettings_PASSTHROUGH && !isTLSProtocol(proto) {
			return // httpsRedirect alone: mode unset
		}
	}
	if !t.HttpsRedirect && !isTLSProtocol(proto) && proto != "" {
		c.errf(p, "Invalid value: TLS settings on a %s server: only HTTPS and TLS servers terminate or pass TLS (httpsRedirect aside)", s.Port.Protocol)
		return
	}
	switch t.Mode {
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		hasCred := t.CredentialName != "" || len(t.CredentialNames) > 0 || len(t.TlsCertificates) > 0
		if !hasCred {
			if t.ServerCertificate == "" {
				c.errf(p+".serverCertificate", "Required value: %s mode requires a server certificate or credentialName", t.Mode)
			}
			if t.PrivateKey == "" {
				c.errf(p+".privateKey", "Required value: %s mode requires a private key or credentialName", t.Mode)
			}
			if t.Mode != networking.ServerTLSSettings_SIMPLE && t.CaCertificates == "" && t.CaCertCredentialName == "" {
				c.errf(p+".caCertificates", "Required value: %s mode requires caCertificates or credentialName", t.Mode)
			}
		} else if t.ServerCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "" {
			c.errf(p+".credentialName", "Invalid value: %q: credentialName and serverCertificate, privateKey or caCertificates are mutually exclusive", t.CredentialName)
		}
		if t.CredentialName != "" {
			if msg := dns1123Subdomain(t.CredentialName); msg != "" && !strings.Contains(t.CredentialName, "/") {
				c.errf(p+".credentialName", "Invalid value: %q: %s", t.CredentialName, msg)
			} else if strings.Contains(t.CredentialName, "/") {
				c.errf(p+".credentialName", "Invalid value: %q: a credential in another namespace is %s (the Secret must be in the Gateway's namespace)", t.CredentialName, Unsupported)
			}
		}
	case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		if t.ServerCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "" || t.CredentialName != "" {
			c.errf(p+".mode", "Invalid value: %s: a server that does not terminate TLS takes no certificates", t.Mode)
		}
		if t.Mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH && proto != "TLS" {
			c.errf(p+".mode", "Invalid value: AUTO_PASSTHROUGH: requires protocol TLS")
		}
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		if t.ServerCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "" || t.CredentialName != "" {
			c.errf(p+".mode", "Invalid value: ISTIO_MUTUAL: uses the proxy's own certificate; serverCertificate, privateKey, caCertificates and credentialName must be empty")
		}
	}
	if len(t.CredentialNames) > 0 {
		c.errf(p+".credentialNames", "%s (use credentialName)", Unsupported)
	}
	if len(t.TlsCertificates) > 0 {
		c.errf(p+".tlsCertificates", "%s (use serverCertificate and privateKey)", Unsupported)
	}
	c.tlsOptions(p, t)
}

// tlsOptions checks the ServerTLSSettings fields a Gateway server and a
// Sidecar ingress listener share beyond mode and certificates: it refuses
// what the translator does not serve (caCrl, SPKI and hash pinning,
// insecureSkipVerify) and checks versions, cipher suites and curves.
func (c *checker) tlsOptions(p string, t *networking.ServerTLSSettings) {
	if t.CaCrl != "" {
		c.unsupported(p + ".caCrl")
	}
	if len(t.VerifyCertificateSpki) > 0 {
		c.unsupported(p + ".verifyCertificateSpki")
	}
	if len(t.VerifyCertificateHash) > 0 {
		c.unsupported(p + ".verifyCertificateHash")
	}
	if t.InsecureSkipVerify != nil {
		c.unsupported(p + ".insecureSkipVerify")
	}
	if t.MinProtocolVersion != 0 && t.MaxProtocolVersion != 0 && t.MaxProtocolVersion < t.MinProtocolVersion {
		c.errf(p+".maxProtocolVersion", "Invalid value: %s: below minProtocolVersion %s", t.MaxProtocolVersion, t.MinProtocolVersion)
	}
	for i, cs := range t.CipherSuites {
		// "[A|B]" is BoringSSL's equal-preference group.
		for name := range strings.SplitSeq(strings.Trim(cs, "[]"), "|") {
			if !tlsCipherSuites[name] {
				c.errf(fmt.Sprintf("%s.cipherSuites[%d]", p, i), "Unsupported value: %q: supported cipher suites are those of Envoy that Go's crypto/tls has (%s)", cs, cipherSuiteList)
				break
			}
		}
	}
	for i, cv := range t.EcdhCurves {
		switch cv {
		case "X25519", "P-256", "P-384", "P-521", "X25519MLKEM768":
		default:
			c.errf(fmt.Sprintf("%s.ecdhCurves[%d]", p, i), `Unsupported value: %q: supported values: "X25519", "P-256", "P-384", "P-521", "X25519MLKEM768"`, cv)
		}
	}
}

// isTLSProtocol reports whether a server protocol carries TLS.
func isTLSProtocol(proto string) bool { return proto == "HTTPS" || proto == "TLS" }

// tlsCipherSuites are the BoringSSL names the proxy serves (see
// dataplane/config's TlsParameters): ECDHE and RSA suites with AES-GCM,
// ChaCha20-Poly1305 and AES-CBC-SHA.
var tlsCipherSuites = map[string]bool{
	"ECDHE-ECDSA-AES128-GCM-SHA256": true, "ECDHE-RSA-AES128-GCM-SHA256": true,
	"ECDHE-ECDSA-AES256-GCM-SHA384": true, "ECDHE-RSA-AES256-GCM-SHA384": true,
	"ECDHE-ECDSA-CHACHA20-POLY1305": true, "ECDHE-RSA-CHACHA20-POLY1305": true,
	"ECDHE-ECDSA-AES128-SHA": true, "ECDHE-RSA-AES128-SHA": true,
	"ECDHE-ECDSA-AES256-SHA": true, "ECDHE-RSA-AES256-SHA": true,
	"AES128-GCM-SHA256": true, "AES256-GCM-SHA384": true, "AES128-SHA": true, "AES256-SHA": true,
}

const cipherSuiteList = "ECDHE-{ECDSA,RSA}-{AES128-GCM-SHA256,AES256-GCM-SHA384,CHACHA20-POLY1305,AES128-SHA,AES256-SHA}, AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-SHA, AES256-SHA"

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
	if (se.Resolution == networking.ServiceEntry_DNS || se.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN) && len(se.Endpoints) == 0 {
		// Istio's ValidateServiceEntry: the hosts are the names resolved,
		// so a wildcard (or an IP) has nothing to resolve.
		for i, h := range se.Hosts {
			if h != "*" && fqdn(h) != "" {
				c.errf(fmt.Sprintf("spec.hosts[%d]", i), "Invalid value: %q: hosts must be FQDN if no endpoints are provided for resolution mode %s", h, se.Resolution)
			}
		}
	}
	if se.Resolution != networking.ServiceEntry_NONE && len(se.Hosts) > 1 {
		// Istio's ValidateServiceEntry: only the authority (HTTP) or the
		// SNI (TLS) can tell the hosts apart on one port; plain TCP
		// cannot, unless resolution is NONE and the hosts are ignored.
		for i, port := range se.Ports {
			switch strings.ToUpper(port.Protocol) {
			case "HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY", "HTTPS", "TLS":
				continue
			}
			c.errf(fmt.Sprintf("spec.ports[%d].protocol", i), "Invalid value: %q: multiple hosts provided with non-HTTP, non-TLS ports", port.Protocol)
			break
		}
	}
	for i, ep := range se.Endpoints {
		p := fmt.Sprintf("spec.endpoints[%d]", i)
		if ep == nil {
			c.errf(p, "Required value")
			continue
		}
		c.workloadEntry(p, ep)
		if se.Resolution == networking.ServiceEntry_STATIC && ep.Address != "" && !strings.HasPrefix(ep.Address, registry.UnixAddressPrefix) {
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
	case strings.HasPrefix(addr, registry.UnixAddressPrefix):
		if len(we.Ports) > 0 {
			c.errf(p+".ports", "Invalid value: UDS may not include ports")
		}
		path := strings.TrimPrefix(addr, registry.UnixAddressPrefix)
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

// faultPercent checks a fault's percentage as Istio's validatePercentage:
// 0, or 0.0001-100 (Envoy's fault filter counts in millionths, so a
// smaller share would never fire).
func (c *checker) faultPercent(p string, pc *networking.Percent) {
	c.percent(p, pc)
	if v := pc.GetValue(); v > 0 && v < 0.0001 {
		c.errf(p, "Invalid value: %v: percentage is neither 0.0, nor in range [0.0001, 100.0]", v)
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

package model

import (
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// mergeDelegates returns root's http routes with each route that has a
// delegate replaced by the delegate's routes merged with it, as Istio's
// mergeVirtualServicesIfNeeded: a delegate that is missing, has hosts, or
// is not exported to root's namespace contributes no route, and so does a
// delegate route whose match conflicts with every match of the root route.
// Only one level is followed: a delegate's own delegate routes are dropped
// (validation refuses them). Delegate routes are clones whose destination,
// mirror and match gateway names are resolved against the delegate's
// namespace (and the root route's against root's), so that translating
// them in root's namespace keeps their meaning. root's spec is not
// modified. find returns the delegate named by
// (namespace, name), or nil.
func mergeDelegates(root *VirtualService, find func(ns, name string) *VirtualService) []*networking.HTTPRoute {
	http := root.Spec.GetHttp()
	if !hasDelegate(http) {
		return http
	}
	var out []*networking.HTTPRoute
	for _, hr := range http {
		d := hr.GetDelegate()
		if d == nil {
			out = append(out, hr)
			continue
		}
		ns := d.GetNamespace()
		if ns == "" {
			ns = root.Namespace
		}
		del := find(ns, d.GetName())
		if del == nil || len(del.Spec.GetHosts()) > 0 || !del.ExportTo.VisibleTo(root.Namespace) {
			continue
		}
		resolved := resolveRoute(hr, root.Namespace)
		for _, sub := range del.Spec.GetHttp() {
			if sub.GetDelegate() != nil {
				continue
			}
			if m := mergeHTTPRoute(resolved, resolveRoute(sub, del.Namespace)); m != nil {
				out = append(out, m)
			}
		}
	}
	return out
}

func hasDelegate(http []*networking.HTTPRoute) bool {
	for _, hr := range http {
		if hr.GetDelegate() != nil {
			return true
		}
	}
	return false
}

// resolveRoute clones hr with its destination and mirror hosts made FQDN,
// and its match gateways made "namespace/name", against namespace ns.
func resolveRoute(hr *networking.HTTPRoute, ns string) *networking.HTTPRoute {
	c := proto.Clone(hr).(*networking.HTTPRoute)
	for _, rd := range c.GetRoute() {
		if d := rd.GetDestination(); d != nil {
			d.Host = ResolveShortName(d.GetHost(), ns)
		}
	}
	if m := c.GetMirror(); m != nil {
		m.Host = ResolveShortName(m.GetHost(), ns)
	}
	for _, m := range c.GetMirrors() {
		if d := m.GetDestination(); d != nil {
			d.Host = ResolveShortName(d.GetHost(), ns)
		}
	}
	for _, m := range c.GetMatch() {
		for i, g := range m.GetGateways() {
			m.Gateways[i] = ResolveGatewayName(g, ns)
		}
	}
	return c
}

// mergeHTTPRoute merges root route (which delegates) into delegate route
// sub, which it owns and modifies, as Istio's mergeHTTPRoute: the matches
// are combined (nil when they conflict), the names joined with "-", and
// root's rewrite, timeout, retries, fault, mirror(s), mirror percentage,
// corsPolicy and headers apply where sub sets none.
func mergeHTTPRoute(root, sub *networking.HTTPRoute) *networking.HTTPRoute {
	match, ok := mergeMatches(root.GetMatch(), sub.GetMatch())
	if !ok {
		return nil
	}
	sub.Match = match
	sub.Name = joinNames(root.GetName(), sub.GetName())
	if sub.Rewrite == nil {
		sub.Rewrite = root.Rewrite
	}
	if sub.Timeout == nil {
		sub.Timeout = root.Timeout
	}
	if sub.Retries == nil {
		sub.Retries = root.Retries
	}
	if sub.Fault == nil {
		sub.Fault = root.Fault
	}
	if sub.Mirror == nil {
		sub.Mirror = root.Mirror
	}
	if sub.Mirrors == nil {
		sub.Mirrors = root.Mirrors
	}
	if sub.MirrorPercent == nil {
		sub.MirrorPercent = root.MirrorPercent
	}
	if sub.MirrorPercentage == nil {
		sub.MirrorPercentage = root.MirrorPercentage
	}
	if sub.CorsPolicy == nil {
		sub.CorsPolicy = root.CorsPolicy
	}
	if sub.Headers == nil {
		sub.Headers = root.Headers
	}
	return sub
}

// joinNames is Istio's naming of a merged route or match: "root-sub", or
// whichever of the two is set.
func joinNames(root, sub string) string {
	switch {
	case sub == "":
		return root
	case root == "":
		return sub
	}
	return root + "-" + sub
}

// mergeMatches combines the root route's matches with a delegate route's:
// each delegate match must fit under at least one root match, and is
// merged with every root match it fits under. With no root matches the
// delegate's stand, with no delegate matches the root's. ok is false on a
// conflict: a delegate match that fits under no root match.
func mergeMatches(root, sub []*networking.HTTPMatchRequest) ([]*networking.HTTPMatchRequest, bool) {
	switch {
	case len(root) == 0:
		return sub, true
	case len(sub) == 0:
		return root, true
	}
	var out []*networking.HTTPMatchRequest
	for _, s := range sub {
		found := false
		for _, r := range root {
			if matchesConflict(r, s) {
				continue
			}
			out = append(out, mergeMatch(r, s))
			found = true
		}
		if !found {
			return nil, false
		}
	}
	return out, len(out) > 0
}

// mergeMatch is delegate match s narrowed by root match r: uri, scheme,
// method, authority, port and sourceNamespace from s, else r; headers,
// withoutHeaders, queryParams and sourceLabels the union (s wins on a
// shared key, which matchesConflict has checked is compatible); gateways
// from s, else r.
func mergeMatch(r, s *networking.HTTPMatchRequest) *networking.HTTPMatchRequest {
	out := proto.Clone(s).(*networking.HTTPMatchRequest)
	out.Name = joinNames(r.GetName(), s.GetName())
	if out.Uri == nil {
		out.Uri = r.Uri
	}
	if out.Scheme == nil {
		out.Scheme = r.Scheme
	}
	if out.Method == nil {
		out.Method = r.Method
	}
	if out.Authority == nil {
		out.Authority = r.Authority
	}
	out.Headers = unionMaps(r.GetHeaders(), s.GetHeaders())
	out.WithoutHeaders = unionMaps(r.GetWithoutHeaders(), s.GetWithoutHeaders())
	out.QueryParams = unionMaps(r.GetQueryParams(), s.GetQueryParams())
	out.SourceLabels = unionMaps(r.GetSourceLabels(), s.GetSourceLabels())
	if out.Port == 0 {
		out.Port = r.GetPort()
	}
	if out.SourceNamespace == "" {
		out.SourceNamespace = r.GetSourceNamespace()
	}
	if len(out.Gateways) == 0 {
		out.Gateways = r.GetGateways()
	}
	return out
}

// unionMaps is a new map of a's entries then b's, or nil when both are
// empty.
func unionMaps[V any](a, b map[string]V) map[string]V {
	if len(a) == 0 && len(b) == 0 {
		return nil
	}
	out := make(map[string]V, len(a)+len(b))
	maps.Copy(out, a)
	maps.Copy(out, b)
	return out
}

// matchesConflict reports whether delegate match s cannot be narrowed by
// root match r, as Istio's hasConflict: a uri, scheme, method or
// authority, a header, withoutHeader or query parameter both set that
// stringMatchConflict refuses; a different ignoreUriCase; different ports;
// a sourceNamespace r sets and s does not repeat; a sourceLabel of a
// different value; gateways of s that r's do not all contain.
func matchesConflict(r, s *networking.HTTPMatchRequest) bool {
	pairs := [][2]*networking.StringMatch{
		{r.GetUri(), s.GetUri()}, {r.GetScheme(), s.GetScheme()},
		{r.GetMethod(), s.GetMethod()}, {r.GetAuthority(), s.GetAuthority()},
	}
	for k, v := range s.GetHeaders() {
		pairs = append(pairs, [2]*networking.StringMatch{r.GetHeaders()[k], v})
	}
	for k, v := range s.GetWithoutHeaders() {
		pairs = append(pairs, [2]*networking.StringMatch{r.GetWithoutHeaders()[k], v})
	}
	for k, v := range s.GetQueryParams() {
		pairs = append(pairs, [2]*networking.StringMatch{r.GetQueryParams()[k], v})
	}
	for _, p := range pairs {
		if stringMatchConflict(p[0], p[1]) {
			return true
		}
	}
	if r.GetIgnoreUriCase() != s.GetIgnoreUriCase() {
		return true
	}
	if r.GetPort() != 0 && s.GetPort() != 0 && r.GetPort() != s.GetPort() {
		return true
	}
	if r.GetSourceNamespace() != "" && s.GetSourceNamespace() != r.GetSourceNamespace() {
		return true
	}
	for k, v := range s.GetSourceLabels() {
		if rv, ok := r.GetSourceLabels()[k]; ok && rv != v {
			return true
		}
	}
	if len(r.GetGateways()) > 0 {
		for _, g := range s.GetGateways() {
			if !slices.Contains(r.GetGateways(), g) {
				return true
			}
		}
	}
	return false
}

// stringMatchConflict is Istio's: no conflict when either side is unset;
// a regex on either side conflicts with anything set on the other; an
// exact root admits only the same exact; a prefix root admits a prefix or
// exact starting with it; anything else conflicts.
func stringMatchConflict(root, leaf *networking.StringMatch) bool {
	if root == nil || leaf == nil {
		return false
	}
	if root.GetRegex() != "" || leaf.GetRegex() != "" {
		return true
	}
	if exact := root.GetExact(); exact != "" {
		return leaf.GetExact() != exact
	}
	if prefix := root.GetPrefix(); prefix != "" {
		switch {
		case leaf.GetPrefix() != "":
			return !strings.HasPrefix(leaf.GetPrefix(), prefix)
		case leaf.GetExact() != "":
			return !strings.HasPrefix(leaf.GetExact(), prefix)
		}
	}
	return true
}

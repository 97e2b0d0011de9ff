package translate

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// headerOperations is an Istio Headers translated as Istio's
// TranslateHeadersOperations: what goes into an Envoy Route's or
// WeightedCluster.ClusterWeight's *_headers_to_add / *_headers_to_remove,
// and the authority a request set or add asks for.
type headerOperations struct {
	requestToAdd     []*corev3.HeaderValueOption
	requestToRemove  []string
	responseToAdd    []*corev3.HeaderValueOption
	responseToRemove []string
	// authority is the value of a request set (else add) of ":authority"
	// or "host", which Envoy cannot set as a header: it becomes
	// host_rewrite_literal. Empty when none.
	authority string
}

// translateHeaders translates h (nil gives the zero value). Set is
// OVERWRITE_IF_EXISTS_OR_ADD and add APPEND_IF_EXISTS_OR_ADD, each sorted
// by name, sets before adds; pseudo-headers (":name") and "host" are left
// out of every list, as Envoy refuses to modify them.
func translateHeaders(h *networking.Headers) headerOperations {
	var ops headerOperations
	var setAuthority, addAuthority string
	ops.requestToAdd, setAuthority = headerValues(h.GetRequest().GetSet(), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, nil)
	ops.requestToAdd, addAuthority = headerValues(h.GetRequest().GetAdd(), corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD, ops.requestToAdd)
	ops.responseToAdd, _ = headerValues(h.GetResponse().GetSet(), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, nil)
	ops.responseToAdd, _ = headerValues(h.GetResponse().GetAdd(), corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD, ops.responseToAdd)
	ops.requestToRemove = dropInternalHeaders(h.GetRequest().GetRemove())
	ops.responseToRemove = dropInternalHeaders(h.GetResponse().GetRemove())
	ops.authority = addAuthority
	if setAuthority != "" {
		ops.authority = setAuthority
	}
	return ops
}

// headerValues appends to out a HeaderValueOption per header of m, sorted
// by name, and returns the value m gives the authority, if any.
func headerValues(m map[string]string, action corev3.HeaderValueOption_HeaderAppendAction, out []*corev3.HeaderValueOption) ([]*corev3.HeaderValueOption, string) {
	var authority string
	for _, k := range sortedKeys(m) {
		if strings.EqualFold(k, ":authority") || strings.EqualFold(k, "host") {
			authority = m[k]
		}
		if isInternalHeader(k) {
			continue
		}
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: k, Value: m[k]},
			AppendAction: action,
		})
	}
	return out, authority
}

// isInternalHeader reports whether Envoy refuses to modify header k: a
// pseudo-header or "host".
func isInternalHeader(k string) bool {
	return strings.HasPrefix(k, ":") || strings.EqualFold(k, "host")
}

func dropInternalHeaders(keys []string) []string {
	var out []string
	for _, k := range keys {
		if !isInternalHeader(k) {
			out = append(out, k)
		}
	}
	return out
}

// applyToRoute appends ops to the header fields of r.
func (ops headerOperations) applyToRoute(r *routev3.Route) {
	r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, ops.requestToAdd...)
	r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, ops.requestToRemove...)
	r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, ops.responseToAdd...)
	r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, ops.responseToRemove...)
}

// applyToClusterWeight sets ops on one weighted cluster, with the
// authority as its host_rewrite_literal.
func (ops headerOperations) applyToClusterWeight(cw *routev3.WeightedCluster_ClusterWeight) {
	cw.RequestHeadersToAdd = ops.requestToAdd
	cw.RequestHeadersToRemove = ops.requestToRemove
	cw.ResponseHeadersToAdd = ops.responseToAdd
	cw.ResponseHeadersToRemove = ops.responseToRemove
	if ops.authority != "" {
		cw.HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: ops.authority}
	}
}

package config

import (
	"strings"

	"google.golang.org/protobuf/types/known/anypb"
	alpnpb "istio.io/api/envoy/config/filter/http/alpn/v2alpha1"
)

// ALPNFilterName is Istio's ALPN HTTP filter (xdsfilters.Alpn), which
// istiod puts in every HTTP connection manager but sidecar inbound ones.
const ALPNFilterName = "istio.alpn"

const alpnTypeURL = "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"

// ALPNOverride is the istio.alpn HTTP filter
// (istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig), compiled:
// the ALPN protocols an upstream TLS connection of a routed request offers
// instead of its transport socket's, by the request's upstream HTTP
// protocol. Istio sends istio-http/1.0, istio-http/1.1 and istio-h2, by
// which a peer sidecar picks the HTTP chain of a port of unknown protocol.
// A nil list leaves the transport socket's ALPN. Envoy keys its upstream
// connection pools by the override, so connections made with one are
// not shared with others. It is immutable.
type ALPNOverride struct {
	HTTP10, HTTP11, HTTP2 []string
	// keys are the lists joined by ",", made once (NewALPNOverride) so
	// that a request's pool lookup does not build them.
	keys [3]string
}

// NewALPNOverride returns the override offering http10, http11 and http2
// (nil: the transport socket's own) for each upstream protocol.
func NewALPNOverride(http10, http11, http2 []string) *ALPNOverride {
	o := &ALPNOverride{HTTP10: http10, HTTP11: http11, HTTP2: http2}
	for i, l := range [...][]string{http10, http11, http2} {
		o.keys[i] = strings.Join(l, ",")
	}
	return o
}

// For returns the override for an upstream request over HTTP/2 (h2) or
// else HTTP/1.0 (h10) or HTTP/1.1, nil for none (o nil has none), and its
// key: the protocols joined by ",", which keys the connection pools made
// with it.
func (o *ALPNOverride) For(h2, h10 bool) (alpn []string, key string) {
	i := 1
	switch {
	case o == nil:
		return nil, ""
	case h2:
		i = 2
	case h10:
		i = 0
	}
	return [...][]string{o.HTTP10, o.HTTP11, o.HTTP2}[i], o.keys[i]
}

// isALPNFilter reports whether an HTTP filter named name with typed_config
// tc is Istio's ALPN filter.
func isALPNFilter(name string, tc *anypb.Any) bool {
	if tc == nil {
		return name == ALPNFilterName
	}
	return tc.GetTypeUrl() == alpnTypeURL
}

// parseALPNFilter compiles an istio.alpn typed_config (nil: no override).
// Paths are relative to the typed_config.
func parseALPNFilter(tc *anypb.Any) (*ALPNOverride, error) {
	o := &ALPNOverride{}
	if tc == nil {
		return o, nil
	}
	var pc alpnpb.FilterConfig
	if err := anyTo(tc, &pc); err != nil {
		return nil, ferr("typed_config", "%v", err)
	}
	for i, ao := range pc.GetAlpnOverride() {
		p := idx("typed_config.alpn_override", i)
		for j, s := range ao.GetAlpnOverride() {
			if s == "" || len(s) > 255 {
				return nil, verr(idx(p+".alpn_override", j), s, "must be 1 to 255 bytes (an ALPN protocol id)")
			}
		}
		list := append([]string(nil), ao.GetAlpnOverride()...)
		if len(list) == 0 {
			list = nil
		}
		switch ao.GetUpstreamProtocol() {
		case alpnpb.FilterConfig_HTTP10:
			o.HTTP10 = list
		case alpnpb.FilterConfig_HTTP11:
			o.HTTP11 = list
		case alpnpb.FilterConfig_HTTP2:
			o.HTTP2 = list
		default:
			return nil, verr(p+".upstream_protocol", ao.GetUpstreamProtocol().String(), "must be HTTP10, HTTP11 or HTTP2")
		}
	}
	return NewALPNOverride(o.HTTP10, o.HTTP11, o.HTTP2), nil
}

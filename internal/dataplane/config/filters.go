package config

import (
	"maps"
	"slices"
	"strconv"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/filter/cors"
	"github.com/loom-mesh/loom/internal/dataplane/filter/extauthz"
	"github.com/loom-mesh/loom/internal/dataplane/filter/fault"
	"github.com/loom-mesh/loom/internal/dataplane/filter/jwtauthn"
	"github.com/loom-mesh/loom/internal/dataplane/filter/localratelimit"
	"github.com/loom-mesh/loom/internal/dataplane/filter/ratelimit"
	"github.com/loom-mesh/loom/internal/dataplane/filter/rbac"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
)

// builtinFilters are the HTTP filters this version implements besides the
// terminal router, listed explicitly (no registration by init side effects).
var builtinFilters = sync.OnceValues(func() (*filter.Registry, error) {
	return filter.NewRegistry(
		fault.Factory{},
		cors.Factory{},
		localratelimit.Factory{},
		jwtauthn.Factory{},
		rbac.Factory{},
		extauthz.Factory{},
		ratelimit.Factory{},
	)
})

// BuiltinNetworkFilters are the network filters this version implements
// before a filter chain's terminal filter (tcp_proxy or the HTTP
// connection manager), listed explicitly: Envoy's RBAC and ext_authz, as
// Istio's AuthorizationPolicy puts them on TCP filter chains. The
// listener finds each filter chain's factories here and runs them with
// filter.NetworkChain.
var BuiltinNetworkFilters = sync.OnceValues(func() (*filter.NetworkRegistry, error) {
	return filter.NewNetworkRegistry(
		rbac.NetworkFactory{},
		extauthz.NetworkFactory{},
	)
})

const (
	routerTypeURL       = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	filterConfigTypeURL = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
)

// filterBuilder parses filter configs for one Build and numbers the
// override slots: every filter name that is a typed_per_filter_config key
// or an HCM filter name in the generation gets one index, shared by
// Route.FilterOverrides and HTTPFilter.Slot.
type filterBuilder struct {
	reg   *filter.Registry
	net   *filter.NetworkRegistry
	slots map[string]int
	deps  filter.Deps // for Factory.Build
	// inbound is true while the chains of a listener whose
	// traffic_direction is INBOUND are built: istio.stats then reports as
	// destination.
	inbound bool
}

// isStatsFilter reports whether a filter named name with typed_config tc
// is Istio's stats filter (statspb's shape).
func isStatsFilter(name string, tc *anypb.Any) bool {
	if tc == nil {
		return name == statspb.FilterName
	}
	return statspb.IsStats(tc)
}

// statsFilter compiles an istio.stats typed_config for the listener
// being built. Paths are relative to the filter.
func (b *filterBuilder) statsFilter(tc *anypb.Any) (*istiostats.Config, error) {
	pc, err := statspb.Unpack(tc)
	if err != nil {
		return nil, ferr("typed_config", "%v", err)
	}
	sc, err := istiostats.Compile(pc, b.inbound)
	if err != nil {
		return nil, ferr("typed_config.value", "%v", err)
	}
	return sc, nil
}

func newFilterBuilder(deps filter.Deps) (*filterBuilder, error) {
	reg, err := builtinFilters()
	if err != nil {
		return nil, err
	}
	nreg, err := BuiltinNetworkFilters()
	if err != nil {
		return nil, err
	}
	return &filterBuilder{reg: reg, net: nreg, slots: map[string]int{}, deps: deps}, nil
}

// networkFactory returns the factory of a network filter, by its
// typed_config's type URL, else by its name; nil when unknown.
func (b *filterBuilder) networkFactory(f *listenerv3.Filter) filter.NetworkFactory {
	if tc := f.GetTypedConfig(); tc != nil {
		return b.net.ByTypeURL(tc.GetTypeUrl())
	}
	return b.net.ByName(f.GetName())
}

// networkFilter parses and builds a network filter that is not a chain's
// terminal filter. Paths are relative to the Filter.
func (b *filterBuilder) networkFilter(f *listenerv3.Filter) (NetworkFilter, error) {
	if err := onlyFields("", f, "name", "typed_config"); err != nil {
		return NetworkFilter{}, err
	}
	switch f.GetName() {
	case HCMFilterName, TCPProxyFilterName:
		return NetworkFilter{}, verr("name", f.GetName(), "must be the last filter of the chain")
	}
	nf := b.networkFactory(f)
	if nf == nil {
		if tc := f.GetTypedConfig(); tc != nil {
			return NetworkFilter{}, verr("typed_config.type_url", tc.GetTypeUrl(), "unknown network filter %q", f.GetName())
		}
		return NetworkFilter{}, verr("name", f.GetName(), "unknown network filter")
	}
	cfg, err := nf.Parse(f.GetTypedConfig())
	if err != nil {
		return NetworkFilter{}, ferr("typed_config", "%s", err)
	}
	flt, err := nf.Build(cfg)
	if err != nil {
		return NetworkFilter{}, ferr("", "build %s: %v", nf.Name(), err)
	}
	return NetworkFilter{Name: f.GetName(), Filter: flt}, nil
}

func (b *filterBuilder) slot(name string) int {
	s, ok := b.slots[name]
	if !ok {
		s = len(b.slots)
		b.slots[name] = s
	}
	return s
}

// overrides parses a typed_per_filter_config map (of a route configuration,
// virtual host or route). An entry whose type no builtin filter has is an
// error unless it is a FilterConfig with is_optional, which is skipped.
func (b *filterBuilder) overrides(m map[string]*anypb.Any) (map[string]filter.Config, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]filter.Config, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		p := "typed_per_filter_config[" + strconv.Quote(k) + "]"
		a := m[k]
		optional := false
		if a.GetTypeUrl() == filterConfigTypeURL {
			var fc routev3.FilterConfig
			if err := a.UnmarshalTo(&fc); err != nil {
				return nil, ferr(p, "decode FilterConfig: %v", err)
			}
			if fc.GetDisabled() {
				return nil, ferr(p+".disabled", "not supported")
			}
			if fc.GetConfig() == nil {
				return nil, ferr(p+".config", "must be set")
			}
			optional, a = fc.GetIsOptional(), fc.GetConfig()
			p += ".config"
		}
		f := b.reg.ByTypeURL(a.GetTypeUrl())
		if f == nil {
			if optional {
				continue
			}
			return nil, verr(p+".type_url", a.GetTypeUrl(), "unknown HTTP filter type (not optional)")
		}
		cfg, err := f.ParseOverride(a)
		if err != nil {
			return nil, ferr(p, "%s", err)
		}
		out[k] = cfg
	}
	return out, nil
}

// routeOverrides merges the overrides of a route configuration, virtual
// host and route (the most specific wins, as Envoy's) into a slice indexed
// by slot; nil when there are none.
func (b *filterBuilder) routeOverrides(levels ...map[string]filter.Config) []filter.Config {
	var out []filter.Config
	for _, m := range levels {
		for k, c := range m {
			s := b.slot(k)
			if s >= len(out) {
				out = append(out, make([]filter.Config, s+1-len(out))...)
			}
			out[s] = c
		}
	}
	return out
}

// httpFilters validates an HCM's http_filters and compiles its chain: the
// filters before the router, which must be last. Istio's stats filter
// (istio.stats) is not part of the chain: it observes the whole request,
// so it is returned as stats, which the connection manager reports
// when the request ends (as Envoy calls the filter's access log hook).
// Istio's ALPN filter (istio.alpn) only marks the requests the router
// sends on: it is returned as alpn, which the router applies.
func (b *filterBuilder) httpFilters(filters []*hcmv3.HttpFilter) (chain []HTTPFilter, stats *istiostats.Config, alpn *ALPNOverride, err error) {
	return b.httpFilterChain(filters)
}

func (b *filterBuilder) httpFilterChain(filters []*hcmv3.HttpFilter) ([]HTTPFilter, *istiostats.Config, *ALPNOverride, error) {
	var (
		stats *istiostats.Config
		alpn  *ALPNOverride
	)
	if len(filters) == 0 {
		return nil, nil, nil, ferr("http_filters", "must not be empty; the last filter must be "+RouterFilterName)
	}
	var chain []HTTPFilter
	last := len(filters) - 1
	for i, hf := range filters {
		p := idx("http_filters", i)
		if hf.GetName() == "" {
			return nil, nil, nil, ferr(p+".name", "must not be empty")
		}
		if hf.GetConfigDiscovery() != nil {
			return nil, nil, nil, ferr(p+".config_discovery", "not supported")
		}
		tc := hf.GetTypedConfig()
		isRouter := tc.GetTypeUrl() == routerTypeURL || (tc == nil && hf.GetName() == RouterFilterName)
		if i == last {
			if !isRouter {
				return nil, nil, nil, verr(p+".name", hf.GetName(), "must be "+RouterFilterName+" (the last filter must be the router)")
			}
			if tc != nil {
				var r routerv3.Router
				if err := anyTo(tc, &r); err != nil {
					return nil, nil, nil, ferr(p+".typed_config", "%v", err)
				}
			}
			break
		}
		if isRouter {
			return nil, nil, nil, verr(p+".name", hf.GetName(), "the router must be the last filter")
		}
		if isStatsFilter(hf.GetName(), tc) {
			if stats != nil {
				return nil, nil, nil, verr(p+".name", hf.GetName(), "a second istio.stats filter")
			}
			if hf.GetDisabled() {
				return nil, nil, nil, ferr(p+".disabled", "not supported")
			}
			sc, err := b.statsFilter(tc)
			if err != nil {
				return nil, nil, nil, under(p, err)
			}
			stats = sc
			continue
		}
		if isALPNFilter(hf.GetName(), tc) {
			if alpn != nil {
				return nil, nil, nil, verr(p+".name", hf.GetName(), "a second istio.alpn filter")
			}
			if hf.GetDisabled() {
				return nil, nil, nil, ferr(p+".disabled", "not supported")
			}
			o, err := parseALPNFilter(tc)
			if err != nil {
				return nil, nil, nil, under(p, err)
			}
			alpn = o
			continue
		}
		var f filter.Factory
		if tc != nil {
			f = b.reg.ByTypeURL(tc.GetTypeUrl())
		} else {
			f = b.reg.ByName(hf.GetName())
		}
		if f == nil {
			if hf.GetIsOptional() {
				continue
			}
			if tc != nil {
				return nil, nil, nil, verr(p+".typed_config.type_url", tc.GetTypeUrl(), "unknown HTTP filter %q (not is_optional)", hf.GetName())
			}
			return nil, nil, nil, verr(p+".name", hf.GetName(), "unknown HTTP filter (not is_optional)")
		}
		if hf.GetDisabled() {
			return nil, nil, nil, ferr(p+".disabled", "not supported")
		}
		cfg, err := f.Parse(tc)
		if err != nil {
			return nil, nil, nil, ferr(p+".typed_config", "%s", err)
		}
		flt, err := f.Build(cfg, b.deps)
		if err != nil {
			return nil, nil, nil, ferr(p, "build %s: %v", f.Name(), err)
		}
		chain = append(chain, HTTPFilter{Name: hf.GetName(), Filter: flt, Slot: b.slot(hf.GetName())})
	}
	return chain, stats, alpn, nil
}

// Override returns r's override for the filter at slot, or nil. r nil
// means no route matched.
func (r *Route) Override(slot int) filter.Config {
	if r == nil || slot >= len(r.FilterOverrides) {
		return nil
	}
	return r.FilterOverrides[slot]
}

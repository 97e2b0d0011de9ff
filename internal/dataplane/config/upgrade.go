package config

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Upgrades maps an HTTP upgrade type, lower-cased ("websocket"), to whether
// it is enabled: HttpConnectionManager.upgrade_configs on a FilterChain,
// RouteAction.upgrade_configs on a Route. A nil map has no entry.
type Upgrades map[string]bool

// UpgradeAllowed reports whether a request asking to upgrade to typ (its
// Upgrade header; case is ignored) may be upgraded on route r of listener
// filter chain l, as Envoy's createUpgradeFilterChain decides: the route's
// entry for typ wins (enabled or disabled); without one, the chain's HCM
// entry must exist and be enabled. Either of l and r may be nil.
func UpgradeAllowed(l *FilterChain, r *Route, typ string) bool {
	typ = strings.ToLower(typ)
	if r != nil {
		if on, ok := r.Upgrades[typ]; ok {
			return on
		}
	}
	return l != nil && l.Upgrades[typ]
}

// connectUpgrade is the upgrade type of HTTP CONNECT, which Envoy handles
// apart (connect_matcher, connect_config); not served in this version.
const connectUpgrade = "connect"

// buildHCMUpgrades reads HttpConnectionManager.upgrade_configs: each
// upgrade_type once, case ignored, with no custom filters (the listener's
// chain serves upgrades too) and not CONNECT.
func buildHCMUpgrades(ucs []*hcmv3.HttpConnectionManager_UpgradeConfig) (Upgrades, error) {
	if len(ucs) == 0 {
		return nil, nil
	}
	out := make(Upgrades, len(ucs))
	for i, uc := range ucs {
		p := idx("upgrade_configs", i)
		typ := strings.ToLower(uc.GetUpgradeType())
		switch {
		case typ == "":
			return nil, ferr(p+".upgrade_type", "must not be empty")
		case typ == connectUpgrade:
			return nil, verr(p+".upgrade_type", uc.GetUpgradeType(), "not supported (CONNECT)")
		case len(uc.GetFilters()) > 0:
			return nil, ferr(p+".filters", "not supported (upgrades use the listener's http_filters)")
		}
		if _, dup := out[typ]; dup {
			return nil, verr(p+".upgrade_type", uc.GetUpgradeType(), "must be unique")
		}
		out[typ] = uc.GetEnabled() == nil || uc.GetEnabled().GetValue()
	}
	return out, nil
}

// buildRouteUpgrades reads RouteAction.upgrade_configs: each upgrade_type
// once, case ignored, not CONNECT and without connect_config.
func buildRouteUpgrades(ucs []*routev3.RouteAction_UpgradeConfig) (Upgrades, error) {
	if len(ucs) == 0 {
		return nil, nil
	}
	out := make(Upgrades, len(ucs))
	for i, uc := range ucs {
		p := idx("upgrade_configs", i)
		typ := strings.ToLower(uc.GetUpgradeType())
		switch {
		case typ == "":
			return nil, ferr(p+".upgrade_type", "must not be empty")
		case typ == connectUpgrade || uc.GetConnectConfig() != nil:
			return nil, verr(p+".upgrade_type", uc.GetUpgradeType(), "not supported (CONNECT)")
		}
		if _, dup := out[typ]; dup {
			return nil, verr(p+".upgrade_type", uc.GetUpgradeType(), "must be unique")
		}
		out[typ] = uc.GetEnabled() == nil || uc.GetEnabled().GetValue()
	}
	return out, nil
}

package config

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// buildUpgrades builds testResources with hcmUCs on the listener and
// routeUCs on the route_config's third route, and returns the listener,
// that route and the error.
func buildUpgrades(t *testing.T, hcmUCs []*hcmv3.HttpConnectionManager_UpgradeConfig, routeUCs []*routev3.RouteAction_UpgradeConfig) (*FilterChain, *Route, error) {
	t.Helper()
	res := testResources(t)
	h := testHCM(t)
	h.UpgradeConfigs = hcmUCs
	res.Listeners[0] = testListener(t, h)
	rc := res.Routes[0].(*routev3.RouteConfiguration)
	rc.VirtualHosts[0].Routes[2].GetRoute().UpgradeConfigs = routeUCs
	g, err := Build(res, nil)
	if err != nil {
		return nil, nil, err
	}
	return g.Listeners["virtualOutbound"].FilterChains[0], g.Routes["http_proxy"].VirtualHosts[0].Routes[2], nil
}

func TestBuildUpgrades(t *testing.T) {
	ws := func(enabled *wrapperspb.BoolValue) []*hcmv3.HttpConnectionManager_UpgradeConfig {
		return []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket", Enabled: enabled}}
	}
	rws := func(typ string, enabled *wrapperspb.BoolValue) []*routev3.RouteAction_UpgradeConfig {
		return []*routev3.RouteAction_UpgradeConfig{{UpgradeType: typ, Enabled: enabled}}
	}
	tests := []struct {
		name         string
		hcm          []*hcmv3.HttpConnectionManager_UpgradeConfig
		route        []*routev3.RouteAction_UpgradeConfig
		wantListener Upgrades
		wantRoute    Upgrades
		// allowed is UpgradeAllowed(listener, route, "WebSocket").
		allowed bool
	}{
		{"none", nil, nil, nil, nil, false},
		{"Istio: websocket on the HCM", ws(nil), nil, Upgrades{"websocket": true}, nil, true},
		// Envoy's table: route overrides the HCM either way.
		{"HCM on, route off", ws(nil), rws("websocket", wrapperspb.Bool(false)), Upgrades{"websocket": true}, Upgrades{"websocket": false}, false},
		{"HCM off, route on", ws(wrapperspb.Bool(false)), rws("WebSocket", nil), Upgrades{"websocket": false}, Upgrades{"websocket": true}, true},
		{"HCM off, route default", ws(wrapperspb.Bool(false)), nil, Upgrades{"websocket": false}, nil, false},
		{"route only", nil, rws("websocket", wrapperspb.Bool(true)), nil, Upgrades{"websocket": true}, true},
		{"other type on the route", ws(nil), rws("spdy/3.1", wrapperspb.Bool(false)), Upgrades{"websocket": true}, Upgrades{"spdy/3.1": false}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, r, err := buildUpgrades(t, tt.hcm, tt.route)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if diff := cmp.Diff(tt.wantListener, l.Upgrades); diff != "" {
				t.Errorf("listener upgrades (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRoute, r.Upgrades); diff != "" {
				t.Errorf("route upgrades (-want +got):\n%s", diff)
			}
			if got := UpgradeAllowed(l, r, "WebSocket"); got != tt.allowed {
				t.Errorf("UpgradeAllowed = %v, want %v", got, tt.allowed)
			}
		})
	}
}

func TestBuildUpgradeErrors(t *testing.T) {
	const hcmPath = `listener "virtualOutbound": filter_chains[0].filters[0].typed_config.`
	const routePath = `route_config "http_proxy": virtual_hosts[0].routes[2].route.`
	tests := []struct {
		name    string
		hcm     []*hcmv3.HttpConnectionManager_UpgradeConfig
		route   []*routev3.RouteAction_UpgradeConfig
		wantErr string
	}{
		{"HCM CONNECT", []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}}, nil,
			hcmPath + `upgrade_configs[0].upgrade_type = "CONNECT": not supported (CONNECT)`},
		{"HCM custom filters", []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket", Filters: []*hcmv3.HttpFilter{{Name: RouterFilterName}}}}, nil,
			hcmPath + `upgrade_configs[0].filters: not supported (upgrades use the listener's http_filters)`},
		{"HCM duplicate", []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}, {UpgradeType: "WebSocket"}}, nil,
			hcmPath + `upgrade_configs[1].upgrade_type = "WebSocket": must be unique`},
		{"HCM empty type", []*hcmv3.HttpConnectionManager_UpgradeConfig{{}}, nil,
			hcmPath + `upgrade_configs[0].upgrade_type: must not be empty`},
		{"route CONNECT", nil, []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "CONNECT"}},
			routePath + `upgrade_configs[0].upgrade_type = "CONNECT": not supported (CONNECT)`},
		{"route connect_config", nil, []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket", ConnectConfig: &routev3.RouteAction_UpgradeConfig_ConnectConfig{}}},
			routePath + `upgrade_configs[0].upgrade_type = "websocket": not supported (CONNECT)`},
		{"route duplicate", nil, []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}, {UpgradeType: "websocket"}},
			routePath + `upgrade_configs[1].upgrade_type = "websocket": must be unique`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := buildUpgrades(t, tt.hcm, tt.route)
			if err == nil {
				t.Fatalf("Build succeeded, want %q", tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantErr, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

package translate

import (
	"fmt"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/metricnames"
	"github.com/loom-mesh/loom/internal/statsexpr"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
)

// ListenerClass is Istio's networking.ListenerClass as far as the stats
// filter's config depends on it.
type ListenerClass int

// The listener classes.
const (
	// ClassSidecarOutbound: a sidecar's outbound listeners (reporter
	// "source").
	ClassSidecarOutbound ListenerClass = iota
	// ClassSidecarInbound: a sidecar's inbound listener (reporter
	// "destination").
	ClassSidecarInbound
	// ClassGateway: a gateway's (router's) listeners (reporter "source",
	// as Istio's ingress gateways report).
	ClassGateway
)

// StatsConfig returns the config of the `istio.stats` filters on a
// proxy's listeners of class given the proxy's Telemetry API settings tel
// (EffectiveTelemetry), or nil for no stats filter there. As Istio's
// generateStatsConfig: the filter exists when a metrics provider of type
// prometheus is in scope (by default "prometheus") and ALL_METRICS is not
// disabled for the class's mode (client: outbound and gateway listeners,
// server: inbound); each merged metric override becomes a MetricConfig
// (drop for disabled, tags_to_remove for REMOVE, dimensions for UPSERT),
// with the Telemetry's reportingInterval as tcp_reporting_duration.
// disable_host_header_fallback is on for inbound and gateway listeners,
// whose Host header comes from outside the proxy's control.
//
// Beyond Istio, a REMOVE of a tag that is not one of Istio's standard
// tags is left out: it removes nothing in Istio's filter, and Loom's
// proxy refuses it. An UPSERT value outside the expressions the proxy
// evaluates (statsexpr.Parse, the parser the proxy uses) is sent as the literal 'unknown', the
// value Istio's filter reports when an evaluation fails.
func StatsConfig(tel *TelemetryConfig, class ListenerClass) *statspb.PluginConfig {
	var mc *MetricsConfig
	for _, name := range sortedKeys(tel.Metrics) {
		if _, ok := meshconfig.ExtensionProvider(tel.mesh, name).GetProvider().(*meshv1alpha1.MeshConfig_ExtensionProvider_Prometheus); ok {
			mc = tel.Metrics[name]
			break
		}
	}
	if mc == nil {
		return nil
	}
	mode := ModeClient
	if class == ClassSidecarInbound {
		mode = ModeServer
	}
	mm := mc.Mode(mode)
	if mm.Disabled {
		return nil
	}
	c := &statspb.PluginConfig{}
	if class == ClassSidecarInbound || class == ClassGateway {
		c.DisableHostHeaderFallback = true
	}
	if mc.ReportingInterval > 0 {
		c.TcpReportingDuration = durationpb.New(mc.ReportingInterval)
	}
	for _, o := range mm.Overrides {
		m := &statspb.MetricConfig{Name: PrometheusMetricName(o.Name), Drop: o.Disabled}
		for _, t := range o.Tags {
			switch {
			case t.Remove && slices.Contains(metricnames.ProxyLabels, t.Name):
				m.TagsToRemove = append(m.TagsToRemove, t.Name)
			case !t.Remove:
				if m.Dimensions == nil {
					m.Dimensions = map[string]string{}
				}
				v := t.Value
				if _, err := statsexpr.Parse(v); err != nil {
					// Istio's filter reports a value it cannot evaluate
					// as "unknown"; the proxy would refuse the expression.
					v = "'unknown'"
				}
				m.Dimensions[t.Name] = v
			}
		}
		c.Metrics = append(c.Metrics, m)
	}
	return c
}

// listenerClass is l's class on a proxy of type pt.
func listenerClass(pt model.ProxyType, l *listenerv3.Listener) ListenerClass {
	switch {
	case pt == model.RouterProxy:
		return ClassGateway
	case l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND:
		return ClassSidecarInbound
	}
	return ClassSidecarOutbound
}

// addStatsFilters puts Istio's stats filter, as istiod does, on every
// listener of r: the HTTP filter `istio.stats` just before the router of
// every HTTP connection manager, and the network filter `istio.stats`
// just before every tcp_proxy (but the blackhole loop guards), each with StatsConfig of its listener's
// class as an xds.type.v3.TypedStruct. It runs before the EnvoyFilters, so
// that their patches can name istio.stats as a subFilter, as Istio's
// users' EnvoyFilters do.
func addStatsFilters(r *Resources, p *model.Proxy, tel *TelemetryConfig) error {
	configs := map[ListenerClass]*statsFilters{}
	for _, l := range r.Listeners {
		class := listenerClass(p.Type, l)
		sf, ok := configs[class]
		if !ok {
			var err error
			if sf, err = newStatsFilters(StatsConfig(tel, class)); err != nil {
				return fmt.Errorf("listener %q: %w", l.GetName(), err)
			}
			configs[class] = sf
		}
		if sf == nil {
			continue
		}
		for _, fc := range allChains(l) {
			if strings.HasSuffix(fc.GetName(), "-blackhole") {
				// Istio's loop guards (virtualInbound-blackhole,
				// virtualOutbound-blackhole) carry no stats filter.
				continue
			}
			for i, nf := range fc.GetFilters() {
				switch nf.GetName() {
				case httpConnectionManagerFilter:
					if err := sf.addHTTP(nf); err != nil {
						return fmt.Errorf("listener %q: %w", l.GetName(), err)
					}
				case tcpProxyFilter:
					fc.Filters = slices.Insert(fc.Filters, i, &listenerv3.Filter{
						Name:       statspb.FilterName,
						ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: proto.Clone(sf.config).(*anypb.Any)},
					})
				default:
					continue
				}
				break // the terminal filter is last
			}
		}
	}
	return nil
}

// statsFilters is one class's packed stats config.
type statsFilters struct {
	config *anypb.Any
}

// addHTTP inserts the HTTP stats filter before the router of the HTTP
// connection manager nf (at the end when it has none).
func (sf *statsFilters) addHTTP(nf *listenerv3.Filter) error {
	var h hcmv3.HttpConnectionManager
	if err := nf.GetTypedConfig().UnmarshalTo(&h); err != nil {
		return fmt.Errorf("decode http_connection_manager: %w", err)
	}
	i := slices.IndexFunc(h.HttpFilters, func(f *hcmv3.HttpFilter) bool { return f.GetName() == routerFilter })
	if i < 0 {
		i = len(h.HttpFilters)
	}
	h.HttpFilters = slices.Insert(h.HttpFilters, i, &hcmv3.HttpFilter{
		Name:       statspb.FilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: proto.Clone(sf.config).(*anypb.Any)},
	})
	a, err := packAny(&h)
	if err != nil {
		return err
	}
	nf.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	return nil
}

func newStatsFilters(c *statspb.PluginConfig) (*statsFilters, error) {
	if c == nil {
		return nil, nil
	}
	a, err := statspb.Pack(c)
	if err != nil {
		return nil, err
	}
	return &statsFilters{config: a}, nil
}

// allChains is l's filter chains and its default chain.
func allChains(l *listenerv3.Listener) []*listenerv3.FilterChain {
	out := slices.Clone(l.GetFilterChains())
	if d := l.GetDefaultFilterChain(); d != nil {
		out = append(out, d)
	}
	return out
}

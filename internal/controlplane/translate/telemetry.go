package translate

import (
	"sort"
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// WorkloadMode is the direction of traffic a telemetry setting applies to,
// relative to the proxied workload (Istio's telemetry WorkloadMode):
// ModeClient for a sidecar's outbound listeners and every gateway
// listener, ModeServer for a sidecar's inbound listeners.
type WorkloadMode int

// The two modes a listener can be in.
const (
	ModeClient WorkloadMode = iota
	ModeServer
)

func (m WorkloadMode) api() telemetry.WorkloadMode {
	if m == ModeServer {
		return telemetry.WorkloadMode_SERVER
	}
	return telemetry.WorkloadMode_CLIENT
}

// TelemetryConfig is the Telemetry API's effect on one proxy: the
// Telemetries of TelemetriesForProxy (mesh root namespace istio-system,
// then the proxy's namespace, then its workload's) merged with the mesh
// config's defaultProviders, as Istio's pilot/pkg/model/telemetry.go
// merges them. Providers are resolved against the mesh config
// (meshconfig.ExtensionProvider); a name that resolves to nothing is
// dropped, as in Istio (loomd's validation refuses such a Telemetry in the
// first place, see validation.TelemetryProviders).
//
// It is immutable once built; nil fields mean "not configured by the
// Telemetry API" (see each field).
type TelemetryConfig struct {
	// Client and Server are the access logs of ModeClient and ModeServer
	// listeners: nil when no Telemetry configures access logging and the
	// mesh config has no defaultProviders.accessLogging (Istio then falls
	// back to meshConfig.accessLogFile); non-nil and empty when access
	// logging is configured and turns every provider off.
	ClientLogs, ServerLogs []AccessLogConfig
	// Metrics are the metrics providers in scope, by provider name, with
	// their per-mode overrides. A provider absent here gets no stats filter.
	Metrics map[string]*MetricsConfig
	// Tracing is the client and server tracing specs (applyTracing's
	// input); nil when no Telemetry configures tracing and the mesh config
	// has no defaultProviders.tracing. Both sides are set otherwise; a side
	// without a provider is Disabled.
	Tracing *TracingSpecs

	// mesh resolves provider names (StatsConfig reads a provider's type).
	mesh *meshv1alpha1.MeshConfig
}

// Logs returns the access logs of mode (see ClientLogs).
func (t *TelemetryConfig) Logs(mode WorkloadMode) []AccessLogConfig {
	if mode == ModeServer {
		return t.ServerLogs
	}
	return t.ClientLogs
}

// AccessLogConfig is one access log provider enabled for a mode.
type AccessLogConfig struct {
	Provider *meshv1alpha1.MeshConfig_ExtensionProvider
	// Filter is Telemetry accessLogging[].filter.expression, a CEL
	// expression over Envoy's attributes; "" logs everything.
	Filter string
}

// MetricsConfig is one metrics provider's merged overrides.
type MetricsConfig struct {
	// Client and Server hold the overrides per mode; Disabled is set when
	// ALL_METRICS is disabled for that mode (no stats filter at all).
	Client, Server MetricsModeConfig
	// ReportingInterval is metrics[].reportingInterval (0: the provider's
	// default; for Istio's stats filter, tcp_reporting_duration 15s).
	ReportingInterval time.Duration
}

// Mode returns the overrides of mode.
func (m *MetricsConfig) Mode(mode WorkloadMode) MetricsModeConfig {
	if mode == ModeServer {
		return m.Server
	}
	return m.Client
}

// MetricsModeConfig is the overrides of one mode of one provider.
type MetricsModeConfig struct {
	Disabled  bool
	Overrides []MetricOverride // sorted by Name
}

// MetricOverride is the merged override of one metric: Name is the
// Telemetry API's name (an IstioMetric enum name such as
// "REQUEST_COUNT", or a customMetric as written). PrometheusMetricName
// gives the stats filter's name.
type MetricOverride struct {
	Name     string
	Disabled bool
	Tags     []TagOverride // sorted by Name
}

// TagOverride is one tag (dimension) override: Remove, or set to the
// value of the CEL expression Value.
type TagOverride struct {
	Name   string
	Remove bool
	Value  string
}

// PrometheusMetricName maps the Telemetry API's standard metric names to
// the names of Istio's stats filter (without the "istio_" prefix), as
// Istio's metricToPrometheusMetric; a custom metric's name is returned as
// it is.
func PrometheusMetricName(name string) string {
	if n, ok := prometheusMetricNames[name]; ok {
		return n
	}
	return name
}

var prometheusMetricNames = map[string]string{
	"REQUEST_COUNT":          "requests_total",
	"REQUEST_DURATION":       "request_duration_milliseconds",
	"REQUEST_SIZE":           "request_bytes",
	"RESPONSE_SIZE":          "response_bytes",
	"TCP_OPENED_CONNECTIONS": "tcp_connections_opened_total",
	"TCP_CLOSED_CONNECTIONS": "tcp_connections_closed_total",
	"TCP_SENT_BYTES":         "tcp_sent_bytes_total",
	"TCP_RECEIVED_BYTES":     "tcp_received_bytes_total",
	"GRPC_REQUEST_MESSAGES":  "request_messages_total",
	"GRPC_RESPONSE_MESSAGES": "response_messages_total",
}

// allMetrics are the standard metrics ALL_METRICS (or no match) stands
// for, sorted.
var allMetrics = func() []string {
	var out []string
	for name, v := range telemetry.MetricSelector_IstioMetric_value {
		if v != int32(telemetry.MetricSelector_ALL_METRICS) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}()

// defaultMetricsProviders is Istio's default mesh config's
// defaultProviders.metrics.
var defaultMetricsProviders = []string{"prometheus"}

// EffectiveTelemetry returns the Telemetry API's settings for proxy p
// under mesh config mesh (nil: Istio's defaults). It is pure and safe for
// concurrent use; pc should be the proxy's view (pc.ForProxy(p)), though
// Telemetries ignore exportTo.
//
// The merge is Istio's: for access logs and metrics, a level's providers
// replace its parent's when it names any (else it inherits them), and only
// the providers of the most specific level that names any stay in scope;
// entries then apply in order, so a workload's disabled: true turns off a
// provider the namespace enabled. Metric overrides merge deeply (tag by
// tag); ALL_METRICS disabled drops a mode's filter until a later override
// of that mode turns a metric back on. Tracing merges shallowly per mode.
func EffectiveTelemetry(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig) *TelemetryConfig {
	ts := pc.TelemetriesForProxy(p)
	var metrics []*telemetry.Metrics
	var logs [][]*telemetry.AccessLogging
	var tracing []*telemetry.Tracing
	for _, t := range ts {
		metrics = append(metrics, t.Spec.GetMetrics()...)
		if l := t.Spec.GetAccessLogging(); len(l) > 0 {
			logs = append(logs, l)
		}
		tracing = append(tracing, t.Spec.GetTracing()...)
	}
	out := &TelemetryConfig{Metrics: mergeMetrics(metrics, mesh), Tracing: mergeTracing(tracing, mesh), mesh: mesh}
	if len(logs) > 0 || len(mesh.GetDefaultProviders().GetAccessLogging()) > 0 {
		out.ClientLogs = accessLogConfigs(mergeLogs(logs, mesh, ModeClient), mesh)
		out.ServerLogs = accessLogConfigs(mergeLogs(logs, mesh, ModeServer), mesh)
	}
	return out
}

type logSpec struct {
	disabled bool
	filter   string
}

// mergeLogs is Istio's mergeLogs: the providers of one mode, each with its
// filter, or disabled.
func mergeLogs(levels [][]*telemetry.AccessLogging, mesh *meshv1alpha1.MeshConfig, mode WorkloadMode) map[string]logSpec {
	providers := map[string]logSpec{}
	defaults := mesh.GetDefaultProviders().GetAccessLogging()
	if len(levels) == 0 {
		for _, dp := range defaults {
			providers[dp] = logSpec{}
		}
		return providers
	}
	inScope := defaults
	filters := map[string]logSpec{}
	for _, level := range levels {
		var names []string
		for _, l := range level {
			if !matchLogMode(l.GetMatch(), mode) {
				continue
			}
			for _, ref := range l.GetProviders() {
				names = append(names, ref.GetName())
				filters[ref.GetName()] = logSpec{filter: l.GetFilter().GetExpression()}
			}
		}
		if len(names) > 0 {
			inScope = names
		}
	}
	scope := map[string]bool{}
	for _, n := range inScope {
		scope[n] = true
	}
	parent := defaults
	for _, level := range levels {
		for _, l := range level {
			names := providerNames(l.GetProviders())
			if len(names) == 0 {
				names = parent
			}
			parent = names
			for _, n := range names {
				if !scope[n] || !matchLogMode(l.GetMatch(), mode) {
					continue
				}
				if l.GetDisabled().GetValue() {
					providers[n] = logSpec{disabled: true}
					continue
				}
				providers[n] = filters[n]
			}
		}
	}
	return providers
}

func matchLogMode(sel *telemetry.AccessLogging_LogSelector, mode WorkloadMode) bool {
	if sel == nil || sel.GetMode() == telemetry.WorkloadMode_CLIENT_AND_SERVER {
		return true
	}
	return sel.GetMode() == mode.api()
}

// accessLogConfigs resolves the enabled providers of m, sorted by name;
// never nil.
func accessLogConfigs(m map[string]logSpec, mesh *meshv1alpha1.MeshConfig) []AccessLogConfig {
	out := []AccessLogConfig{}
	for name, s := range m {
		if s.disabled {
			continue
		}
		if p := meshconfig.ExtensionProvider(mesh, name); p != nil {
			out = append(out, AccessLogConfig{Provider: p, Filter: s.filter})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Provider.GetName() < out[j].Provider.GetName() })
	return out
}

func providerNames(refs []*telemetry.ProviderRef) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.GetName())
	}
	return out
}

func metricModes(m telemetry.WorkloadMode) []WorkloadMode {
	switch m {
	case telemetry.WorkloadMode_CLIENT:
		return []WorkloadMode{ModeClient}
	case telemetry.WorkloadMode_SERVER:
		return []WorkloadMode{ModeServer}
	}
	return []WorkloadMode{ModeClient, ModeServer}
}

// mergeMetrics is Istio's mergeMetrics. Providers that do not resolve in
// the mesh config are dropped.
func mergeMetrics(metrics []*telemetry.Metrics, mesh *meshv1alpha1.MeshConfig) map[string]*MetricsConfig {
	type override struct {
		disabled *bool
		tags     map[string]*telemetry.MetricsOverrides_TagOverride
	}
	type key struct {
		provider string
		mode     WorkloadMode
	}
	defaults := mesh.GetDefaultProviders().GetMetrics()
	if len(defaults) == 0 {
		defaults = defaultMetricsProviders
	}
	// provider -> mode -> metric -> override
	providers := map[string]map[WorkloadMode]map[string]*override{}
	if len(metrics) == 0 {
		for _, dp := range defaults {
			providers[dp] = map[WorkloadMode]map[string]*override{}
		}
	}
	inScope := defaults
	for _, m := range metrics {
		if names := providerNames(m.GetProviders()); len(names) > 0 {
			inScope = names
		}
	}
	scope := map[string]bool{}
	for _, n := range inScope {
		scope[n] = true
	}
	parent := defaults
	disabledAll := map[key]bool{}
	intervals := map[string]time.Duration{}
	for _, m := range metrics {
		names := providerNames(m.GetProviders())
		if len(names) == 0 {
			names = parent
		}
		parent = names
		for _, prov := range names {
			if !scope[prov] {
				continue
			}
			if ri := m.GetReportingInterval(); ri != nil {
				intervals[prov] = ri.AsDuration()
			}
			if providers[prov] == nil {
				providers[prov] = map[WorkloadMode]map[string]*override{ModeClient: {}, ModeServer: {}}
			}
			mp := providers[prov]
			for _, o := range m.GetOverrides() {
				modes := metricModes(o.GetMatch().GetMode())
				if isAllMetrics(o.GetMatch()) && o.GetDisabled().GetValue() {
					for _, mode := range modes {
						disabledAll[key{prov, mode}] = true
					}
					continue
				}
				for _, mode := range modes {
					delete(disabledAll, key{prov, mode})
					if mp[mode] == nil {
						mp[mode] = map[string]*override{}
					}
					for _, name := range metricMatches(o.GetMatch()) {
						ov := mp[mode][name]
						if ov == nil {
							ov = &override{}
							mp[mode][name] = ov
						}
						if o.GetDisabled() != nil {
							d := o.GetDisabled().GetValue()
							ov.disabled = &d
						}
						for k, v := range o.GetTagOverrides() {
							if ov.tags == nil {
								ov.tags = map[string]*telemetry.MetricsOverrides_TagOverride{}
							}
							ov.tags[k] = v
						}
					}
				}
			}
		}
	}
	out := map[string]*MetricsConfig{}
	for prov, modes := range providers {
		if meshconfig.ExtensionProvider(mesh, prov) == nil {
			continue
		}
		mc := &MetricsConfig{ReportingInterval: intervals[prov]}
		for mode, byMetric := range modes {
			mm := MetricsModeConfig{Disabled: disabledAll[key{prov, mode}]}
			if !mm.Disabled {
				for name, ov := range byMetric {
					mo := MetricOverride{Name: name, Disabled: ov.disabled != nil && *ov.disabled}
					for tag, to := range ov.tags {
						t := TagOverride{Name: tag}
						if to.GetOperation() == telemetry.MetricsOverrides_TagOverride_REMOVE {
							t.Remove = true
						} else {
							t.Value = to.GetValue()
						}
						mo.Tags = append(mo.Tags, t)
					}
					sort.Slice(mo.Tags, func(i, j int) bool { return mo.Tags[i].Name < mo.Tags[j].Name })
					mm.Overrides = append(mm.Overrides, mo)
				}
				sort.Slice(mm.Overrides, func(i, j int) bool { return mm.Overrides[i].Name < mm.Overrides[j].Name })
			}
			if mode == ModeServer {
				mc.Server = mm
			} else {
				mc.Client = mm
			}
		}
		out[prov] = mc
	}
	return out
}

// isAllMetrics: no match, or ALL_METRICS, stands for every metric.
func isAllMetrics(m *telemetry.MetricSelector) bool {
	switch mm := m.GetMetricMatch().(type) {
	case *telemetry.MetricSelector_CustomMetric:
		return false
	case *telemetry.MetricSelector_Metric:
		return mm.Metric == telemetry.MetricSelector_ALL_METRICS
	}
	return true
}

func metricMatches(m *telemetry.MetricSelector) []string {
	switch mm := m.GetMetricMatch().(type) {
	case *telemetry.MetricSelector_CustomMetric:
		return []string{mm.CustomMetric}
	case *telemetry.MetricSelector_Metric:
		if mm.Metric != telemetry.MetricSelector_ALL_METRICS {
			return []string{mm.Metric.String()}
		}
	}
	return allMetrics
}

// mergeTracing is Istio's Telemetries.Tracing. Istio's
// useRequestIdForTraceSampling is not carried: the proxy samples by its
// own random draw.
func mergeTracing(tracing []*telemetry.Tracing, mesh *meshv1alpha1.MeshConfig) *TracingSpecs {
	defaults := mesh.GetDefaultProviders().GetTracing()
	if len(tracing) == 0 && len(defaults) == 0 {
		return nil
	}
	client := TracingSpec{EnableIstioTags: true}
	server := client
	if len(defaults) > 0 {
		p := meshconfig.ExtensionProvider(mesh, defaults[0])
		client.Provider, server.Provider = p, p
	}
	for _, t := range tracing {
		specs := []*TracingSpec{&client, &server}
		switch t.GetMatch().GetMode() {
		case telemetry.WorkloadMode_CLIENT:
			specs = specs[:1]
		case telemetry.WorkloadMode_SERVER:
			specs = specs[1:]
		}
		for _, s := range specs {
			if names := providerNames(t.GetProviders()); len(names) > 0 {
				// One provider per mode, as Istio: the first.
				s.Provider = meshconfig.ExtensionProvider(mesh, names[0])
			}
			if d := t.GetDisableSpanReporting(); d != nil {
				s.Disabled = d.GetValue()
			}
			if t.GetCustomTags() != nil {
				s.CustomTags = t.GetCustomTags()
			}
			if r := t.GetRandomSamplingPercentage(); r != nil {
				v := r.GetValue()
				s.RandomSamplingPercentage = &v
			}
			if e := t.GetEnableIstioTags(); e != nil {
				s.EnableIstioTags = e.GetValue()
			}
		}
	}
	if client.Provider == nil {
		client.Disabled = true
	}
	if server.Provider == nil {
		server.Disabled = true
	}
	return &TracingSpecs{Client: &client, Server: &server}
}

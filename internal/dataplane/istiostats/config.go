package istiostats

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
)

// Reporter is the `reporter` label of Istio's standard metrics: which end
// of a request or connection the proxy reports as.
type Reporter uint8

// Reporters.
const (
	// ReporterSource: a sidecar's outbound listener, or a gateway
	// (reporter="source").
	ReporterSource Reporter = iota
	// ReporterDestination: a sidecar's inbound listener
	// (reporter="destination").
	ReporterDestination
	// ReporterServerGateway: PluginConfig.reporter SERVER_GATEWAY (a
	// waypoint), reporter="destination" with the destination workload
	// taken from the upstream peer.
	ReporterServerGateway
)

// String is the reporter label's value.
func (r Reporter) String() string {
	if r == ReporterSource {
		return "source"
	}
	return "destination"
}

// DefaultTCPReportingDuration is PluginConfig.tcp_reporting_duration's
// default (Istio's native filter: 5s).
const DefaultTCPReportingDuration = 5 * time.Second

// Config is one `istio.stats` filter (HTTP or network) compiled from
// Istio's stats.PluginConfig: immutable, built off the hot path, shared by
// every request or connection of its filter chain.
type Config struct {
	// Reporter is PluginConfig.reporter resolved against the listener's
	// traffic_direction (UNSPECIFIED: INBOUND reports as destination,
	// anything else as source).
	Reporter Reporter
	// DisableHostHeaderFallback is PluginConfig.disable_host_header_fallback:
	// when the cluster names no service, destination_service is "unknown"
	// rather than the request's Host.
	DisableHostHeaderFallback bool
	// TCPReportingDuration is the period of a TCP connection's interim
	// byte reports (tcp_reporting_duration; default
	// DefaultTCPReportingDuration).
	TCPReportingDuration time.Duration
	// metrics holds, per standard metric, what the overrides did to it;
	// nil when PluginConfig.metrics is empty (the fast path).
	metrics *[numMetrics]metricOverride
}

// metricOverride is the compiled effect of PluginConfig.metrics on one
// standard metric.
type metricOverride struct {
	drop bool
	// removed[t] leaves standard tag t out.
	removed [numTags]bool
	// set[t] replaces standard tag t's value (nil: unchanged).
	set [numTags]*Expr
	// extra are added tags, sorted by name.
	extra []extraTag
}

type extraTag struct {
	name string
	expr *Expr
}

// Compile compiles c for a listener whose traffic_direction is
// INBOUND when inbound is true. A nil c is Istio's default config. The
// error names the field of c it refuses: an unknown metric name, a
// dimension expression outside what Expr supports, definitions (custom
// metrics are not implemented), or a scope rotation.
func Compile(c *statspb.PluginConfig, inbound bool) (*Config, error) {
	if c == nil {
		c = &statspb.PluginConfig{}
	}
	s := &Config{DisableHostHeaderFallback: c.GetDisableHostHeaderFallback(), TCPReportingDuration: DefaultTCPReportingDuration}
	switch c.GetReporter() {
	case statspb.Reporter_UNSPECIFIED:
		if inbound {
			s.Reporter = ReporterDestination
		}
	case statspb.Reporter_SERVER_GATEWAY:
		s.Reporter = ReporterServerGateway
	default:
		return nil, fmt.Errorf("reporter = %v: must be UNSPECIFIED or SERVER_GATEWAY", c.GetReporter())
	}
	if d := c.GetTcpReportingDuration(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("tcp_reporting_duration = %v: must be a non-negative duration", d)
		}
		// Istio's filter treats 0 as "no interim reports".
		s.TCPReportingDuration = d.AsDuration()
	}
	if len(c.GetDefinitions()) > 0 {
		return nil, fmt.Errorf("definitions: custom metrics are not supported")
	}
	if c.GetRotationInterval().AsDuration() != 0 {
		return nil, fmt.Errorf("rotation_interval = %v: not supported (series are bounded by MaxSeries instead)", c.GetRotationInterval().AsDuration())
	}
	if len(c.GetMetrics()) == 0 {
		return s, nil
	}
	var ms [numMetrics]metricOverride
	for i, mc := range c.GetMetrics() {
		p := "metrics[" + strconv.Itoa(i) + "]"
		targets := allMetrics[:]
		if mc.GetName() != "" {
			m, ok := metricByName(mc.GetName())
			if !ok {
				// Istio ignores an override of a metric it does not
				// have; so does Loom, for custom metrics' names.
				continue
			}
			targets = []metricID{m}
		}
		if mc.GetDrop() {
			for _, m := range targets {
				ms[m].drop = true
			}
			continue
		}
		for j, t := range mc.GetTagsToRemove() {
			tag, ok := tagByName(t)
			if !ok {
				return nil, fmt.Errorf("%s.tags_to_remove[%d] = %q: not a standard tag", p, j, t)
			}
			for _, m := range targets {
				ms[m].removed[tag] = true
				ms[m].set[tag] = nil
			}
		}
		// Sorted, as Istio's filter, so the order of tags is deterministic.
		for _, name := range slices.Sorted(mapsKeys(mc.GetDimensions())) {
			src := mc.GetDimensions()[name]
			e, err := ParseExpr(src)
			if err != nil {
				return nil, fmt.Errorf("%s.dimensions[%q] = %q: %v", p, name, src, err)
			}
			if !validLabelName(name) {
				return nil, fmt.Errorf("%s.dimensions[%q]: not a Prometheus label name", p, name)
			}
			tag, std := tagByName(name)
			for _, m := range targets {
				mo := &ms[m]
				if std {
					mo.set[tag] = e
					mo.removed[tag] = false
					continue
				}
				k := slices.IndexFunc(mo.extra, func(x extraTag) bool { return x.name == name })
				if k >= 0 {
					mo.extra[k].expr = e
				} else {
					mo.extra = append(mo.extra, extraTag{name: name, expr: e})
				}
			}
		}
	}
	for m := range ms {
		slices.SortFunc(ms[m].extra, func(a, b extraTag) int { return strings.Compare(a.name, b.name) })
	}
	s.metrics = &ms
	return s, nil
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// validLabelName is Prometheus's classic label name rule, which Istio's
// tag names follow.
func validLabelName(s string) bool {
	return !strings.HasPrefix(s, "__") && model.LegacyValidation.IsValidLabelName(s)
}

// HasOverrides reports whether c changes the standard metrics (tags added,
// changed or removed, metrics dropped): requests then carry Attributes for
// the dimension expressions.
func (c *Config) HasOverrides() bool { return c != nil && c.metrics != nil }

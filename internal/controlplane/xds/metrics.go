package xds

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Buckets of istiod's histograms (pilot/pkg/xds/monitoring.go), in
// seconds.
var (
	convergenceBuckets = []float64{.1, .5, 1, 3, 5, 10, 20, 30}
	debounceBuckets    = []float64{.01, .1, 1, 3, 5, 10, 20, 30}
	pushTimeBuckets    = []float64{.01, .1, 1, 3, 5, 10, 20, 30}
	initBuckets        = []float64{.01, .1, 0.5, 1, 3, 5}
)

// metrics are the ADS server's Prometheus metrics, named, labelled and
// bucketed as istiod's, so that Istio's dashboards and alerts read them:
//
//   - pilot_xds_pushes{type}: responses sent, type cds, eds, lds or rds.
//   - pilot_total_xds_rejects{type}: responses a proxy NACKed.
//   - pilot_proxy_convergence_time: seconds from a config change (the
//     first trigger of a debounced push) to the last response of that push
//     being sent to a proxy, per proxy the push changed.
//   - pilot_xds_push_time{type}: seconds from the start of a push (after
//     debouncing) to one type's response being sent to a proxy.
//   - pilot_debounce_time: seconds from the first trigger to the push.
//   - pilot_pushcontext_init_seconds: seconds to build the push context.
//   - pilot_xds{version}, pilot_services, pilot_virt_services: gauges read
//     from the server at scrape time (see Server.Describe).
//
// Its fields are safe for concurrent use.
type metrics struct {
	pushes      *prometheus.CounterVec
	rejects     *prometheus.CounterVec
	convergence prometheus.Histogram
	pushTime    *prometheus.HistogramVec
	debounce    prometheus.Histogram
	pcInit      prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes",
			Help: "Pilot build and send errors for lds, rds, cds and eds.",
		}, []string{"type"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_total_xds_rejects",
			Help: "Total number of XDS responses from pilot rejected by proxy.",
		}, []string{"type"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_proxy_convergence_time",
			Help:    "Delay in seconds between config change and a proxy receiving all required configuration.",
			Buckets: convergenceBuckets,
		}),
		pushTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pilot_xds_push_time",
			Help:    "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
			Buckets: pushTimeBuckets,
		}, []string{"type"}),
		debounce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_debounce_time",
			Help:    "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue.",
			Buckets: debounceBuckets,
		}),
		pcInit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_pushcontext_init_seconds",
			Help:    "Total time in seconds Pilot takes to init pushContext.",
			Buckets: initBuckets,
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.pushes, m.rejects, m.convergence, m.pushTime, m.debounce, m.pcInit}
}

// metricType is istiod's type label of a type URL: "cds", "eds", "lds",
// "rds".
func metricType(typeURL string) string { return strings.ToLower(xdsapi.ShortType(typeURL)) }

// convergence is a push a proxy has not received all of yet: the types
// the push changed for it whose response is still to be sent. Guarded by
// Server.mu.
type convergence struct {
	version   string    // the push's resource version
	changed   time.Time // the config change: the first trigger of the push
	pushStart time.Time // the push, after debouncing
	pending   uint8     // bit i: xdsapi.TypeURLs[i] not sent yet
}

var (
	xdsClientsDesc = prometheus.NewDesc("pilot_xds",
		"Number of endpoints connected to this pilot using XDS.", []string{"version"}, nil)
	servicesDesc = prometheus.NewDesc("pilot_services",
		"Total services known to pilot.", nil, nil)
	virtServicesDesc = prometheus.NewDesc("pilot_virt_services",
		"Total virtual services known to pilot.", nil, nil)
)

// Describe implements prometheus.Collector for the gauges read at scrape
// time: pilot_xds (connected proxies by proxy version, as the node's user
// agent gives it), pilot_services and pilot_virt_services (of the latest
// push context).
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	ch <- xdsClientsDesc
	ch <- servicesDesc
	ch <- virtServicesDesc
}

// Collect implements prometheus.Collector. It holds the server's lock
// while it counts, never while it sends.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	byVersion := map[string]int{}
	for _, p := range s.proxies {
		byVersion[p.version]++
	}
	pc := s.pc
	s.mu.Unlock()
	for v, n := range byVersion {
		ch <- prometheus.MustNewConstMetric(xdsClientsDesc, prometheus.GaugeValue, float64(n), v)
	}
	var services, vs int
	if pc != nil {
		services, vs = len(pc.Services()), len(pc.VirtualServices())
	}
	ch <- prometheus.MustNewConstMetric(servicesDesc, prometheus.GaugeValue, float64(services))
	ch <- prometheus.MustNewConstMetric(virtServicesDesc, prometheus.GaugeValue, float64(vs))
}

var _ prometheus.Collector = (*Server)(nil)

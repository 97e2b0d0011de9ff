package ca

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The CA's metrics, with istiod's names (security/pkg/server/ca/monitoring.go
// and its cert-expiry gauges); loom_ca_last_issued_cert_expiry_timestamp is
// Loom's own.
var (
	csrCountDesc = prometheus.NewDesc("citadel_server_csr_count",
		"The number of CSRs received by Citadel server.", nil, nil)
	issuedDesc = prometheus.NewDesc("citadel_server_success_cert_issuance_count",
		"The number of certificates issuances that have succeeded.", nil, nil)
	authnFailureDesc = prometheus.NewDesc("citadel_server_authentication_failure_count",
		"The number of authentication failures.", nil, nil)
	csrParseErrDesc = prometheus.NewDesc("citadel_server_csr_parsing_err_count",
		"The number of errors occurred when parsing the CSR.", nil, nil)
	csrSignErrDesc = prometheus.NewDesc("citadel_server_csr_sign_err_count",
		"The number of errors occurred when signing the CSR.", nil, nil)
	rootExpiryTSDesc = prometheus.NewDesc("citadel_server_root_cert_expiry_timestamp",
		"The unix timestamp, in seconds, when Citadel root cert will expire. A negative time indicates the cert is expired.", nil, nil)
	rootExpirySecDesc = prometheus.NewDesc("citadel_server_root_cert_expiry_seconds",
		"The time remaining, in seconds, before the root cert will expire. A negative value indicates the cert is expired.", nil, nil)
	chainExpiryTSDesc = prometheus.NewDesc("citadel_server_cert_chain_expiry_timestamp",
		"The unix timestamp, in seconds, when Citadel cert chain will expire. A negative time indicates the cert is expired.", nil, nil)
	chainExpirySecDesc = prometheus.NewDesc("citadel_server_cert_chain_expiry_seconds",
		"The time remaining, in seconds, before the cert chain will expire. A negative value indicates the cert is expired.", nil, nil)
	lastIssuedExpiryDesc = prometheus.NewDesc("loom_ca_last_issued_cert_expiry_timestamp",
		"The unix timestamp, in seconds, when the last workload certificate issued expires; absent before the first.", nil, nil)
)

// collector exports a CA's Stats at scrape time.
type collector struct {
	ca  *CA
	now func() time.Time
}

// NewCollector returns a Prometheus collector of c's Stats under istiod's
// Citadel metric names: citadel_server_csr_count,
// citadel_server_success_cert_issuance_count,
// citadel_server_authentication_failure_count,
// citadel_server_csr_parsing_err_count and
// citadel_server_csr_sign_err_count (counters, as istiod exports them,
// without a _total suffix); citadel_server_root_cert_expiry_timestamp and
// citadel_server_cert_chain_expiry_timestamp (Unix seconds) with their
// _seconds forms (seconds left, negative once expired); and
// loom_ca_last_issued_cert_expiry_timestamp. It reads c without a lock at
// each scrape.
func NewCollector(c *CA) prometheus.Collector { return &collector{ca: c, now: time.Now} }

func (*collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{csrCountDesc, issuedDesc, authnFailureDesc, csrParseErrDesc, csrSignErrDesc,
		rootExpiryTSDesc, rootExpirySecDesc, chainExpiryTSDesc, chainExpirySecDesc, lastIssuedExpiryDesc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.ca.Stats()
	now := c.now()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(csrCountDesc, s.CSRs)
	counter(issuedDesc, s.Issued)
	counter(authnFailureDesc, s.AuthnFailures)
	counter(csrParseErrDesc, s.CSRErrors)
	counter(csrSignErrDesc, s.SignErrors)
	gauge(rootExpiryTSDesc, float64(s.RootNotAfter.Unix()))
	gauge(rootExpirySecDesc, s.RootNotAfter.Sub(now).Seconds())
	gauge(chainExpiryTSDesc, float64(s.SignerNotAfter.Unix()))
	gauge(chainExpirySecDesc, s.SignerNotAfter.Sub(now).Seconds())
	if !s.LastIssuedNotAfter.IsZero() {
		gauge(lastIssuedExpiryDesc, float64(s.LastIssuedNotAfter.Unix()))
	}
}

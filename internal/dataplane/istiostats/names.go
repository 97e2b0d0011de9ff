package istiostats

import "github.com/loom-mesh/loom/internal/metricnames"

// metricID is one of Istio's standard metrics.
type metricID uint8

const (
	mRequests metricID = iota
	mDuration
	mRequestBytes
	mResponseBytes
	mRequestMessages
	mResponseMessages
	mTCPSent
	mTCPReceived
	mTCPOpened
	mTCPClosed
	numMetrics
)

var allMetrics = [numMetrics]metricID{mRequests, mDuration, mRequestBytes, mResponseBytes,
	mRequestMessages, mResponseMessages, mTCPSent, mTCPReceived, mTCPOpened, mTCPClosed}

// metricNames are the metrics' names as PluginConfig names them (without
// "istio_") and as exported.
var metricNames = [numMetrics]struct{ config, exported string }{
	{"requests_total", "istio_requests_total"},
	{"request_duration_milliseconds", "istio_request_duration_milliseconds"},
	{"request_bytes", "istio_request_bytes"},
	{"response_bytes", "istio_response_bytes"},
	{"request_messages_total", "istio_request_messages_total"},
	{"response_messages_total", "istio_response_messages_total"},
	{"tcp_sent_bytes_total", "istio_tcp_sent_bytes_total"},
	{"tcp_received_bytes_total", "istio_tcp_received_bytes_total"},
	{"tcp_connections_opened_total", "istio_tcp_connections_opened_total"},
	{"tcp_connections_closed_total", "istio_tcp_connections_closed_total"},
}

func metricByName(n string) (metricID, bool) {
	for i, m := range metricNames {
		if m.config == n {
			return metricID(i), true
		}
	}
	return 0, false
}

// tagID is one of Istio's standard tags (labels).
type tagID uint8

const (
	tReporter tagID = iota
	tSourceWorkload
	tSourceCanonicalService
	tSourceCanonicalRevision
	tSourceWorkloadNamespace
	tSourcePrincipal
	tSourceApp
	tSourceVersion
	tSourceCluster
	tDestinationWorkload
	tDestinationWorkloadNamespace
	tDestinationPrincipal
	tDestinationApp
	tDestinationVersion
	tDestinationService
	tDestinationCanonicalService
	tDestinationCanonicalRevision
	tDestinationServiceName
	tDestinationServiceNamespace
	tDestinationCluster
	tRequestProtocol
	tResponseCode
	tGRPCResponseStatus
	tResponseFlags
	tConnectionSecurityPolicy
	numTags
)

// tagNames are the standard tags, in Istio's filter's order (the
// tagID constants'). The conversion panics at start when ProxyLabels is
// shorter; TestTagNamesAreProxyLabels fails when it is longer (the
// conversion would cut it silently).
var tagNames = [numTags]string(metricnames.ProxyLabels)

func tagByName(n string) (tagID, bool) {
	for i, t := range tagNames {
		if t == n {
			return tagID(i), true
		}
	}
	return 0, false
}

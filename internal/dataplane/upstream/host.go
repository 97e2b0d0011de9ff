package upstream

import (
	"errors"
	"net/http"
	"net/netip"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
)

// ErrOverflow is returned by Pick, or by a Host's RoundTrip, when a
// circuit breaker of the cluster (max_requests, max_pending_requests) is
// full: Envoy's 503 with response flag UO.
var ErrOverflow = errors.New("upstream overflow: circuit breaker open")

// PickOptions is what a load balancer may use to choose a host.
type PickOptions struct {
	// Hash is the request's hash (config.Route.RequestHash) for RING_HASH
	// and MAGLEV clusters; HasHash is false when the request has none.
	Hash    uint64
	HasHash bool
	// Avoid holds the hosts of earlier attempts of this request
	// (retry_host_predicate previous_hosts): the balancer picks another
	// host when it can.
	Avoid []string
	// Authority is the request's authority as it goes upstream (after
	// host rewrites). An ORIGINAL_DST cluster reading ":authority" names
	// its Host's Addr by it, so that the access log shows where the
	// request went; the round trip reads the request itself either way.
	Authority string
	// Destination is the downstream connection's original destination
	// (filter.Connection.Destination when OriginalDst): where an
	// ORIGINAL_DST cluster sends a request without a destination header.
	// The zero value means none.
	Destination netip.AddrPort
	// DownstreamHTTP2 says the request came over HTTP/2: a cluster with
	// DownstreamHTTP2 (use_downstream_protocol_config) then reaches the
	// host over HTTP/2 too (over TLS: when the socket offers h2 or ALPN
	// has an HTTP2 override).
	DownstreamHTTP2 bool
	// DownstreamHTTP10 says the request came over HTTP/1.0: a cluster
	// following the downstream's protocol then goes upstream over
	// HTTP/1.0, for ALPN's sake (the request goes over HTTP/1.1).
	DownstreamHTTP10 bool
	// ALPN is the request's HCM istio.alpn filter (nil: none): over a TLS
	// transport socket the connection offers its ALPN for the upstream
	// protocol instead of the socket's, unless the cluster opts out
	// (config.Cluster.NoALPNOverride).
	ALPN *config.ALPNOverride
	// AvoidPriorities excludes priority levels from the pick (bit k: level
	// k, 0 the highest), as Envoy's previous_priorities retry priority
	// does: their load goes to the others. It is ignored when it would
	// leave no level with usable endpoints.
	AvoidPriorities uint64

	// level is the priority level the balancer picked from (output).
	level int
}

// Host is one endpoint chosen for one attempt. The caller must call Done
// exactly once, when the attempt is over (response body read to its end
// or abandoned, or the round trip failed).
type Host struct {
	Addr string // "ip:port"
	// Priority is the priority level (0 the highest) of the cluster's
	// endpoints the host was picked from: a retry with previous_priorities
	// avoids it (PickOptions.AvoidPriorities).
	Priority int
	// RT reaches Addr over the endpoint's transport socket: the HTTP/1.1
	// pool, or HTTP/2 when the cluster is HTTP2 (h2c, or h2 over TLS).
	RT http.RoundTripper
	// HTTP2 says RT speaks HTTP/2 (h2c or h2 over TLS).
	HTTP2 bool
	// Workload is the endpoint's Istio telemetry metadata
	// (config.Endpoint.Workload); nil for none.
	Workload *istiostats.Peer

	st  *clusterState
	tls *tlsTransport // the endpoint's TLS transport socket; nil for plaintext
	pp  uint8         // the PROXY protocol version of the endpoint's transport socket; 0: none
	idx int           // the endpoint's index in the cluster's endpoints, for the load balancer
}

// Result is how an attempt ended, for outlier detection and for the
// cluster's active-request accounting.
type Result struct {
	// Status is the upstream's HTTP status, 0 when there was no response.
	Status int
	// LocalOrigin marks a failure seen by the proxy rather than answered by
	// the host: connect failure, timeout, reset (Envoy's local-origin
	// errors).
	LocalOrigin bool
}

// dialDone ends an attempt that is a connection and nothing more (a
// filter's gRPC connection, a DNS cluster's dial of a mesh service name):
// a failed dial is a local-origin failure; a connection made is a
// success (Envoy's LocalOriginConnectSuccessFinal), reported as a 200.
func (h *Host) dialDone(err error) {
	if err != nil {
		h.Done(Result{LocalOrigin: true})
		return
	}
	h.Done(Result{Status: http.StatusOK})
}

// Done reports the end of the attempt to the load balancer (active
// requests) and to the circuit breakers and outlier detection.
func (h *Host) Done(res Result) {
	if h.st == nil {
		return
	}
	h.st.lbDone(h)
	h.st.policyDone(h, res)
}

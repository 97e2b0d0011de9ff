package accesslog

import (
	"crypto/tls"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
)

// Entry is one request (or TCP connection) as the access log sees it.
// Empty strings, a negative UpstreamServiceTime and zero timings print
// as "-".
type Entry struct {
	StartTime     time.Time
	Method        string
	Path          string // X-Envoy-Original-Path, else :path
	Protocol      string // "HTTP/1.1", "HTTP/2"
	ResponseCode  int
	ResponseFlags string // "NR", "UH", "UF,URX", ...; "" for none
	// ResponseCodeDetails is Envoy's %RESPONSE_CODE_DETAILS%: "via_upstream",
	// "route_not_found", ...
	ResponseCodeDetails     string
	UpstreamFailureReason   string
	BytesReceived           int64
	BytesSent               int64
	Duration                time.Duration
	UpstreamServiceTime     time.Duration // < 0: no upstream response
	ForwardedFor            string
	UserAgent               string
	RequestID               string
	Authority               string
	UpstreamHost            string
	UpstreamCluster         string
	UpstreamLocalAddress    string
	DownstreamLocalAddress  string
	DownstreamRemoteAddress string
	RequestedServerName     string
	RouteName               string
	// RequestURI is the request's :path as received; Path is
	// X-Envoy-Original-Path when set, else it.
	RequestURI string
	// RequestHeader and ResponseHeader are the request's and response's
	// headers, for %REQ(X)%, %RESP(X)% and access log filters; nil for
	// TCP. They are read while the request's handler still runs.
	RequestHeader, ResponseHeader http.Header
	// UpstreamPeer is the upstream's sidecar identity its response
	// carried (Istio's metadata exchange); nil when none.
	UpstreamPeer *istiostats.Peer
	// UpstreamWorkload is the upstream endpoint's Istio telemetry
	// metadata (upstream.Host.Workload): a source reporter's peer when
	// UpstreamPeer is nil, as Istio's stats filter falls back on it.
	UpstreamWorkload *istiostats.Peer
	// GRPCMessages are a gRPC request's message counts (Envoy's
	// grpc_stats filter state), kept where istio.stats reports the
	// request; nil otherwise.
	GRPCMessages *istiostats.GRPCMessages
	// UpstreamTLS is the upstream connection's TLS state (Envoy's
	// upstreamSslConnection), nil for plaintext or no upstream;
	// UpstreamLocalPrincipal is the URI SAN of the certificate the proxy
	// presented on it ("" none). Istio's client-side stats read both.
	UpstreamTLS            *tls.ConnectionState
	UpstreamLocalPrincipal string
	// UpstreamProtocol is the protocol of the upstream response
	// ("HTTP/1.1", "HTTP/2"; Envoy's %UPSTREAM_PROTOCOL%), "" when there
	// was none.
	UpstreamProtocol string
	// UpstreamRequestAttemptCount is the number of upstream attempts
	// (Envoy's attempt count): retries included, 0 when no host was
	// picked.
	UpstreamRequestAttemptCount int
	// ConnectionID is the downstream connection's id (Envoy's
	// %CONNECTION_ID%) and UpstreamConnectionID the upstream one's
	// (%UPSTREAM_CONNECTION_ID%, the last attempt's), from one sequence
	// unique in the process; 0 when unknown or none.
	ConnectionID, UpstreamConnectionID uint64
	// DownstreamPeerURISAN and DownstreamLocalURISAN are the URI SANs of
	// the downstream TLS peer's certificate and of the proxy's own on
	// that connection, joined with ","; "" for plaintext or none.
	DownstreamPeerURISAN, DownstreamLocalURISAN string
	// DownstreamTLS is the downstream connection's terminated TLS
	// session (DOWNSTREAM_TLS_VERSION, DOWNSTREAM_TLS_CIPHER); nil for
	// plaintext.
	DownstreamTLS *tls.ConnectionState
	// FilterChainName is the matched filter chain's name (Envoy's
	// %FILTER_CHAIN_NAME%), "" when it has none.
	FilterChainName string
	// Envoy's stream timing: offsets from StartTime at which the last
	// request byte came from downstream, the last request byte went
	// upstream, the first response byte came from upstream and the last
	// response byte went downstream; 0 when it did not happen (a local
	// reply has no upstream timing; TCP has none).
	LastDownstreamRxByteReceived time.Duration
	LastUpstreamTxByteSent       time.Duration
	FirstUpstreamRxByteReceived  time.Duration
	LastDownstreamTxByteSent     time.Duration
	// DownstreamHandshakeDuration is a TCP connection's time from accept
	// to the end of its TLS handshake; 0 for plaintext and, as in Envoy,
	// for HTTP.
	DownstreamHandshakeDuration time.Duration
	// TraceID and SpanID are the connection manager's span (Envoy's
	// active span), sampled or not; zero when the request was not
	// traced. The OpenTelemetry access log sets its LogRecord's trace_id
	// and span_id from them.
	TraceID trace.TraceID
	SpanID  trace.SpanID
}

// AppendEntry appends e to b in Istio's default access log format, with a
// trailing newline:
//
//	[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
func AppendEntry(b []byte, e *Entry) []byte {
	b = append(b, '[')
	b = e.StartTime.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, "] \""...)
	b = appendStr(b, e.Method)
	b = append(b, ' ')
	b = appendStr(b, e.Path)
	b = append(b, ' ')
	b = appendStr(b, e.Protocol)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(e.ResponseCode), 10)
	b = append(b, ' ')
	b = appendStr(b, e.ResponseFlags)
	b = append(b, ' ')
	b = appendStrUnderscored(b, e.ResponseCodeDetails)
	b = append(b, " - \""...) // CONNECTION_TERMINATION_DETAILS: none in this version
	b = appendStrUnderscored(b, e.UpstreamFailureReason)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, e.BytesReceived, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.BytesSent, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Duration.Milliseconds(), 10)
	b = append(b, ' ')
	if e.UpstreamServiceTime >= 0 {
		b = strconv.AppendInt(b, e.UpstreamServiceTime.Milliseconds(), 10)
	} else {
		b = append(b, '-')
	}
	b = append(b, " \""...)
	b = appendStr(b, e.ForwardedFor)
	b = append(b, "\" \""...)
	b = appendStr(b, e.UserAgent)
	b = append(b, "\" \""...)
	b = appendStr(b, e.RequestID)
	b = append(b, "\" \""...)
	b = appendStr(b, e.Authority)
	b = append(b, "\" \""...)
	b = appendStr(b, e.UpstreamHost)
	b = append(b, "\" "...)
	b = appendStr(b, e.UpstreamCluster)
	b = append(b, ' ')
	b = appendStr(b, e.UpstreamLocalAddress)
	b = append(b, ' ')
	b = appendStr(b, e.DownstreamLocalAddress)
	b = append(b, ' ')
	b = appendStr(b, e.DownstreamRemoteAddress)
	b = append(b, ' ')
	b = appendStr(b, e.RequestedServerName)
	b = append(b, ' ')
	b = appendStr(b, e.RouteName)
	return append(b, '\n')
}

// appendStrUnderscored is appendStr with whitespace written as "_", as
// Envoy writes RESPONSE_CODE_DETAILS and UPSTREAM_TRANSPORT_FAILURE_REASON.
func appendStrUnderscored(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendUnderscored(b, s, true)
}

// appendStr appends s, or "-" when empty. Control characters and quotes
// are replaced so that a header cannot forge a line or a field.
func appendStr(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == 0x7f {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

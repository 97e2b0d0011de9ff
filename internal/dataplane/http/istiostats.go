package http

import (
	"net/http"
	"strings"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
)

// reportIstio counts the finished request st in Istio's standard metrics,
// with the labels Istio's stats filter gives it (istiostats.Config.Fill):
// the peer from the metadata exchange, principals from the downstream
// connection's mTLS (destination reporter) or the upstream one's (source
// reporter), the service from the
// upstream cluster. Sizes are Envoy's request.total_size and
// response.total_size (see totalSizes).
func (cm *ConnectionManager) reportIstio(w http.ResponseWriter, r *http.Request, st *reqState) {
	if cm.istio == nil {
		return
	}
	e := &st.entry
	c := st.stats
	cluster := e.UpstreamCluster
	if cluster == "" {
		// A filter answered (a fault abort): the route's cluster was
		// picked before the filters ran, as Envoy's route entry names it.
		cluster = st.routeCluster
	}
	f := istiostats.Facts{
		Cluster:  cluster,
		Route:    e.RouteName,
		Host:     e.Authority,
		Protocol: "http",
		Code:     e.ResponseCode,
		Flags:    e.ResponseFlags,
	}
	grpc := isGRPC(r.Header)
	if grpc {
		f.Protocol = "grpc"
		f.GRPCStatus = grpcStatus(w.Header())
	}
	f.Service = cm.gen.Load().IstioServiceOf(cluster)
	if c.Reporter == istiostats.ReporterSource {
		f.Peer = e.UpstreamPeer
		if f.Peer == nil {
			f.Peer = e.UpstreamWorkload
		}
		f.PeerPrincipal, f.LocalPrincipal = istiostats.PeerPrincipal(e.UpstreamTLS), e.UpstreamLocalPrincipal
	} else {
		f.Peer = st.peer
		if conn := filter.RequestConnection(r); conn != nil {
			f.PeerPrincipal, f.LocalPrincipal = conn.Principals()
		}
	}
	var self *istiostats.Peer
	if cm.exchange != nil {
		self = &cm.exchange.Self
	} else {
		self = &istiostats.Peer{}
	}
	c.Fill(self, &f, &st.labels)
	reqTotal, respTotal := totalSizes(r, w.Header(), e)
	req := istiostats.Request{
		Labels:         &st.labels,
		DurationMillis: float64(e.Duration.Microseconds()) / 1000,
		RequestBytes:   reqTotal,
		ResponseBytes:  respTotal,
		GRPC:           grpc,
	}
	if m := e.GRPCMessages; m != nil {
		req.RequestMessages, req.ResponseMessages = m.Request.Count(), m.Response.Count()
	}
	if c.HasOverrides() {
		a := &istiostats.Attributes{Request: r, ResponseHeader: w.Header(), ResponseCode: e.ResponseCode,
			CodeDetails: e.ResponseCodeDetails, Flags: e.ResponseFlags, GRPCStatus: f.GRPCStatus,
			RequestBytes: e.BytesReceived, ResponseBytes: e.BytesSent, RequestTotalBytes: reqTotal, ResponseTotalBytes: respTotal,
			UpstreamHost: e.UpstreamHost, Cluster: e.UpstreamCluster, Route: e.RouteName,
			MTLS: f.PeerPrincipal != "" && f.LocalPrincipal != ""}
		if conn := filter.RequestConnection(r); conn != nil {
			a.Source, a.Destination, a.SNI = conn.Source.String(), conn.Destination.String(), conn.ServerName
		}
		if cm.exchange != nil {
			a.Node = &cm.exchange.Node
		}
		if c.Reporter == istiostats.ReporterSource {
			// The exchange's peer: the endpoint fallback is the stats
			// filter's own, not the filter state CEL reads.
			a.UpstreamPeer = e.UpstreamPeer
		} else {
			a.DownstreamPeer = f.Peer
		}
		req.Attributes = a
	}
	cm.istio.RecordRequest(c, &req)
}

// grpcStatus is the response's grpc-status, from its trailers or (a
// trailers-only response) its headers; "" when it has none.
func grpcStatus(h http.Header) string {
	if v := h[http.TrailerPrefix+"Grpc-Status"]; len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	if v := h["Grpc-Status"]; len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

// totalSizes returns Envoy's request.total_size and response.total_size of
// the finished request r, answered through response header map h: the
// body bytes (e.BytesReceived, e.BytesSent) plus the header maps' byte
// sizes, the response's trailers included. Istio's stats plugin
// (istio/proxy extensions/stats) recorded these two in
// istio_request_bytes and istio_response_bytes; the native filter that
// replaced it records the stream's wire bytes, which net/http does not
// expose (see docs/design-notes.md). A request that got no response (e.ResponseCode
// 0) has no response headers. It does not allocate.
func totalSizes(r *http.Request, h http.Header, e *telemetry.Entry) (req, resp int64) {
	req = e.BytesReceived + requestHeadersBytes(r, e.Authority)
	resp = e.BytesSent
	if e.ResponseCode != 0 {
		resp += responseHeadersBytes(e.ResponseCode, h)
	}
	return req, resp
}

// requestHeadersBytes is Envoy's RequestHeaderMap::byteSize() of r as the
// proxy forwards it (the connection manager's and router's headers
// added, hop-by-hop ones removed, as Envoy mutates the downstream map in
// place): the length of every name and value, with the pseudo-headers
// :method, :path, :authority (authority) and :scheme, which Go keeps
// outside r.Header. :path is the path as received.
func requestHeadersBytes(r *http.Request, authority string) int64 {
	path := r.RequestURI
	if r.URL.Host != "" {
		// Absolute form (explicit proxy): Envoy's :path is the path part.
		if i := strings.Index(path, "://"); i >= 0 {
			path = path[i+len("://"):]
			if j := strings.IndexByte(path, '/'); j >= 0 {
				path = path[j:]
			} else {
				path = "/"
			}
		}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	n := len(":method") + len(r.Method) + len(":path") + len(path) +
		len(":authority") + len(authority) + len(":scheme") + len(scheme)
	for k, vv := range r.Header {
		for _, v := range vv {
			n += len(k) + len(v)
		}
	}
	return int64(n)
}

// responseHeadersBytes is Envoy's ResponseHeaderMap::byteSize() plus its
// ResponseTrailerMap's for a response with status code whose header map
// is h: :status and every name and value; trailers are h's
// http.TrailerPrefix keys, counted without the prefix. The Trailer field
// net/http reads to announce them is not counted: the proxy drops the
// upstream's as hop-by-hop, and Envoy's map holds none.
func responseHeadersBytes(code int, h http.Header) int64 {
	n := len(":status") + decimalLen(code)
	for k, vv := range h {
		if k == "Trailer" {
			continue
		}
		kl := len(k)
		if strings.HasPrefix(k, http.TrailerPrefix) {
			kl -= len(http.TrailerPrefix)
		}
		for _, v := range vv {
			n += kl + len(v)
		}
	}
	return int64(n)
}

// decimalLen is the number of digits of n >= 0 in base 10.
func decimalLen(n int) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}

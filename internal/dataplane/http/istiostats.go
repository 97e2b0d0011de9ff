package http

import (
	"net/http"
	"strings"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
)

// reportIstio counts the finished request st in Istio's standard metrics,
// with the labels Istio's stats filter gives it (istiostats.Config.Fill):
// the peer from the metadata exchange, principals from the downstream
// connection's mTLS (destination reporter) or the upstream one's (source
// reporter), the service from the
// upstream cluster. Sizes are body bytes (Envoy's are wire bytes).
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
	req := istiostats.Request{
		Labels:         &st.labels,
		DurationMillis: float64(e.Duration.Microseconds()) / 1000,
		RequestBytes:   e.BytesReceived,
		ResponseBytes:  e.BytesSent,
		GRPC:           grpc,
	}
	if m := e.GRPCMessages; m != nil {
		req.RequestMessages, req.ResponseMessages = m.Request.Count(), m.Response.Count()
	}
	if c.HasOverrides() {
		a := &istiostats.Attributes{Request: r, ResponseHeader: w.Header(), ResponseCode: e.ResponseCode,
			CodeDetails: e.ResponseCodeDetails, Flags: e.ResponseFlags, GRPCStatus: f.GRPCStatus,
			RequestBytes: e.BytesReceived, ResponseBytes: e.BytesSent, UpstreamHost: e.UpstreamHost,
			Cluster: e.UpstreamCluster, Route: e.RouteName, MTLS: f.PeerPrincipal != "" && f.LocalPrincipal != ""}
		if conn := filter.RequestConnection(r); conn != nil {
			a.Source, a.Destination, a.SNI = conn.Source.String(), conn.Destination.String(), conn.ServerName
		}
		if cm.exchange != nil {
			a.Node = &cm.exchange.Node
		}
		if c.Reporter == istiostats.ReporterSource {
			a.UpstreamPeer = f.Peer
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

package istiostats

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/loom-mesh/loom/internal/statsexpr"
)

// Expr is a metric dimension's value expression (MetricConfig.dimensions,
// the Telemetry API's tagOverrides value), as statsexpr.Parse reads it:
// a string literal or one of Envoy's attributes (request.host,
// request.headers['x-user'], response.code, upstream_peer.app, ...).
// An attribute without a value evaluates to "unknown", as Istio's filter
// reports a failed evaluation. An Expr is immutable.
type Expr struct {
	lit  string
	attr statsexpr.Attr
	key  string // header name, metadata key or peer field
}

// ParseExpr parses a dimension expression with statsexpr.Parse, the
// parser loomd checks what it sends with; the error says what of it is
// not supported.
func ParseExpr(s string) (*Expr, error) {
	p, err := statsexpr.Parse(s)
	if err != nil {
		return nil, err
	}
	return &Expr{lit: p.Literal, attr: p.Attr, key: p.Key}, nil
}

// Attributes are what an Expr reads of one request or connection. The
// request path fills it only for chains whose stats config has overrides.
type Attributes struct {
	Request        *http.Request // nil for TCP
	ResponseHeader http.Header
	ResponseCode   int
	CodeDetails    string
	Flags          string
	GRPCStatus     string
	// RequestBytes and ResponseBytes are the body bytes (request.size,
	// response.size); RequestTotalBytes and ResponseTotalBytes add the
	// header maps' sizes, the response's trailers too
	// (request.total_size, response.total_size).
	RequestBytes       int64
	ResponseBytes      int64
	RequestTotalBytes  int64
	ResponseTotalBytes int64
	Source             string // ip:port
	Destination        string // ip:port
	MTLS               bool
	SNI                string
	UpstreamHost       string
	Cluster            string
	Route              string
	Node               *Node
	UpstreamPeer       *Peer
	DownstreamPeer     *Peer
}

// Eval returns e's value for a.
func (e *Expr) Eval(a *Attributes) string {
	v := e.eval(a)
	if v == "" && e.attr != statsexpr.Literal {
		return unknown
	}
	return v
}

func (e *Expr) eval(a *Attributes) string {
	r := a.Request
	switch e.attr {
	case statsexpr.Literal:
		return e.lit
	case statsexpr.RequestHost:
		if r != nil {
			return r.Host
		}
	case statsexpr.RequestMethod:
		if r != nil {
			return r.Method
		}
	case statsexpr.RequestPath:
		if r != nil {
			return r.URL.RequestURI()
		}
	case statsexpr.RequestURLPath:
		if r != nil {
			return r.URL.EscapedPath()
		}
	case statsexpr.RequestScheme:
		if r != nil {
			if r.TLS != nil {
				return "https"
			}
			return "http"
		}
	case statsexpr.RequestProtocol:
		if r != nil {
			return r.Proto
		}
	case statsexpr.RequestUserAgent:
		if r != nil {
			return r.UserAgent()
		}
	case statsexpr.RequestID:
		if r != nil {
			return r.Header.Get("X-Request-Id")
		}
	case statsexpr.RequestReferer:
		if r != nil {
			return r.Referer()
		}
	case statsexpr.RequestHeader:
		if r != nil {
			return headerValue(r.Header, e.key)
		}
	case statsexpr.RequestSize:
		return strconv.FormatInt(a.RequestBytes, 10)
	case statsexpr.RequestTotalSize:
		return strconv.FormatInt(a.RequestTotalBytes, 10)
	case statsexpr.ResponseCode:
		return strconv.Itoa(a.ResponseCode)
	case statsexpr.ResponseCodeDetails:
		return a.CodeDetails
	case statsexpr.ResponseFlags:
		if a.Flags == "" {
			return "-"
		}
		return a.Flags
	case statsexpr.ResponseGRPCStatus:
		return a.GRPCStatus
	case statsexpr.ResponseHeader:
		return headerValue(a.ResponseHeader, e.key)
	case statsexpr.ResponseSize:
		return strconv.FormatInt(a.ResponseBytes, 10)
	case statsexpr.ResponseTotalSize:
		return strconv.FormatInt(a.ResponseTotalBytes, 10)
	case statsexpr.SourceAddress:
		return hostOf(a.Source)
	case statsexpr.SourcePort:
		return portOf(a.Source)
	case statsexpr.DestinationAddress:
		return hostOf(a.Destination)
	case statsexpr.DestinationPort:
		return portOf(a.Destination)
	case statsexpr.ConnectionMTLS:
		return strconv.FormatBool(a.MTLS)
	case statsexpr.ConnectionSNI:
		return a.SNI
	case statsexpr.UpstreamAddress:
		return a.UpstreamHost
	case statsexpr.ClusterName:
		return a.Cluster
	case statsexpr.RouteName:
		return a.Route
	case statsexpr.NodeID:
		if a.Node != nil {
			return a.Node.ID
		}
	case statsexpr.NodeMetadata:
		if a.Node != nil {
			return a.Node.Metadata[e.key]
		}
	case statsexpr.UpstreamPeer:
		return a.UpstreamPeer.field(e.key)
	case statsexpr.DownstreamPeer:
		return a.DownstreamPeer.field(e.key)
	}
	return ""
}

func headerValue(h http.Header, k string) string {
	if vs := h[k]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func hostOf(hp string) string {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 {
		return hp
	}
	return strings.Trim(hp[:i], "[]")
}

func portOf(hp string) string {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 {
		return ""
	}
	return hp[i+1:]
}

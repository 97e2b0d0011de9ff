package istiostats

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Expr is a metric dimension's value expression (MetricConfig.dimensions,
// the Telemetry API's tagOverrides value): the subset of CEL over Envoy's
// attributes that Istio's documentation uses. It is one of
//
//   - a string literal: 'text' or "text";
//   - an attribute, such as request.host, request.method,
//     request.url_path, request.headers['x-user'], response.code,
//     response.grpc_status, response.flags, response.headers['x'],
//     source.address, source.port, destination.address,
//     destination.port, connection.mtls,
//     connection.requested_server_name, upstream.address,
//     xds.cluster_name, xds.route_name, node.id, node.metadata['KEY'],
//     and the peers' upstream_peer.X / downstream_peer.X with X one of
//     workload, namespace, app, version, cluster, service, revision or
//     labels['k'];
//   - string(e) or e.value of one of these (the value is already a
//     string).
//
// An attribute without a value evaluates to "unknown", as Istio's filter
// reports a failed evaluation. An Expr is immutable.
type Expr struct {
	lit  string
	attr attrID
	key  string // header name, metadata key or label
}

type attrID uint8

const (
	attrLiteral attrID = iota
	attrRequestHost
	attrRequestMethod
	attrRequestPath
	attrRequestURLPath
	attrRequestScheme
	attrRequestProtocol
	attrRequestUserAgent
	attrRequestID
	attrRequestReferer
	attrRequestHeader
	attrRequestSize
	attrResponseCode
	attrResponseCodeDetails
	attrResponseFlags
	attrResponseGRPCStatus
	attrResponseHeader
	attrResponseSize
	attrSourceAddress
	attrSourcePort
	attrDestinationAddress
	attrDestinationPort
	attrConnectionMTLS
	attrConnectionSNI
	attrUpstreamAddress
	attrClusterName
	attrRouteName
	attrNodeID
	attrNodeMetadata
	attrUpstreamPeer   // key: the peer field
	attrDownstreamPeer // key: the peer field
)

var simpleAttrs = map[string]attrID{
	"request.host":                     attrRequestHost,
	"request.method":                   attrRequestMethod,
	"request.path":                     attrRequestPath,
	"request.url_path":                 attrRequestURLPath,
	"request.scheme":                   attrRequestScheme,
	"request.protocol":                 attrRequestProtocol,
	"request.useragent":                attrRequestUserAgent,
	"request.id":                       attrRequestID,
	"request.referer":                  attrRequestReferer,
	"request.size":                     attrRequestSize,
	"response.code":                    attrResponseCode,
	"response.code_details":            attrResponseCodeDetails,
	"response.flags":                   attrResponseFlags,
	"response.grpc_status":             attrResponseGRPCStatus,
	"response.size":                    attrResponseSize,
	"source.address":                   attrSourceAddress,
	"source.port":                      attrSourcePort,
	"destination.address":              attrDestinationAddress,
	"destination.port":                 attrDestinationPort,
	"connection.mtls":                  attrConnectionMTLS,
	"connection.requested_server_name": attrConnectionSNI,
	"upstream.address":                 attrUpstreamAddress,
	"xds.cluster_name":                 attrClusterName,
	"xds.route_name":                   attrRouteName,
	"node.id":                          attrNodeID,
}

var peerFields = map[string]string{
	"workload": "workload", "workload_name": "workload", "name": "workload",
	"namespace": "namespace", "app": "app", "version": "version",
	"cluster": "cluster", "cluster_id": "cluster", "service": "service",
	"revision": "revision", "canonical_service": "service", "canonical_revision": "revision",
}

// ParseExpr parses a dimension expression; the error says what of it is
// not supported.
func ParseExpr(s string) (*Expr, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return nil, errors.New("empty expression")
	}
	if inner, ok := strings.CutPrefix(t, "string("); ok {
		inner, ok = strings.CutSuffix(inner, ")")
		if !ok {
			return nil, errors.New("unbalanced string(")
		}
		return ParseExpr(inner)
	}
	if lit, ok := quoted(t); ok {
		return &Expr{lit: lit}, nil
	}
	t = strings.TrimSuffix(t, ".value")
	if id, ok := simpleAttrs[t]; ok {
		return &Expr{attr: id}, nil
	}
	base, key, hasKey, err := splitIndex(t)
	if err != nil {
		return nil, err
	}
	switch {
	case hasKey && base == "request.headers":
		return &Expr{attr: attrRequestHeader, key: http.CanonicalHeaderKey(key)}, nil
	case hasKey && base == "response.headers":
		return &Expr{attr: attrResponseHeader, key: http.CanonicalHeaderKey(key)}, nil
	case hasKey && base == "node.metadata":
		return &Expr{attr: attrNodeMetadata, key: key}, nil
	case hasKey && (base == "upstream_peer.labels" || base == "downstream_peer.labels"):
		id := attrUpstreamPeer
		if strings.HasPrefix(base, "downstream") {
			id = attrDownstreamPeer
		}
		return &Expr{attr: id, key: "labels/" + key}, nil
	case !hasKey:
		for _, root := range []string{"upstream_peer.", "downstream_peer."} {
			if f, ok := strings.CutPrefix(t, root); ok {
				field, known := peerFields[f]
				if !known {
					return nil, fmt.Errorf("unknown peer attribute %q", f)
				}
				id := attrUpstreamPeer
				if root == "downstream_peer." {
					id = attrDownstreamPeer
				}
				return &Expr{attr: id, key: field}, nil
			}
		}
	}
	return nil, fmt.Errorf("unsupported expression (Loom evaluates string literals and Envoy's request, response, source, destination, connection, upstream, xds, node and peer attributes)")
}

// quoted returns the text of a single- or double-quoted literal.
func quoted(s string) (string, bool) {
	if len(s) < 2 || (s[0] != '\'' && s[0] != '"') || s[len(s)-1] != s[0] {
		return "", false
	}
	body := s[1 : len(s)-1]
	if strings.ContainsRune(body, rune(s[0])) || strings.ContainsRune(body, '\\') {
		return "", false
	}
	return body, true
}

// splitIndex splits "a.b['k']" into "a.b" and "k".
func splitIndex(s string) (base, key string, ok bool, err error) {
	i := strings.IndexByte(s, '[')
	if i < 0 {
		return s, "", false, nil
	}
	if !strings.HasSuffix(s, "]") {
		return "", "", false, errors.New("unbalanced [")
	}
	k, qok := quoted(s[i+1 : len(s)-1])
	if !qok {
		return "", "", false, errors.New("an index must be a quoted string")
	}
	return s[:i], k, true, nil
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
	RequestBytes   int64
	ResponseBytes  int64
	Source         string // ip:port
	Destination    string // ip:port
	MTLS           bool
	SNI            string
	UpstreamHost   string
	Cluster        string
	Route          string
	Node           *Node
	UpstreamPeer   *Peer
	DownstreamPeer *Peer
}

// Eval returns e's value for a.
func (e *Expr) Eval(a *Attributes) string {
	v := e.eval(a)
	if v == "" && e.attr != attrLiteral {
		return unknown
	}
	return v
}

func (e *Expr) eval(a *Attributes) string {
	r := a.Request
	switch e.attr {
	case attrLiteral:
		return e.lit
	case attrRequestHost:
		if r != nil {
			return r.Host
		}
	case attrRequestMethod:
		if r != nil {
			return r.Method
		}
	case attrRequestPath:
		if r != nil {
			return r.URL.RequestURI()
		}
	case attrRequestURLPath:
		if r != nil {
			return r.URL.EscapedPath()
		}
	case attrRequestScheme:
		if r != nil {
			if r.TLS != nil {
				return "https"
			}
			return "http"
		}
	case attrRequestProtocol:
		if r != nil {
			return r.Proto
		}
	case attrRequestUserAgent:
		if r != nil {
			return r.UserAgent()
		}
	case attrRequestID:
		if r != nil {
			return r.Header.Get("X-Request-Id")
		}
	case attrRequestReferer:
		if r != nil {
			return r.Referer()
		}
	case attrRequestHeader:
		if r != nil {
			return headerValue(r.Header, e.key)
		}
	case attrRequestSize:
		return strconv.FormatInt(a.RequestBytes, 10)
	case attrResponseCode:
		return strconv.Itoa(a.ResponseCode)
	case attrResponseCodeDetails:
		return a.CodeDetails
	case attrResponseFlags:
		if a.Flags == "" {
			return "-"
		}
		return a.Flags
	case attrResponseGRPCStatus:
		return a.GRPCStatus
	case attrResponseHeader:
		return headerValue(a.ResponseHeader, e.key)
	case attrResponseSize:
		return strconv.FormatInt(a.ResponseBytes, 10)
	case attrSourceAddress:
		return hostOf(a.Source)
	case attrSourcePort:
		return portOf(a.Source)
	case attrDestinationAddress:
		return hostOf(a.Destination)
	case attrDestinationPort:
		return portOf(a.Destination)
	case attrConnectionMTLS:
		return strconv.FormatBool(a.MTLS)
	case attrConnectionSNI:
		return a.SNI
	case attrUpstreamAddress:
		return a.UpstreamHost
	case attrClusterName:
		return a.Cluster
	case attrRouteName:
		return a.Route
	case attrNodeID:
		if a.Node != nil {
			return a.Node.ID
		}
	case attrNodeMetadata:
		if a.Node != nil {
			return a.Node.Metadata[e.key]
		}
	case attrUpstreamPeer:
		return a.UpstreamPeer.field(e.key)
	case attrDownstreamPeer:
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

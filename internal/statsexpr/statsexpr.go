package statsexpr

import (
	"errors"
	"fmt"
	"net/textproto"
	"strings"
)

// Attr is what an expression reads: a literal, one of Envoy's attributes,
// or a keyed attribute (a header, node metadata or a peer field).
type Attr uint8

// The attributes, named after Envoy's (envoy attributes reference) and
// Istio's peer metadata (upstream_peer, downstream_peer).
const (
	Literal Attr = iota // Expr.Literal
	RequestHost
	RequestMethod
	RequestPath
	RequestURLPath
	RequestScheme
	RequestProtocol
	RequestUserAgent
	RequestID
	RequestReferer
	RequestHeader // Expr.Key: the canonical header name
	RequestSize
	RequestTotalSize
	ResponseCode
	ResponseCodeDetails
	ResponseFlags
	ResponseGRPCStatus
	ResponseHeader // Expr.Key: the canonical header name
	ResponseSize
	ResponseTotalSize
	SourceAddress
	SourcePort
	DestinationAddress
	DestinationPort
	ConnectionMTLS
	ConnectionSNI
	UpstreamAddress
	ClusterName
	RouteName
	NodeID
	NodeMetadata   // Expr.Key: the metadata key
	UpstreamPeer   // Expr.Key: a peer field (PeerFields' value) or "labels/" + label
	DownstreamPeer // Expr.Key: as UpstreamPeer
)

// Expr is a parsed expression: Attr, with Literal's text or the Key of a
// keyed attribute.
type Expr struct {
	Attr    Attr
	Literal string
	Key     string
}

// simpleAttrs are the attributes without a key, by their CEL name.
var simpleAttrs = map[string]Attr{
	"request.host":                     RequestHost,
	"request.method":                   RequestMethod,
	"request.path":                     RequestPath,
	"request.url_path":                 RequestURLPath,
	"request.scheme":                   RequestScheme,
	"request.protocol":                 RequestProtocol,
	"request.useragent":                RequestUserAgent,
	"request.id":                       RequestID,
	"request.referer":                  RequestReferer,
	"request.size":                     RequestSize,
	"request.total_size":               RequestTotalSize,
	"response.code":                    ResponseCode,
	"response.code_details":            ResponseCodeDetails,
	"response.flags":                   ResponseFlags,
	"response.grpc_status":             ResponseGRPCStatus,
	"response.size":                    ResponseSize,
	"response.total_size":              ResponseTotalSize,
	"source.address":                   SourceAddress,
	"source.port":                      SourcePort,
	"destination.address":              DestinationAddress,
	"destination.port":                 DestinationPort,
	"connection.mtls":                  ConnectionMTLS,
	"connection.requested_server_name": ConnectionSNI,
	"upstream.address":                 UpstreamAddress,
	"xds.cluster_name":                 ClusterName,
	"xds.route_name":                   RouteName,
	"node.id":                          NodeID,
}

// peerFields maps the peer attribute names Istio's docs use to the peer
// metadata field they read (workload_name and name are the workload,
// canonical_service the service, ...).
var peerFields = map[string]string{
	"workload": "workload", "workload_name": "workload", "name": "workload",
	"namespace": "namespace", "app": "app", "version": "version",
	"cluster": "cluster", "cluster_id": "cluster", "service": "service",
	"revision": "revision", "canonical_service": "service", "canonical_revision": "revision",
}

// Parse parses a tag value expression. It accepts
//
//   - a string literal: 'text' or "text" (no escapes, no inner quote);
//   - an attribute: request.host, request.method, request.path,
//     request.url_path, request.scheme, request.protocol,
//     request.useragent, request.id, request.referer, request.size,
//     request.total_size,
//     request.headers['h'], response.code, response.code_details,
//     response.flags, response.grpc_status, response.size,
//     response.total_size,
//     response.headers['h'], source.address, source.port,
//     destination.address, destination.port, connection.mtls,
//     connection.requested_server_name, upstream.address,
//     xds.cluster_name, xds.route_name, node.id, node.metadata['KEY'];
//   - a peer's upstream_peer.F or downstream_peer.F, with F one of
//     workload, workload_name, name, namespace, app, version, cluster,
//     cluster_id, service, revision, canonical_service,
//     canonical_revision, or labels['k'];
//   - string(e) or e.value of one of these (the value is already a
//     string).
//
// The error says what of s is not supported; nothing else is returned
// with it.
func Parse(s string) (Expr, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Expr{}, errors.New("empty expression")
	}
	if inner, ok := strings.CutPrefix(t, "string("); ok {
		inner, ok = strings.CutSuffix(inner, ")")
		if !ok {
			return Expr{}, errors.New("unbalanced string(")
		}
		return Parse(inner)
	}
	if lit, ok := quoted(t); ok {
		return Expr{Attr: Literal, Literal: lit}, nil
	}
	t = strings.TrimSuffix(t, ".value")
	if a, ok := simpleAttrs[t]; ok {
		return Expr{Attr: a}, nil
	}
	base, key, hasKey, err := splitIndex(t)
	if err != nil {
		return Expr{}, err
	}
	switch {
	case hasKey && base == "request.headers":
		return Expr{Attr: RequestHeader, Key: textproto.CanonicalMIMEHeaderKey(key)}, nil
	case hasKey && base == "response.headers":
		return Expr{Attr: ResponseHeader, Key: textproto.CanonicalMIMEHeaderKey(key)}, nil
	case hasKey && base == "node.metadata":
		return Expr{Attr: NodeMetadata, Key: key}, nil
	case hasKey && base == "upstream_peer.labels":
		return Expr{Attr: UpstreamPeer, Key: "labels/" + key}, nil
	case hasKey && base == "downstream_peer.labels":
		return Expr{Attr: DownstreamPeer, Key: "labels/" + key}, nil
	case !hasKey:
		for root, a := range map[string]Attr{"upstream_peer.": UpstreamPeer, "downstream_peer.": DownstreamPeer} {
			if f, ok := strings.CutPrefix(t, root); ok {
				field, known := peerFields[f]
				if !known {
					return Expr{}, fmt.Errorf("unknown peer attribute %q", f)
				}
				return Expr{Attr: a, Key: field}, nil
			}
		}
	}
	return Expr{}, errors.New("unsupported expression (Loom evaluates string literals and Envoy's request, response, source, destination, connection, upstream, xds, node and peer attributes)")
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

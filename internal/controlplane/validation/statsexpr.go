package validation

import (
	"errors"
	"regexp"
	"strings"
)

// promLabelRE is a Prometheus label name.
var promLabelRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// StatsExpr checks a metric tag's value expression (Telemetry
// tagOverrides[].value, the stats filter's dimensions) against the subset
// of CEL the proxy's stats filter evaluates: a quoted string literal;
// string(e) or e.value of an expression; an Envoy attribute of
// statsAttrs; request.headers['h'], response.headers['h'],
// node.metadata['K'], {upstream,downstream}_peer.labels['k']; or
// {upstream,downstream}_peer.F with F of statsPeerFields. It mirrors the
// proxy's istiostats.ParseExpr (test/integration keeps the two in step),
// so that loomd never sends an expression the proxy must refuse.
func StatsExpr(s string) error {
	t := strings.TrimSpace(s)
	if t == "" {
		return errors.New("empty expression")
	}
	if inner, ok := strings.CutPrefix(t, "string("); ok {
		inner, ok = strings.CutSuffix(inner, ")")
		if !ok {
			return errors.New("unbalanced string(")
		}
		return StatsExpr(inner)
	}
	if _, ok := quotedLiteral(t); ok {
		return nil
	}
	t = strings.TrimSuffix(t, ".value")
	if statsAttrs[t] {
		return nil
	}
	if i := strings.IndexByte(t, '['); i >= 0 {
		if !strings.HasSuffix(t, "]") {
			return errors.New("unbalanced [")
		}
		if _, ok := quotedLiteral(t[i+1 : len(t)-1]); !ok {
			return errors.New("an index must be a quoted string")
		}
		switch t[:i] {
		case "request.headers", "response.headers", "node.metadata", "upstream_peer.labels", "downstream_peer.labels":
			return nil
		}
	} else {
		for _, root := range []string{"upstream_peer.", "downstream_peer."} {
			if f, ok := strings.CutPrefix(t, root); ok {
				if statsPeerFields[f] {
					return nil
				}
				return errors.New("unknown peer attribute " + f)
			}
		}
	}
	return errors.New("unsupported expression (Loom evaluates string literals and Envoy's request, response, source, destination, connection, upstream, xds, node and peer attributes)")
}

func quotedLiteral(s string) (string, bool) {
	if len(s) < 2 || (s[0] != '\'' && s[0] != '"') || s[len(s)-1] != s[0] {
		return "", false
	}
	body := s[1 : len(s)-1]
	if strings.ContainsRune(body, rune(s[0])) || strings.ContainsRune(body, '\\') {
		return "", false
	}
	return body, true
}

// statsAttrs are the plain attributes the proxy's stats filter evaluates.
var statsAttrs = map[string]bool{
	"request.host": true, "request.method": true, "request.path": true, "request.url_path": true,
	"request.scheme": true, "request.protocol": true, "request.useragent": true, "request.id": true,
	"request.referer": true, "request.size": true,
	"response.code": true, "response.code_details": true, "response.flags": true, "response.grpc_status": true,
	"response.size":  true,
	"source.address": true, "source.port": true, "destination.address": true, "destination.port": true,
	"connection.mtls": true, "connection.requested_server_name": true, "upstream.address": true,
	"xds.cluster_name": true, "xds.route_name": true, "node.id": true,
}

// statsPeerFields are the peer attributes it evaluates.
var statsPeerFields = map[string]bool{
	"workload": true, "workload_name": true, "name": true, "namespace": true, "app": true, "version": true,
	"cluster": true, "cluster_id": true, "service": true, "revision": true, "canonical_service": true,
	"canonical_revision": true,
}

// StatsExprSamples are expressions of every shape StatsExpr accepts, for
// the test that keeps it in step with the proxy's parser.
func StatsExprSamples() []string {
	out := []string{"'literal'", `"literal"`, "string(request.host)", "request.host.value",
		"request.headers['x-user']", "response.headers['x-a']", "node.metadata['CLUSTER_ID']",
		"upstream_peer.labels['app']", "downstream_peer.labels['version']"}
	for a := range statsAttrs {
		out = append(out, a)
	}
	for f := range statsPeerFields {
		out = append(out, "upstream_peer."+f, "downstream_peer."+f)
	}
	return out
}

package statsexpr

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Expr
		wantErr bool
	}{
		{in: "'literal'", want: Expr{Attr: Literal, Literal: "literal"}},
		{in: `"two words"`, want: Expr{Attr: Literal, Literal: "two words"}},
		{in: "  request.host  ", want: Expr{Attr: RequestHost}},
		{in: "string(request.host)", want: Expr{Attr: RequestHost}},
		{in: "request.host.value", want: Expr{Attr: RequestHost}},
		{in: "string(response.code.value)", want: Expr{Attr: ResponseCode}},
		{in: "connection.requested_server_name", want: Expr{Attr: ConnectionSNI}},
		{in: "xds.cluster_name", want: Expr{Attr: ClusterName}},
		{in: "request.total_size", want: Expr{Attr: RequestTotalSize}},
		{in: "string(response.total_size)", want: Expr{Attr: ResponseTotalSize}},
		{in: "request.headers['x-user']", want: Expr{Attr: RequestHeader, Key: "X-User"}},
		{in: `response.headers["grpc-status"]`, want: Expr{Attr: ResponseHeader, Key: "Grpc-Status"}},
		{in: "node.metadata['CLUSTER_ID']", want: Expr{Attr: NodeMetadata, Key: "CLUSTER_ID"}},
		{in: "upstream_peer.labels['app']", want: Expr{Attr: UpstreamPeer, Key: "labels/app"}},
		{in: "downstream_peer.labels['version']", want: Expr{Attr: DownstreamPeer, Key: "labels/version"}},
		{in: "upstream_peer.workload_name", want: Expr{Attr: UpstreamPeer, Key: "workload"}},
		{in: "downstream_peer.canonical_service", want: Expr{Attr: DownstreamPeer, Key: "service"}},
		{in: "downstream_peer.namespace", want: Expr{Attr: DownstreamPeer, Key: "namespace"}},
		// Istio's corpus has `value: add`; it is CEL but not an attribute.
		{in: "add", wantErr: true},
		{in: "", wantErr: true},
		{in: "string(request.host", wantErr: true},
		{in: "request.host + 'x'", wantErr: true},
		{in: "has(request.host)", wantErr: true},
		{in: "upstream_peer.nope", wantErr: true},
		{in: "upstream_peer.labels", wantErr: true},
		{in: "request.headers[x]", wantErr: true},
		{in: "request.headers['x'", wantErr: true},
		{in: `'it\'s'`, wantErr: true},
		{in: "request.time", wantErr: true},
		{in: "source.labels['app']", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Parse(%q) = %+v, %v; want error %v", tc.in, got, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// TestEveryAttribute: every attribute name parses to its own Attr, none
// is Literal, and peer fields read a known field.
func TestEveryAttribute(t *testing.T) {
	seen := map[Attr]string{}
	for name, a := range simpleAttrs {
		got, err := Parse(name)
		if err != nil || got.Attr != a || a == Literal {
			t.Errorf("Parse(%q) = %+v, %v; want %v", name, got, err, a)
		}
		if prev, dup := seen[a]; dup {
			t.Errorf("%q and %q parse to the same attribute", name, prev)
		}
		seen[a] = name
	}
	for f := range peerFields {
		for _, root := range []string{"upstream_peer.", "downstream_peer."} {
			if _, err := Parse(root + f); err != nil {
				t.Errorf("Parse(%q): %v", root+f, err)
			}
		}
	}
}

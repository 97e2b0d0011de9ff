package translate

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	networking "istio.io/api/networking/v1alpha3"
)

func TestTranslateHeaders(t *testing.T) {
	set := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	}
	add := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD}
	}
	in := &networking.Headers{
		Request: &networking.Headers_HeaderOperations{
			Set:    map[string]string{"x-b": "2", "x-a": "1", ":authority": "set.example.com"},
			Add:    map[string]string{"x-c": "3", "host": "add.example.com"},
			Remove: []string{"x-d", ":path", "Host"},
		},
		Response: &networking.Headers_HeaderOperations{
			Set:    map[string]string{"x-e": "5"},
			Add:    map[string]string{"x-f": "6"},
			Remove: []string{"x-g"},
		},
	}
	got := &routev3.Route{}
	ops := translateHeaders(in)
	ops.applyToRoute(got)
	want := &routev3.Route{
		RequestHeadersToAdd:     []*corev3.HeaderValueOption{set("x-a", "1"), set("x-b", "2"), add("x-c", "3")},
		RequestHeadersToRemove:  []string{"x-d"},
		ResponseHeadersToAdd:    []*corev3.HeaderValueOption{set("x-e", "5"), add("x-f", "6")},
		ResponseHeadersToRemove: []string{"x-g"},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("route headers (-want +got):\n%s", diff)
	}
	if ops.authority != "set.example.com" {
		t.Errorf("authority = %q, want the set one over the added one", ops.authority)
	}
	if a := translateHeaders(&networking.Headers{Request: &networking.Headers_HeaderOperations{Add: map[string]string{"Host": "h"}}}).authority; a != "h" {
		t.Errorf("authority from add = %q, want %q", a, "h")
	}

	cw := &routev3.WeightedCluster_ClusterWeight{Name: "c"}
	ops.applyToClusterWeight(cw)
	wantCW := &routev3.WeightedCluster_ClusterWeight{
		Name:                    "c",
		RequestHeadersToAdd:     want.RequestHeadersToAdd,
		RequestHeadersToRemove:  want.RequestHeadersToRemove,
		ResponseHeadersToAdd:    want.ResponseHeadersToAdd,
		ResponseHeadersToRemove: want.ResponseHeadersToRemove,
		HostRewriteSpecifier:    &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: "set.example.com"},
	}
	if diff := cmp.Diff(wantCW, cw, protocmp.Transform()); diff != "" {
		t.Errorf("cluster weight headers (-want +got):\n%s", diff)
	}
	if ops := translateHeaders(nil); ops.requestToAdd != nil || ops.authority != "" {
		t.Errorf("translateHeaders(nil) = %+v, want zero", ops)
	}
}

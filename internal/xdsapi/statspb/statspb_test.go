package statspb

import (
	"strings"
	"testing"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func typedStruct(t *testing.T, url string, v map[string]any) *anypb.Any {
	t.Helper()
	s, err := structpb.NewStruct(v)
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: url, Value: s})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestPackUnpackRoundTrip(t *testing.T) {
	in := &PluginConfig{
		DisableHostHeaderFallback: true,
		TcpReportingDuration:      durationpb.New(15e9),
		Reporter:                  Reporter_SERVER_GATEWAY,
		Metrics: []*MetricConfig{
			{Name: RequestsTotal, Dimensions: map[string]string{"request_host": "request.host"}, TagsToRemove: []string{"source_principal"}},
			{Name: TCPSentBytesTotal, Drop: true},
		},
	}
	a, err := Pack(in)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != TypedStructV3URL || !IsStats(a) {
		t.Fatalf("Pack gave %s, IsStats %v", a.GetTypeUrl(), IsStats(a))
	}
	out, err := Unpack(a)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, out, protocmp.Transform()); d != "" {
		t.Fatalf("round trip (-in +out):\n%s", d)
	}
}

func TestUnpack(t *testing.T) {
	direct, _ := anypb.New(&PluginConfig{DisableHostHeaderFallback: true})
	tests := []struct {
		name    string
		in      *anypb.Any
		want    *PluginConfig
		wantErr string
	}{
		{name: "nil", in: nil, want: &PluginConfig{}},
		{name: "istio's EnvoyFilter form, snake_case", in: typedStruct(t, TypeURL, map[string]any{
			"disable_host_header_fallback": true,
			"metrics":                      []any{map[string]any{"name": "requests_total", "tags_to_remove": []any{"source_principal"}}},
		}), want: &PluginConfig{DisableHostHeaderFallback: true, Metrics: []*MetricConfig{{Name: RequestsTotal, TagsToRemove: []string{"source_principal"}}}}},
		{name: "lowerCamelCase", in: typedStruct(t, TypeURL, map[string]any{"disableHostHeaderFallback": true, "reporter": "SERVER_GATEWAY"}),
			want: &PluginConfig{DisableHostHeaderFallback: true, Reporter: Reporter_SERVER_GATEWAY}},
		{name: "packed PluginConfig", in: direct, want: &PluginConfig{DisableHostHeaderFallback: true}},
		{name: "unknown field", in: typedStruct(t, TypeURL, map[string]any{"stat_prefix": "x"}), wantErr: "stat_prefix"},
		{name: "wrong type", in: typedStruct(t, TypeURL, map[string]any{"metrics": "all"}), wantErr: "metrics"},
		{name: "other inner type", in: typedStruct(t, "type.googleapis.com/other.Config", nil), wantErr: "other.Config"},
		{name: "bad duration", in: typedStruct(t, TypeURL, map[string]any{"tcp_reporting_duration": "soon"}), wantErr: "tcp_reporting_duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Unpack(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got, protocmp.Transform()); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
		})
	}
}

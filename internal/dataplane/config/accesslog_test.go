package config

import (
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
)

func alAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestBuildAccessLogs: the loggers and formats the proxy serves, and the
// NACKs of what it does not, with the field path.
func TestBuildAccessLogs(t *testing.T) {
	text := func(s string) *filev3.FileAccessLog_LogFormat {
		return &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: s}}}
	}
	file := func(f *filev3.FileAccessLog) *accesslogv3.AccessLog {
		return &accesslogv3.AccessLog{Name: FileAccessLogName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: alAny(t, f)}}
	}
	ok := []*accesslogv3.AccessLog{
		file(&filev3.FileAccessLog{Path: "/tmp/x.log"}),
		file(&filev3.FileAccessLog{Path: "/dev/stdout", AccessLogFormat: text("%RESPONSE_FLAGS% %UPSTREAM_HOST%\n")}),
		{Name: StdoutAccessLogName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: alAny(t, &streamv3.StdoutAccessLog{})}},
	}
	got, err := buildAccessLogs("access_log", ok)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Path != "/tmp/x.log" || got[2].Path != "/dev/stdout" {
		t.Fatalf("got %+v", got)
	}
	badFilter := file(&filev3.FileAccessLog{Path: "/dev/stdout"})
	badFilter.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
		Name: "envoy.access_loggers.extension_filters.cel", ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: alAny(t, &celv3.ExpressionFilter{Expression: "response.code >="})}}}}
	for _, tt := range []struct {
		al   *accesslogv3.AccessLog
		want string
	}{
		{file(&filev3.FileAccessLog{Path: "/dev/stdout", AccessLogFormat: text("%NOT_A_COMMAND%")}),
			`access_log[0].typed_config.log_format.text_format: %NOT_A_COMMAND%: unknown or unsupported command`},
		{file(&filev3.FileAccessLog{}), `access_log[0].typed_config.path: must not be empty`},
		{badFilter, `access_log[0].filter.extension_filter.typed_config.expression: "response.code >=": must be a CEL expression`},
	} {
		_, err := buildAccessLogs("access_log", []*accesslogv3.AccessLog{tt.al})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("got %v, want %q", err, tt.want)
		}
	}
}

// TestBuildAccessLogsOmitEmptyValues: log_format.omit_empty_values is
// served, not only accepted: an empty operator prints nothing instead of
// "-" (text) and its key is left out (JSON).
func TestBuildAccessLogsOmitEmptyValues(t *testing.T) {
	js, err := structpb.NewStruct(map[string]any{"up": "%UPSTREAM_HOST%", "m": "%REQ(:METHOD)%"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		lf   *corev3.SubstitutionFormatString
		want string
	}{
		{&corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "[%UPSTREAM_HOST%]"}}, "[-]"},
		{&corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "[%UPSTREAM_HOST%]"}, OmitEmptyValues: true}, "[]"},
		{&corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: js}}, `{"m":"GET","up":null}` + "\n"},
		{&corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: js}, OmitEmptyValues: true}, `{"m":"GET"}` + "\n"},
	} {
		ls, err := buildAccessLogs("access_log", []*accesslogv3.AccessLog{{Name: FileAccessLogName,
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: alAny(t, &filev3.FileAccessLog{Path: "/dev/stdout",
				AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: tt.lf}})}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(ls[0].Format.Append(nil, &accesslog.Entry{Method: "GET"})); got != tt.want {
			t.Errorf("omit_empty_values=%v: got %q, want %q", tt.lf.OmitEmptyValues, got, tt.want)
		}
	}
}

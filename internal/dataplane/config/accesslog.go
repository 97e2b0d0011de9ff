package config

import (
	"fmt"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	otelv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
)

// Access logger and filter names, Envoy's.
const (
	FileAccessLogName   = "envoy.access_loggers.file"
	StdoutAccessLogName = "envoy.access_loggers.stdout"
	StderrAccessLogName = "envoy.access_loggers.stderr"
	OTelAccessLogName   = "envoy.access_loggers.open_telemetry"
	CELFilterName       = "envoy.access_loggers.extension_filters.cel"
)

// buildAccessLogs compiles an HCM's or tcp_proxy's access_log list.
// Accepted: envoy.access_loggers.file (FileAccessLog: path and log_format
// or the deprecated format/json_format), envoy.access_loggers.stdout and
// .stderr (log_format), envoy.access_loggers.open_telemetry
// (buildOTelLog), told apart by their typed_config's type; a
// log_format of text_format, text_format_source (inline_string) or
// json_format (string values only), with omit_empty_values; a filter of the CEL extension filter
// (envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter).
// No log_format is Envoy's default format. An unknown format command, a
// CEL expression that does not compile, or any other field is NACKed with
// its path.
func buildAccessLogs(path string, als []*accesslogv3.AccessLog) ([]*accesslog.AccessLogger, error) {
	var out []*accesslog.AccessLogger
	for i, al := range als {
		p := idx(path, i)
		if err := onlyFields(p, al, "name", "typed_config", "filter"); err != nil {
			return nil, err
		}
		l := &accesslog.AccessLogger{}
		var lf *corev3.SubstitutionFormatString
		tc := al.GetTypedConfig()
		switch tc.GetTypeUrl() {
		case "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog":
			var f filev3.FileAccessLog
			if err := anyTo(tc, &f); err != nil {
				return nil, ferr(p+".typed_config", "%v", err)
			}
			if f.GetPath() == "" {
				return nil, ferr(p+".typed_config.path", "must not be empty")
			}
			l.Path = f.GetPath()
			switch af := f.GetAccessLogFormat().(type) {
			case *filev3.FileAccessLog_LogFormat:
				lf = af.LogFormat
			case *filev3.FileAccessLog_Format:
				lf = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: af.Format}}
			case *filev3.FileAccessLog_JsonFormat:
				lf = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: af.JsonFormat}}
			case nil:
			default:
				return nil, ferr(p+".typed_config", "typed_json_format: not supported")
			}
		case "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog":
			var s streamv3.StdoutAccessLog
			if err := anyTo(tc, &s); err != nil {
				return nil, ferr(p+".typed_config", "%v", err)
			}
			l.Path, lf = "/dev/stdout", s.GetLogFormat()
		case "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog":
			var s streamv3.StderrAccessLog
			if err := anyTo(tc, &s); err != nil {
				return nil, ferr(p+".typed_config", "%v", err)
			}
			l.Path, lf = "/dev/stderr", s.GetLogFormat()
		case "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig":
			var o otelv3.OpenTelemetryAccessLogConfig
			if err := anyTo(tc, &o); err != nil {
				return nil, ferr(p+".typed_config", "%v", err)
			}
			var err error
			if l.OTel, err = buildOTelLog(p+".typed_config", &o); err != nil {
				return nil, err
			}
		default:
			return nil, verr(p+".typed_config.type_url", tc.GetTypeUrl(), "must be a FileAccessLog, StdoutAccessLog, StderrAccessLog or OpenTelemetryAccessLogConfig")
		}
		var err error
		if l.OTel == nil {
			if l.Format, err = buildLogFormat(p+".typed_config.log_format", lf); err != nil {
				return nil, err
			}
		}
		if fl := al.GetFilter(); fl != nil {
			ext := fl.GetExtensionFilter()
			if ext == nil {
				return nil, ferr(p+".filter", "only extension_filter (CEL) is supported")
			}
			var ef celv3.ExpressionFilter
			if err := anyTo(ext.GetTypedConfig(), &ef); err != nil {
				return nil, ferr(p+".filter.extension_filter.typed_config", "%v", err)
			}
			if l.Filter, err = accesslog.CompileFilter(ef.GetExpression()); err != nil {
				return nil, ferr(p+".filter.extension_filter.typed_config.expression", "%q: must be a CEL expression: %v", ef.GetExpression(), err)
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// buildOTelLog compiles an OpenTelemetryAccessLogConfig: the gRPC service
// (grpc_service, or the deprecated common_config's, Istio's) must be
// envoy_grpc; body a string value, attributes and resource_attributes
// string values, all format strings but the resource's. HTTP export,
// formatters, custom tags and resource detectors are NACKed; the buffer
// and filter-state fields are accepted and left to the proxy's defaults.
func buildOTelLog(p string, o *otelv3.OpenTelemetryAccessLogConfig) (*accesslog.OTelLog, error) {
	if err := onlyFields(p, o, "common_config", "grpc_service", "log_name", "body", "attributes", "resource_attributes",
		"disable_builtin_labels", "stat_prefix", "buffer_flush_interval", "buffer_size_bytes", "filter_state_objects_to_log"); err != nil {
		return nil, err
	}
	out := &accesslog.OTelLog{LogName: o.GetLogName(), BuiltinLabels: !o.GetDisableBuiltinLabels()}
	gs, gsPath := o.GetGrpcService(), p+".grpc_service"
	if cc := o.GetCommonConfig(); cc != nil {
		if err := onlyFields(p+".common_config", cc, "log_name", "grpc_service", "transport_api_version",
			"buffer_flush_interval", "buffer_size_bytes", "filter_state_objects_to_log"); err != nil {
			return nil, err
		}
		if gs == nil {
			gs, gsPath = cc.GetGrpcService(), p+".common_config.grpc_service"
		}
		if out.LogName == "" {
			out.LogName = cc.GetLogName()
		}
	}
	eg := gs.GetEnvoyGrpc()
	if eg.GetClusterName() == "" {
		return nil, ferr(gsPath+".envoy_grpc.cluster_name", "must name the collector's cluster")
	}
	out.Cluster, out.Authority = eg.GetClusterName(), eg.GetAuthority()
	if out.Authority == "" {
		out.Authority = out.Cluster
	}
	if b := o.GetBody(); b != nil {
		s, ok := b.GetValue().(*commonpb.AnyValue_StringValue)
		if !ok {
			return nil, ferr(p+".body", "only a string_value is supported")
		}
		f, err := accesslog.ParseTextFormat(s.StringValue, accesslog.FormatOptions{})
		if err != nil {
			return nil, ferr(p+".body.string_value", "%s", strings.TrimSpace(err.Error()))
		}
		out.Body = f
	}
	attrs := func(at string, kv *commonpb.KeyValueList, literal bool) ([]accesslog.OTelAttribute, error) {
		var list []accesslog.OTelAttribute
		for i, a := range kv.GetValues() {
			s, ok := a.GetValue().GetValue().(*commonpb.AnyValue_StringValue)
			if !ok || a.GetKey() == "" {
				return nil, ferr(fmt.Sprintf("%s.values[%d]", at, i), "must have a key and a string_value")
			}
			attr := accesslog.OTelAttribute{Key: a.GetKey(), Literal: s.StringValue}
			if !literal {
				f, err := accesslog.ParseTextFormat(s.StringValue, accesslog.FormatOptions{})
				if err != nil {
					return nil, ferr(fmt.Sprintf("%s.values[%d].value.string_value", at, i), "%s", strings.TrimSpace(err.Error()))
				}
				attr.Value = f
			}
			list = append(list, attr)
		}
		return list, nil
	}
	var err error
	if out.Attributes, err = attrs(p+".attributes", o.GetAttributes(), false); err != nil {
		return nil, err
	}
	if out.ResourceAttributes, err = attrs(p+".resource_attributes", o.GetResourceAttributes(), true); err != nil {
		return nil, err
	}
	return out, nil
}

func buildLogFormat(p string, lf *corev3.SubstitutionFormatString) (*accesslog.Formatter, error) {
	if lf == nil {
		return accesslog.ParseTextFormat(accesslog.EnvoyDefaultFormat, accesslog.FormatOptions{})
	}
	opts := accesslog.FormatOptions{OmitEmptyValues: lf.GetOmitEmptyValues()}
	if err := onlyFields(p, lf, "text_format", "json_format", "text_format_source", "omit_empty_values"); err != nil {
		return nil, err
	}
	var (
		f   *accesslog.Formatter
		err error
	)
	switch t := lf.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormat:
		f, err = accesslog.ParseTextFormat(t.TextFormat, opts)
		p += ".text_format"
	case *corev3.SubstitutionFormatString_TextFormatSource:
		if err := onlyFields(p+".text_format_source", t.TextFormatSource, "inline_string"); err != nil {
			return nil, err
		}
		f, err = accesslog.ParseTextFormat(t.TextFormatSource.GetInlineString(), opts)
		p += ".text_format_source.inline_string"
	case *corev3.SubstitutionFormatString_JsonFormat:
		fields := map[string]string{}
		for k, v := range t.JsonFormat.GetFields() {
			s, ok := v.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, ferr(fmt.Sprintf("%s.json_format[%s]", p, k), "only string values are supported")
			}
			fields[k] = s.StringValue
		}
		f, err = accesslog.ParseJSONFormat(fields, opts)
		p += ".json_format"
	default:
		return accesslog.ParseTextFormat(accesslog.EnvoyDefaultFormat, opts)
	}
	if err != nil {
		return nil, ferr(p, "%s", strings.TrimSpace(err.Error()))
	}
	return f, nil
}

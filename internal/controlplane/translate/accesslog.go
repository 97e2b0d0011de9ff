package translate

import (
	"encoding/json"
	"fmt"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	otelv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// IstioTextLogFormat is Istio's default text access log format
// (EnvoyTextLogFormat): meshConfig.accessLogFormat when it is empty, and
// an envoyFileAccessLog provider's without logFormat.
const IstioTextLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% ` +
	`%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

// IstioJSONLogFormat is Istio's default JSON access log format
// (EnvoyJSONLogFormatIstio), for accessLogEncoding JSON.
var IstioJSONLogFormat = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER_RAW%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

// Envoy's names of the access logger and filter Loom emits.
const (
	fileAccessLogName = "envoy.access_loggers.file"
	otelAccessLogName = "envoy.access_loggers.open_telemetry"
	// otelAccessLogDefaultName is envoyOtelAls.logName's default.
	otelAccessLogDefaultName = "otel_envoy_accesslog"
	celFilterName            = "envoy.access_loggers.extension_filters.cel"
)

// accessLogs returns the access_log of a listener of mode on a proxy
// with Telemetry settings tel under mesh, as Istio's buildAccessLog does:
// the Telemetry API's providers when it configures access logging for
// the mode (envoyFileAccessLog providers: their path and logFormat, text
// or labels, else Istio's text format; a filter expression becomes Envoy's
// CEL filter), else meshConfig.accessLogFile (empty: none) with
// accessLogEncoding and accessLogFormat. Providers of other kinds
// envoyOtelAls providers become Envoy's OpenTelemetry access log
// (otelAccessLog); one whose collector is not in the registry is left out
// and reported through warn, as are the gRPC access log services, which
// Loom's proxy does not serve.
func accessLogs(pc *model.PushContext, tel *TelemetryConfig, mode WorkloadMode, mesh *meshv1alpha1.MeshConfig, warn func(string)) ([]*accesslogv3.AccessLog, error) {
	if logs := tel.Logs(mode); logs != nil {
		var out []*accesslogv3.AccessLog
		for _, l := range logs {
			if op := l.Provider.GetEnvoyOtelAls(); op != nil {
				al, err := otelAccessLog(pc, op, l.Filter)
				if err != nil {
					warn(fmt.Sprintf("access log provider %q: %v", l.Provider.GetName(), err))
					continue
				}
				out = append(out, al)
				continue
			}
			fp := l.Provider.GetEnvoyFileAccessLog()
			if fp == nil {
				warn(fmt.Sprintf("access log provider %q: only envoyFileAccessLog and envoyOtelAls providers are served by this version of Loom", l.Provider.GetName()))
				continue
			}
			f := &filev3.FileAccessLog{Path: fp.GetPath()}
			switch lf := fp.GetLogFormat().GetLogFormat().(type) {
			case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider_LogFormat_Labels:
				f.AccessLogFormat = jsonLogFormat(lf.Labels)
			case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider_LogFormat_Text:
				f.AccessLogFormat = textLogFormat(lf.Text)
			default:
				f.AccessLogFormat = textLogFormat("")
			}
			al, err := accessLog(fileAccessLogName, f, l.Filter)
			if err != nil {
				return nil, err
			}
			out = append(out, al)
		}
		return out, nil
	}
	path := mesh.GetAccessLogFile()
	if path == "" {
		return nil, nil
	}
	f := &filev3.FileAccessLog{Path: path}
	if mesh.GetAccessLogEncoding() == meshv1alpha1.MeshConfig_JSON {
		fields := IstioJSONLogFormat
		if s := mesh.GetAccessLogFormat(); s != "" {
			// Istio parses accessLogFormat as a JSON object of strings; one
			// that is not keeps the default.
			var m map[string]string
			if err := json.Unmarshal([]byte(s), &m); err == nil {
				fields = m
			} else {
				warn(fmt.Sprintf("accessLogFormat: not a JSON object of strings (%v); using Istio's default JSON format", err))
			}
		}
		st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for k, v := range fields {
			st.Fields[k] = structpb.NewStringValue(v)
		}
		f.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}}}
	} else {
		f.AccessLogFormat = textLogFormat(mesh.GetAccessLogFormat())
	}
	al, err := accessLog(fileAccessLogName, f, "")
	if err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{al}, nil
}

// textLogFormat is a text format, Istio's default when s is empty, with
// a newline added when s has none (as Istio does).
func textLogFormat(s string) *filev3.FileAccessLog_LogFormat {
	if s == "" {
		s = IstioTextLogFormat
	}
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: s}}}}}
}

// jsonLogFormat is a provider's logFormat.labels as a json_format; no
// labels is Istio's default JSON format.
func jsonLogFormat(labels *structpb.Struct) *filev3.FileAccessLog_LogFormat {
	st := labels
	if len(st.GetFields()) == 0 {
		st = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for k, v := range IstioJSONLogFormat {
			st.Fields[k] = structpb.NewStringValue(v)
		}
	}
	return &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}}}
}

// otelAccessLog is Istio's buildOpenTelemetryAccessLogConfig for an
// envoyOtelAls provider: log records to the collector service's outbound
// cluster over gRPC, named log_name (default "otel_envoy_accesslog"), the
// body logFormat.text (default Istio's text format, without its trailing
// newline: a record is not a line) and the attributes logFormat.labels.
// It fails when the collector is not in the registry.
func otelAccessLog(pc *model.PushContext, op *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyOpenTelemetryLogProvider, filter string) (*accesslogv3.AccessLog, error) {
	host, cluster, err := lookupProviderCluster(pc, op.GetService(), op.GetPort())
	if err != nil {
		return nil, err
	}
	name := op.GetLogName()
	if name == "" {
		name = otelAccessLogDefaultName
	}
	body := op.GetLogFormat().GetText()
	if body == "" {
		body = strings.TrimSuffix(IstioTextLogFormat, "\n")
	}
	cfg := &otelv3.OpenTelemetryAccessLogConfig{
		CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName: name,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster, Authority: host}}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: body}},
	}
	if labels := op.GetLogFormat().GetLabels().GetFields(); len(labels) > 0 {
		kv := &commonpb.KeyValueList{}
		for _, k := range sortedKeys(labels) {
			v, ok := labels[k].GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, fmt.Errorf("logFormat.labels[%s]: only string values are served", k)
			}
			kv.Values = append(kv.Values, &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.StringValue}}})
		}
		cfg.Attributes = kv
	}
	return accessLog(otelAccessLogName, cfg, filter)
}

// accessLog is an access_log entry named name with typed config cfg and,
// when filter is not empty, Envoy's CEL filter of it.
func accessLog(name string, cfg proto.Message, filter string) (*accesslogv3.AccessLog, error) {
	a, err := packAny(cfg)
	if err != nil {
		return nil, err
	}
	al := &accesslogv3.AccessLog{Name: name, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}
	if filter != "" {
		fa, err := packAny(&celv3.ExpressionFilter{Expression: filter})
		if err != nil {
			return nil, err
		}
		al.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{
			ExtensionFilter: &accesslogv3.ExtensionFilter{Name: celFilterName, ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: fa}}}}
	}
	return al, nil
}

// applyAccessLogs sets the access_log of every HTTP connection manager and
// tcp_proxy of r's listeners for proxy p (client mode: a sidecar's
// outbound listeners and every gateway listener; server mode: a sidecar's
// inbound listeners), replacing what they had.
func applyAccessLogs(r *Resources, pc *model.PushContext, p *model.Proxy, tel *TelemetryConfig, mesh *meshv1alpha1.MeshConfig, warn func(string)) error {
	byMode := map[WorkloadMode][]*accesslogv3.AccessLog{}
	seen := map[string]bool{}
	dedup := func(msg string) {
		if !seen[msg] {
			seen[msg] = true
			warn(msg)
		}
	}
	for _, m := range []WorkloadMode{ModeClient, ModeServer} {
		als, err := accessLogs(pc, tel, m, mesh, dedup)
		if err != nil {
			return err
		}
		byMode[m] = als
	}
	for _, l := range r.Listeners {
		mode := ModeClient
		if listenerClass(p.Type, l) == ClassSidecarInbound {
			mode = ModeServer
		}
		als := byMode[mode]
		for _, fc := range allChains(l) {
			for _, nf := range fc.GetFilters() {
				if err := setAccessLog(nf, als); err != nil {
					return fmt.Errorf("listener %q: %w", l.GetName(), err)
				}
			}
		}
	}
	return nil
}

func setAccessLog(nf *listenerv3.Filter, als []*accesslogv3.AccessLog) error {
	switch nf.GetName() {
	case httpConnectionManagerFilter:
		var h hcmv3.HttpConnectionManager
		if err := nf.GetTypedConfig().UnmarshalTo(&h); err != nil {
			return fmt.Errorf("decode http_connection_manager: %w", err)
		}
		h.AccessLog = als
		a, err := packAny(&h)
		if err != nil {
			return err
		}
		nf.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	case tcpProxyFilter:
		var t tcpv3.TcpProxy
		if err := nf.GetTypedConfig().UnmarshalTo(&t); err != nil {
			return fmt.Errorf("decode tcp_proxy: %w", err)
		}
		t.AccessLog = als
		a, err := packAny(&t)
		if err != nil {
			return err
		}
		nf.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	}
	return nil
}

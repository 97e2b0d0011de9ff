// Package statspb is Istio's stats filter configuration (stats.PluginConfig
// of istio/proxy's istio_stats extension) as Go protobuf types, and the
// helpers both planes use to put it into, and read it out of, an
// `istio.stats` filter's typed_config.
//
// Shape on the wire, as istiod sends it: an HTTP filter named
// `istio.stats` before the router on every HTTP connection manager, and a
// network filter named `istio.stats` before every tcp_proxy, each with a
// typed_config that is an xds.type.v3.TypedStruct (udpa.type.v1 accepted)
// whose type_url is TypeURL and whose value is the PluginConfig as a
// google.protobuf.Struct. A typed_config that is a packed PluginConfig is
// accepted too (an EnvoyFilter's TypedStruct that loomd resolved).
//
// It imports only protobuf and the cncf xds types: it is part of the leaf
// both planes share (see internal/xdsapi).
package statspb

import (
	"fmt"
	"slices"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// FilterName is the name of Istio's stats filter, HTTP and network alike.
const FilterName = "istio.stats"

// TypeURL is the type_url of a stats filter's TypedStruct.
const TypeURL = "type.googleapis.com/stats.PluginConfig"

// Type URLs of the TypedStruct wrappers.
const (
	TypedStructV3URL = "type.googleapis.com/xds.type.v3.TypedStruct"
	TypedStructV1URL = "type.googleapis.com/udpa.type.v1.TypedStruct"
)

// Metric names as PluginConfig's MetricConfig.name and
// MetricDefinition.name write them: Istio's standard metrics without the
// "istio_" prefix.
const (
	RequestsTotal               = "requests_total"
	RequestDurationMilliseconds = "request_duration_milliseconds"
	RequestBytes                = "request_bytes"
	ResponseBytes               = "response_bytes"
	RequestMessagesTotal        = "request_messages_total"
	ResponseMessagesTotal       = "response_messages_total"
	TCPSentBytesTotal           = "tcp_sent_bytes_total"
	TCPReceivedBytesTotal       = "tcp_received_bytes_total"
	TCPConnectionsOpenedTotal   = "tcp_connections_opened_total"
	TCPConnectionsClosedTotal   = "tcp_connections_closed_total"
)

// Pack returns c as an `istio.stats` typed_config: an xds.type.v3.TypedStruct
// of type_url TypeURL whose value is c in protojson's form (proto field
// names, as Istio's EnvoyFilters and its docs write them). A nil c packs an
// empty config (Istio's defaults).
func Pack(c *PluginConfig) (*anypb.Any, error) {
	if c == nil {
		c = &PluginConfig{}
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("stats.PluginConfig: %w", err)
	}
	var s structpb.Struct
	if err := protojson.Unmarshal(js, &s); err != nil {
		return nil, fmt.Errorf("stats.PluginConfig: %w", err)
	}
	a := &anypb.Any{}
	// Deterministic: the Struct's map order must not change the bytes, or
	// every push would look like a new listener to the proxy.
	if err := anypb.MarshalFrom(a, &xdstypev3.TypedStruct{TypeUrl: TypeURL, Value: &s}, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("stats.PluginConfig: %w", err)
	}
	return a, nil
}

// IsStats reports whether typed_config a is a stats filter's: a TypedStruct
// of TypeURL, or a packed PluginConfig.
func IsStats(a *anypb.Any) bool {
	switch a.GetTypeUrl() {
	case TypeURL:
		return true
	case TypedStructV3URL:
		var ts xdstypev3.TypedStruct
		return a.UnmarshalTo(&ts) == nil && ts.GetTypeUrl() == TypeURL
	case TypedStructV1URL:
		var ts udpatypev1.TypedStruct
		return a.UnmarshalTo(&ts) == nil && ts.GetTypeUrl() == TypeURL
	}
	return false
}

// Unpack decodes a stats filter's typed_config (see the package comment);
// nil a is the empty config. Unknown fields, wrong types and a TypedStruct
// of another type_url are errors naming the field, as Envoy refuses them.
func Unpack(a *anypb.Any) (*PluginConfig, error) {
	var c PluginConfig
	if a == nil {
		return &c, nil
	}
	var (
		inner string
		value *structpb.Struct
	)
	switch a.GetTypeUrl() {
	case TypeURL:
		if err := a.UnmarshalTo(&c); err != nil {
			return nil, fmt.Errorf("decode stats.PluginConfig: %w", err)
		}
		return &c, nil
	case TypedStructV3URL:
		var ts xdstypev3.TypedStruct
		if err := a.UnmarshalTo(&ts); err != nil {
			return nil, fmt.Errorf("decode xds.type.v3.TypedStruct: %w", err)
		}
		inner, value = ts.GetTypeUrl(), ts.GetValue()
	case TypedStructV1URL:
		var ts udpatypev1.TypedStruct
		if err := a.UnmarshalTo(&ts); err != nil {
			return nil, fmt.Errorf("decode udpa.type.v1.TypedStruct: %w", err)
		}
		inner, value = ts.GetTypeUrl(), ts.GetValue()
	default:
		return nil, fmt.Errorf("type_url = %q: must be %s or a TypedStruct of it", a.GetTypeUrl(), TypeURL)
	}
	if inner != TypeURL {
		return nil, fmt.Errorf("type_url = %q: must be %s", inner, TypeURL)
	}
	if value == nil {
		return &c, nil
	}
	js, err := protojson.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	if err := protojson.Unmarshal(js, &c); err != nil {
		return nil, fieldError(value, err)
	}
	return &c, nil
}

// fieldError names the top-level field of value that protojson refused:
// its own errors do not always say which field held a wrong value.
func fieldError(value *structpb.Struct, err error) error {
	keys := make([]string, 0, len(value.GetFields()))
	for k := range value.GetFields() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		one := &structpb.Struct{Fields: map[string]*structpb.Value{k: value.GetFields()[k]}}
		js, jerr := protojson.Marshal(one)
		if jerr != nil {
			continue
		}
		if ferr := protojson.Unmarshal(js, &PluginConfig{}); ferr != nil {
			return fmt.Errorf("value.%s: %w", k, ferr)
		}
	}
	return fmt.Errorf("value: %w", err)
}

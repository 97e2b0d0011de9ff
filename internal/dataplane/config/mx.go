package config

import (
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	mxpb "istio.io/api/envoy/config/filter/network/metadata_exchange"

	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
)

const typedStructURL = "type.googleapis.com/xds.type.v3.TypedStruct"

// isMetadataExchange reports whether a listener or cluster filter is
// Istio's istio.metadata_exchange: by its typed_config's type (packed, or
// an xds.type.v3.TypedStruct as istiod sends it), else by its name.
func isMetadataExchange(name string, tc *anypb.Any) bool {
	switch tc.GetTypeUrl() {
	case istiostats.MXTypeURL:
		return true
	case typedStructURL:
		var ts xdstypev3.TypedStruct
		return tc.UnmarshalTo(&ts) == nil && ts.GetTypeUrl() == istiostats.MXTypeURL
	}
	return tc == nil && name == istiostats.MXFilterName
}

// metadataExchange returns the ALPN protocol of an istio.metadata_exchange
// typed_config (envoy.tcp.metadataexchange.config.MetadataExchange, packed
// or in a TypedStruct); errors name the field under typed_config.
func metadataExchange(tc *anypb.Any) (string, error) {
	var mx mxpb.MetadataExchange
	switch tc.GetTypeUrl() {
	case istiostats.MXTypeURL:
		if err := tc.UnmarshalTo(&mx); err != nil {
			return "", ferr("typed_config", "decode MetadataExchange: %v", err)
		}
	case typedStructURL:
		var ts xdstypev3.TypedStruct
		if err := tc.UnmarshalTo(&ts); err != nil {
			return "", ferr("typed_config", "decode TypedStruct: %v", err)
		}
		js, err := protojson.Marshal(ts.GetValue())
		if err == nil {
			err = protojson.Unmarshal(js, &mx)
		}
		if err != nil {
			return "", ferr("typed_config.value", "%v", err)
		}
	default:
		return "", ferr("typed_config", "must be %s", istiostats.MXTypeURL)
	}
	if mx.GetProtocol() == "" {
		return "", ferr("typed_config.protocol", "must be set (Istio's is %s)", istiostats.MXProtocol)
	}
	return mx.GetProtocol(), nil
}

// buildClusterFilters reads a cluster's filters (upstream network
// filters): only istio.metadata_exchange is implemented.
func buildClusterFilters(fs []*clusterv3.Filter, rc *Cluster) error {
	for i, f := range fs {
		p := idx("filters", i)
		if !isMetadataExchange(f.GetName(), f.GetTypedConfig()) {
			return verr(p+".name", f.GetName(), "not supported: the only upstream network filter is "+istiostats.MXFilterName)
		}
		if rc.MetadataExchange != "" {
			return verr(p+".name", f.GetName(), "a second "+istiostats.MXFilterName)
		}
		proto, err := metadataExchange(f.GetTypedConfig())
		if err != nil {
			return under(p, err)
		}
		rc.MetadataExchange = proto
	}
	return nil
}

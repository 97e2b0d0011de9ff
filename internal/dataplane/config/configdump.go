package config

import (
	"fmt"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// ConfigDump renders the resources g was built from as Envoy's admin
// /config_dump JSON: an envoy.admin.v3.ConfigDump whose configs are a
// ClustersConfigDump, ListenersConfigDump, RoutesConfigDump and
// EndpointsConfigDump, in that order. Resources of a type with a version in
// g.Versions (from xDS) are listed as dynamic with that version_info;
// the others (a bootstrap file) as static. It is safe for concurrent use.
func (g *Generation) ConfigDump() ([]byte, error) { return g.configDump(nil) }

// ConfigDumpWithSecrets is ConfigDump followed by a SecretsConfigDump of
// secs (SecretsConfigDump: private keys redacted), as Envoy's
// /config_dump lists secrets last.
func (g *Generation) ConfigDumpWithSecrets(secs []*secret.Secret) ([]byte, error) {
	if secs == nil {
		secs = []*secret.Secret{}
	}
	return g.configDump(secs)
}

func (g *Generation) configDump(secs []*secret.Secret) ([]byte, error) {
	src, err := g.Source()
	if err != nil {
		return nil, fmt.Errorf("config dump: %w", err)
	}
	version := func(typeURL string) (string, bool) {
		v, ok := g.Versions[typeURL]
		return v, ok
	}
	var errOut error
	pack := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil && errOut == nil {
			errOut = fmt.Errorf("config dump: %w", err)
		}
		return a
	}

	cds := &adminv3.ClustersConfigDump{}
	if v, dyn := version(xdsapi.ClusterType); dyn {
		cds.VersionInfo = v
		for _, m := range src.Clusters {
			cds.DynamicActiveClusters = append(cds.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{VersionInfo: v, Cluster: pack(redacted(m))})
		}
	} else {
		for _, m := range src.Clusters {
			cds.StaticClusters = append(cds.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: pack(redacted(m))})
		}
	}

	lds := &adminv3.ListenersConfigDump{}
	if v, dyn := version(xdsapi.ListenerType); dyn {
		lds.VersionInfo = v
		for _, m := range src.Listeners {
			name := ""
			if n, ok := m.(interface{ GetName() string }); ok {
				name = n.GetName()
			}
			lds.DynamicListeners = append(lds.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
				Name:        name,
				ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: v, Listener: pack(redacted(m))},
			})
		}
	} else {
		for _, m := range src.Listeners {
			lds.StaticListeners = append(lds.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{Listener: pack(redacted(m))})
		}
	}

	rds := &adminv3.RoutesConfigDump{}
	if v, dyn := version(xdsapi.RouteType); dyn {
		for _, m := range src.Routes {
			rds.DynamicRouteConfigs = append(rds.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{VersionInfo: v, RouteConfig: pack(m)})
		}
	} else {
		for _, m := range src.Routes {
			rds.StaticRouteConfigs = append(rds.StaticRouteConfigs, &adminv3.RoutesConfigDump_StaticRouteConfig{RouteConfig: pack(m)})
		}
	}

	eds := &adminv3.EndpointsConfigDump{}
	if v, dyn := version(xdsapi.EndpointType); dyn {
		for _, m := range src.Endpoints {
			eds.DynamicEndpointConfigs = append(eds.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{VersionInfo: v, EndpointConfig: pack(m)})
		}
	} else {
		for _, m := range src.Endpoints {
			eds.StaticEndpointConfigs = append(eds.StaticEndpointConfigs, &adminv3.EndpointsConfigDump_StaticEndpointConfig{EndpointConfig: pack(m)})
		}
	}

	dump := &adminv3.ConfigDump{Configs: []*anypb.Any{pack(cds), pack(lds), pack(rds), pack(eds)}}
	if secs != nil {
		dump.Configs = append(dump.Configs, pack(SecretsConfigDump(secs)))
	}
	if errOut != nil {
		return nil, errOut
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(dump)
	if err != nil {
		return nil, fmt.Errorf("config dump: %w", err)
	}
	return b, nil
}

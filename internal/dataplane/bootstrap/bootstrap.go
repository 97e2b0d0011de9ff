package bootstrap

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// Bootstrap is what a bootstrap file configures.
type Bootstrap struct {
	// AdminAddress is admin.address as "ip:port"; "" when the file has no
	// admin section (the caller then uses its own default).
	AdminAddress string
	// Node is the file's node, nil when absent.
	Node *corev3.Node
	// Resources are static_resources: the listeners (an inline route_config
	// stays inside its listener's HttpConnectionManager), the clusters, and
	// a ClusterLoadAssignment per cluster with a load_assignment. Versions
	// is nil (static resources).
	Resources config.Resources
}

// Load reads the bootstrap file at path and validates it, including with
// config.Build, so that a nil error means the caller's Build succeeds.
//
// Before parsing, Load expands environment variables in the file text with
// os.Expand: ${NAME} and $NAME are replaced by the variable's value,
// ${NAME:-default} by default when NAME is unset or empty; an unset
// variable without a default is an error. Tokens that are not variable
// names, such as "$" at the end of a regex, are left as they are. The
// whole text is expanded, comments included.
//
// One extension of Envoy's schema makes a single variable fill an address:
// a socket_address whose port_value is unset may have address "ip:port"
// (admin.address, listener addresses and load_assignment endpoints).
//
// The file may hold admin, node and static_resources.{listeners,clusters};
// dynamic_resources, secrets, EDS clusters and RDS listeners need a
// control plane and are errors. Errors name the file and the field.
func Load(path string) (*Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	b, err := parse(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	return b, nil
}

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand replaces ${NAME}, ${NAME:-default} and $NAME in text.
func expand(text string, lookup func(string) (string, bool)) (string, error) {
	var missing []string
	out := os.Expand(text, func(ref string) string {
		name, def, hasDef := strings.Cut(ref, ":-")
		if !varName.MatchString(name) {
			return "$" + ref // not a variable reference: keep it
		}
		if v, ok := lookup(name); ok && (v != "" || !hasDef) {
			return v
		}
		if hasDef {
			return def
		}
		missing = append(missing, name)
		return ""
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("environment variable %s is not set (referenced as ${%s})", missing[0], missing[0])
	}
	return out, nil
}

func parse(data []byte, lookup func(string) (string, bool)) (*Bootstrap, error) {
	text, err := expand(string(data), lookup)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		return nil, fmt.Errorf("envoy.config.bootstrap.v3.Bootstrap: %w", err)
	}
	if bs.GetDynamicResources() != nil {
		return nil, fmt.Errorf("dynamic_resources: not supported in a bootstrap file; use the xDS flags")
	}
	sr := bs.GetStaticResources()
	if len(sr.GetSecrets()) > 0 {
		return nil, fmt.Errorf("static_resources.secrets: not supported")
	}
	b := &Bootstrap{Node: bs.GetNode()}
	if a := bs.GetAdmin().GetAddress(); a != nil {
		if err := splitHostPort(a); err != nil {
			return nil, fmt.Errorf("admin.address.socket_address: %w", err)
		}
		sa := a.GetSocketAddress()
		if sa == nil || sa.GetPortValue() == 0 {
			return nil, fmt.Errorf("admin.address.socket_address: must have an address and a port_value")
		}
		if net.ParseIP(sa.GetAddress()) == nil {
			return nil, fmt.Errorf("admin.address.socket_address.address = %q: must be an IP address", sa.GetAddress())
		}
		b.AdminAddress = net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
	}
	for i, l := range sr.GetListeners() {
		p := fmt.Sprintf("static_resources.listeners[%d]", i)
		if err := splitHostPort(l.GetAddress()); err != nil {
			return nil, fmt.Errorf("%s.address.socket_address: %w", p, err)
		}
		for j, fc := range l.GetFilterChains() {
			for k, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().MessageIs(&hcm) {
					if err := f.GetTypedConfig().UnmarshalTo(&hcm); err == nil && hcm.GetRds() != nil {
						return nil, fmt.Errorf("%s.filter_chains[%d].filters[%d].typed_config.rds: needs a control plane; use route_config", p, j, k)
					}
				}
			}
		}
		b.Resources.Listeners = append(b.Resources.Listeners, l)
	}
	for i, c := range sr.GetClusters() {
		p := fmt.Sprintf("static_resources.clusters[%d]", i)
		if c.GetType() == clusterv3.Cluster_EDS {
			return nil, fmt.Errorf("%s.type = EDS: needs a control plane; use STATIC with load_assignment", p)
		}
		if la := c.GetLoadAssignment(); la != nil {
			if la.GetClusterName() == "" {
				la.ClusterName = c.GetName()
			}
			for j, le := range la.GetEndpoints() {
				for k, lb := range le.GetLbEndpoints() {
					if err := splitHostPort(lb.GetEndpoint().GetAddress()); err != nil {
						return nil, fmt.Errorf("%s.load_assignment.endpoints[%d].lb_endpoints[%d].endpoint.address.socket_address: %w", p, j, k, err)
					}
				}
			}
			b.Resources.Endpoints = append(b.Resources.Endpoints, proto.Clone(la))
		}
		b.Resources.Clusters = append(b.Resources.Clusters, c)
	}
	if _, err := config.Build(b.Resources, nil); err != nil {
		return nil, err
	}
	return b, nil
}

// splitHostPort applies Loom's extension: address "ip:port" with no
// port_value is split into the two fields.
func splitHostPort(a *corev3.Address) error {
	sa := a.GetSocketAddress()
	if sa == nil || sa.GetPortValue() != 0 || !strings.Contains(sa.GetAddress(), ":") {
		return nil
	}
	if net.ParseIP(sa.GetAddress()) != nil {
		return nil // a bare IPv6 address
	}
	host, port, err := net.SplitHostPort(sa.GetAddress())
	if err != nil {
		return fmt.Errorf("address = %q: %w", sa.GetAddress(), err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("address = %q: port must be 1-65535", sa.GetAddress())
	}
	sa.Address = host
	sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(n)}
	return nil
}

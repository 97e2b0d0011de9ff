package rbac

import (
	"context"
	"errors"
	"fmt"

	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// NetworkConfig is the parsed
// envoy.extensions.filters.network.rbac.v3.RBAC. It is immutable.
type NetworkConfig struct {
	Engines
	StatPrefix string
}

// NetworkFactory builds the network RBAC filter
// (envoy.filters.network.rbac), which decides once per connection, before
// any byte is proxied (enforcement_type ONE_TIME_ON_FIRST_BYTE).
type NetworkFactory struct{}

var _ filter.NetworkFactory = NetworkFactory{}

// Name implements filter.NetworkFactory.
func (NetworkFactory) Name() string { return NetworkName }

// TypeURLs implements filter.NetworkFactory.
func (NetworkFactory) TypeURLs() []string { return []string{NetworkTypeURL} }

// Parse validates an envoy.extensions.filters.network.rbac.v3.RBAC:
// stat_prefix is required; the generic matcher forms, CONTINUOUS
// enforcement and delay_deny are refused.
func (NetworkFactory) Parse(a *anypb.Any) (filter.Config, error) {
	if a == nil {
		return nil, errors.New("typed_config: must be set")
	}
	if a.GetTypeUrl() != NetworkTypeURL {
		return nil, fmt.Errorf("type_url = %q: must be %s", a.GetTypeUrl(), NetworkTypeURL)
	}
	var m rbacnetv3.RBAC
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode RBAC: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("violates Envoy's constraints: %w", err)
	}
	switch {
	case m.GetMatcher() != nil:
		return nil, errors.New("matcher: not supported (use rules)")
	case m.GetShadowMatcher() != nil:
		return nil, errors.New("shadow_matcher: not supported (use shadow_rules)")
	case m.GetEnforcementType() != rbacnetv3.RBAC_ONE_TIME_ON_FIRST_BYTE:
		return nil, fmt.Errorf("enforcement_type = %q: must be ONE_TIME_ON_FIRST_BYTE", m.GetEnforcementType())
	case m.GetDelayDeny() != nil:
		return nil, errors.New("delay_deny: not supported")
	}
	e, err := newEngines(m.GetRules(), m.GetShadowRules(), m.GetShadowRulesStatPrefix())
	if err != nil {
		return nil, err
	}
	return &NetworkConfig{Engines: e, StatPrefix: m.GetStatPrefix()}, nil
}

// Build implements filter.NetworkFactory.
func (NetworkFactory) Build(cfg filter.Config) (filter.NetworkFilter, error) {
	c, ok := cfg.(*NetworkConfig)
	if !ok {
		return nil, fmt.Errorf("network rbac: config %T", cfg)
	}
	return &networkFilter{cfg: c}, nil
}

// DeniedError is a connection the network RBAC filter refused; its text
// is Envoy's connection termination details.
type DeniedError struct{ Policy string }

func (e *DeniedError) Error() string { return DeniedDetails(e.Policy) }

type networkFilter struct{ cfg *NetworkConfig }

// OnConnection decides on c as Envoy's network RBAC filter on the first
// byte: the shadow engine's result goes to the connection's dynamic
// metadata (envoy.filters.network.rbac, in the State of ctx when there is
// one: see filter.NetworkChain), then the enforced engine may refuse the
// connection with a *DeniedError. HTTP-only matchers (headers, paths)
// never match a connection.
func (f *networkFilter) OnConnection(ctx context.Context, c *filter.Connection) error {
	cfg := f.cfg
	st := filter.StateFromContext(ctx)
	q := Request{}
	if c != nil {
		q.Source, q.Destination, q.ServerName, q.TLS = c.Source, c.Destination, c.ServerName, c.TLS
		q.Remote = c.Source.Addr()
	}
	if st != nil {
		q.Metadata = st.Metadata
	}
	if allowed, id := cfg.decide(&q, st, NetworkName); !allowed {
		return &DeniedError{Policy: id}
	}
	return nil
}

package translate

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	extauthznetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	security "istio.io/api/security/v1beta1"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// AuthorizationPolicy becomes Envoy's RBAC and ext_authz filters as
// Istio's authz builder (pilot/pkg/security/authz) makes them, checked
// against its golden outputs (shared/istio-samples/authz-builder) by
// authz_oracle_test.go:
//
//   - HTTP connection managers of sidecars' inbound and of gateways get,
//     before their other filters: for CUSTOM policies an RBAC filter with
//     the policies' rules as DENY shadow rules and the ext_authz filter of
//     their provider, triggered by the shadow result; then one RBAC filter
//     each for AUDIT (LOG), DENY and ALLOW policies, in that order.
//   - A TCP filter chain gets the same as network filters; an ALLOW rule
//     that uses an HTTP-only field is dropped (allows less), and in DENY,
//     AUDIT and CUSTOM rules the HTTP-only values are ignored (the rule
//     matches more).
//   - Policies with the istio.io/dry-run annotation go into shadow_rules.
//   - Principals get the spiffe:// prefix, and a principal of the mesh's
//     trust domain or one of its aliases is extended to all of them.
//   - A CUSTOM policy whose provider is missing or invalid, or two
//     providers on one workload, become DENY rules for what they match
//     (fail closed).

// Filter and key names Istio's authz filters use.
const (
	rbacHTTPFilter     = "envoy.filters.http.rbac"
	rbacNetworkFilter  = "envoy.filters.network.rbac"
	extAuthzHTTPFilter = "envoy.filters.http.ext_authz"
	extAuthzTCPFilter  = "envoy.filters.network.ext_authz"
	jwtAuthnFilter     = "envoy.filters.http.jwt_authn"

	rbacTCPStatPrefix          = "tcp."
	shadowAllowStatPrefix      = "istio_dry_run_allow_"
	shadowDenyStatPrefix       = "istio_dry_run_deny_"
	extAuthzShadowStatPrefix   = "istio_ext_authz_"
	shadowEffectivePolicyIDKey = "shadow_effective_policy_id"
	extAuthzPolicyPrefix       = "istio-ext-authz"
	badCustomSuffix            = "-deny-due-to-bad-CUSTOM-action"
	spiffePrefix               = "spiffe://"
	uriTemplateExtension       = "uri-template"
	// defaultExtAuthzTimeout is Istio's check timeout when a provider
	// sets none.
	defaultExtAuthzTimeout = 600
)

// authzBuilder builds the authorization filters of one proxy.
type authzBuilder struct {
	pc           *model.PushContext
	policies     model.AuthorizationPolicies
	trustDomains []string // the mesh's trust domain first, then its aliases
	providers    map[string]*meshv1alpha1.MeshConfig_ExtensionProvider
}

func newAuthzBuilder(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig) *authzBuilder {
	b := &authzBuilder{pc: pc, policies: pc.AuthorizationPoliciesFor(p.Namespace, p.Labels), providers: map[string]*meshv1alpha1.MeshConfig_ExtensionProvider{}}
	b.trustDomains = trustDomains(mesh)
	for _, ep := range mesh.GetExtensionProviders() {
		if _, dup := b.providers[ep.GetName()]; !dup {
			b.providers[ep.GetName()] = ep
		}
	}
	return b
}

// httpFilters returns the HTTP filters of an inbound or gateway HTTP
// connection manager, in Istio's order: CUSTOM (rbac shadow, ext_authz),
// then AUDIT, DENY and ALLOW rbac filters. Nil when no policy applies.
func (b *authzBuilder) httpFilters() ([]*hcmv3.HttpFilter, error) {
	var out []*hcmv3.HttpFilter
	add := func(name string, m proto.Message) error {
		a, err := packAny(m)
		if err != nil {
			return err
		}
		out = append(out, &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
		return nil
	}
	for _, g := range b.customGroups() {
		enforce, _ := b.rbac(g.policies, rbacv3.RBAC_DENY, false, g.provider)
		ea, err := b.extAuthz(g)
		if err != nil {
			if err := add(rbacHTTPFilter, &rbachttpv3.RBAC{Rules: badCustomRules(enforce)}); err != nil {
				return nil, err
			}
			continue
		}
		if err := add(rbacHTTPFilter, &rbachttpv3.RBAC{ShadowRules: enforce, ShadowRulesStatPrefix: extAuthzShadowStatPrefix}); err != nil {
			return nil, err
		}
		if err := add(extAuthzHTTPFilter, ea.http); err != nil {
			return nil, err
		}
	}
	for _, set := range []struct {
		policies []*model.AuthorizationPolicy
		action   rbacv3.RBAC_Action
	}{{b.policies.Audit, rbacv3.RBAC_LOG}, {b.policies.Deny, rbacv3.RBAC_DENY}, {b.policies.Allow, rbacv3.RBAC_ALLOW}} {
		if len(set.policies) == 0 {
			continue
		}
		enforce, shadow := b.rbac(set.policies, set.action, false, "")
		if err := add(rbacHTTPFilter, &rbachttpv3.RBAC{Rules: enforce, ShadowRules: shadow, ShadowRulesStatPrefix: shadowStatPrefix(shadow)}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// tcpFilters returns the network filters of an inbound or gateway TCP
// filter chain, before its tcp_proxy, in the order of httpFilters. A
// CUSTOM policy with an HTTP provider adds nothing: an HTTP check cannot
// apply to a connection. Nil when no policy applies.
func (b *authzBuilder) tcpFilters() ([]*listenerv3.Filter, error) {
	var out []*listenerv3.Filter
	add := func(name string, m proto.Message) error {
		a, err := packAny(m)
		if err != nil {
			return err
		}
		out = append(out, &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
		return nil
	}
	for _, g := range b.customGroups() {
		enforce, _ := b.rbac(g.policies, rbacv3.RBAC_DENY, true, g.provider)
		ea, err := b.extAuthz(g)
		switch {
		case err != nil:
			if err := add(rbacNetworkFilter, &rbacnetv3.RBAC{Rules: badCustomRules(enforce), StatPrefix: rbacTCPStatPrefix}); err != nil {
				return nil, err
			}
			continue
		case ea.tcp == nil:
			continue
		}
		if err := add(rbacNetworkFilter, &rbacnetv3.RBAC{ShadowRules: enforce, StatPrefix: rbacTCPStatPrefix, ShadowRulesStatPrefix: extAuthzShadowStatPrefix}); err != nil {
			return nil, err
		}
		if err := add(extAuthzTCPFilter, ea.tcp); err != nil {
			return nil, err
		}
	}
	for _, set := range []struct {
		policies []*model.AuthorizationPolicy
		action   rbacv3.RBAC_Action
	}{{b.policies.Audit, rbacv3.RBAC_LOG}, {b.policies.Deny, rbacv3.RBAC_DENY}, {b.policies.Allow, rbacv3.RBAC_ALLOW}} {
		if len(set.policies) == 0 {
			continue
		}
		enforce, shadow := b.rbac(set.policies, set.action, true, "")
		if err := add(rbacNetworkFilter, &rbacnetv3.RBAC{Rules: enforce, ShadowRules: shadow, StatPrefix: rbacTCPStatPrefix,
			ShadowRulesStatPrefix: shadowStatPrefix(shadow)}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// shadowStatPrefix is Istio's shadow_rules_stat_prefix for shadow rules
// of an action; Istio sets it from the shadow rules' action even when
// there are none (nil reads as ALLOW).
func shadowStatPrefix(shadow *rbacv3.RBAC) string {
	switch shadow.GetAction() {
	case rbacv3.RBAC_ALLOW:
		return shadowAllowStatPrefix
	case rbacv3.RBAC_DENY:
		return shadowDenyStatPrefix
	}
	return ""
}

// rbac compiles policies of one action into the enforced rules and the
// shadow (dry-run) rules; each is nil when no policy of its kind exists.
// provider is the CUSTOM provider whose rules these are, "" otherwise.
// A policy without rules becomes one that never matches.
func (b *authzBuilder) rbac(policies []*model.AuthorizationPolicy, action rbacv3.RBAC_Action, forTCP bool, provider string) (enforce, shadow *rbacv3.RBAC) {
	for _, p := range policies {
		target := &enforce
		if p.DryRun {
			target = &shadow
		}
		if *target == nil {
			*target = &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
		}
		if len(p.Spec.GetRules()) == 0 {
			(*target).Policies[policyName(p, 0, provider)] = &rbacv3.Policy{
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_NotRule{NotRule: permissionAny()}}},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_NotId{NotId: principalAny()}}},
			}
			continue
		}
		for i, r := range p.Spec.GetRules() {
			if r == nil {
				continue
			}
			pol, err := b.rule(p, r, forTCP, action)
			if err != nil {
				continue // Istio skips a rule it cannot generate (an HTTP-only ALLOW rule on TCP)
			}
			(*target).Policies[policyName(p, i, provider)] = pol
		}
	}
	if provider != "" {
		shadow = nil // Istio ignores dry-run CUSTOM policies
	}
	return enforce, shadow
}

// policyName is Istio's policy ID: "ns[NS]-policy[NAME]-rule[I]",
// prefixed with "istio-ext-authz-PROVIDER-" for a CUSTOM policy.
func policyName(p *model.AuthorizationPolicy, rule int, provider string) string {
	name := fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", p.Namespace, p.Name, rule)
	if provider != "" {
		return extAuthzPolicyPrefix + "-" + provider + "-" + name
	}
	return name
}

func badCustomRules(enforce *rbacv3.RBAC) *rbacv3.RBAC {
	out := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{}}
	for name, p := range enforce.GetPolicies() {
		out.Policies[name+badCustomSuffix] = p
	}
	return out
}

// customGroup is the CUSTOM policies of one provider.
type customGroup struct {
	provider string
	policies []*model.AuthorizationPolicy
	// conflict is set when the workload's CUSTOM policies name more than
	// one provider: Istio then denies what each matches.
	conflict bool
}

func (b *authzBuilder) customGroups() []customGroup {
	byProvider := map[string][]*model.AuthorizationPolicy{}
	for _, p := range b.policies.Custom {
		byProvider[p.Spec.GetProvider().GetName()] = append(byProvider[p.Spec.GetProvider().GetName()], p)
	}
	names := make([]string, 0, len(byProvider))
	for n := range byProvider {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]customGroup, 0, len(names))
	for _, n := range names {
		out = append(out, customGroup{provider: n, policies: byProvider[n], conflict: len(names) > 1})
	}
	return out
}

// ---- rules ----

// ruleEntry is one key of a rule (a from, to or when field) with its
// values and notValues.
type ruleEntry struct {
	key               string
	values, notValues []string
	g                 generator
}

// generator makes the Envoy matcher of one value of a key. A generator
// may be "extended": it makes one matcher of all values at once.
type generator interface {
	permission(key, value string, forTCP bool) (*rbacv3.Permission, error)
	principal(key, value string, forTCP bool) (*rbacv3.Principal, error)
}

type extendedGenerator interface {
	extendedPrincipal(key string, values []string, forTCP bool) (*rbacv3.Principal, error)
	extendedPermission(key string, values []string, forTCP bool) (*rbacv3.Permission, error)
}

var errUnimplemented = errors.New("unimplemented")

// rule is Istio's authz model: the rule's `when` conditions are split
// into permission and principal keys; each `from` gets the principal
// conditions and each `to` the permission ones; the policy matches when
// one permission and one principal do.
func (b *authzBuilder) rule(p *model.AuthorizationPolicy, r *security.Rule, forTCP bool, action rbacv3.RBAC_Action) (*rbacv3.Policy, error) {
	var basePerm, basePrinc []ruleEntry
	for _, w := range r.GetWhen() {
		e := ruleEntry{key: w.GetKey(), values: w.GetValues(), notValues: w.GetNotValues()}
		if len(e.values) == 0 && len(e.notValues) == 0 {
			continue
		}
		k := e.key
		switch {
		case k == "destination.ip":
			e.g = destIPGenerator{}
		case k == "destination.port":
			e.g = destPortGenerator{}
		case k == "connection.sni":
			e.g = sniGenerator{}
		case strings.HasPrefix(k, "experimental.envoy.filters."):
			e.g = envoyFilterGenerator{}
		case k == "source.ip":
			e.g = srcIPGenerator{}
		case k == "remote.ip":
			e.g = remoteIPGenerator{}
		case k == "source.namespace":
			e.g = namespaceGenerator{}
		case k == "source.principal":
			e.g = principalGenerator{}
			e.values, e.notValues = b.withAliases(e.values), b.withAliases(e.notValues)
		case k == "source.trustDomain":
			e.g = trustDomainGenerator{}
		case k == "request.auth.principal":
			e.g = requestPrincipalGenerator{}
		case k == "request.auth.audiences":
			e.g = claimGenerator{claims: []string{"aud"}}
		case k == "request.auth.presenter":
			e.g = claimGenerator{claims: []string{"azp"}}
		case strings.HasPrefix(k, "request.headers"):
			e.g = headerGenerator{}
		case strings.HasPrefix(k, "request.auth.claims"):
			claims, err := nestedBrackets(strings.TrimPrefix(k, "request.auth.claims"))
			if err != nil {
				return nil, err
			}
			e.g = claimGenerator{claims: claims}
		default:
			return nil, fmt.Errorf("unknown attribute %s", k)
		}
		switch e.g.(type) {
		case destIPGenerator, destPortGenerator, sniGenerator, envoyFilterGenerator:
			basePerm = append(basePerm, e)
		default:
			basePrinc = append(basePrinc, e)
		}
	}

	var principals [][]ruleEntry
	for _, f := range r.GetFrom() {
		merged := slices.Clone(basePrinc)
		if s := f.GetSource(); s != nil {
			front := []ruleEntry{
				{key: "source.principal", values: b.withAliases(s.GetPrincipals()), notValues: b.withAliases(s.GetNotPrincipals()), g: principalGenerator{}},
				{key: "request.auth.principal", values: s.GetRequestPrincipals(), notValues: s.GetNotRequestPrincipals(), g: requestPrincipalGenerator{}},
				{key: "source.serviceAccount", values: s.GetServiceAccounts(), notValues: s.GetNotServiceAccounts(), g: serviceAccountGenerator{namespace: p.Namespace}},
				{key: "source.namespace", values: s.GetNamespaces(), notValues: s.GetNotNamespaces(), g: namespaceGenerator{}},
				{key: "source.trustDomain", values: s.GetTrustDomains(), notValues: s.GetNotTrustDomains(), g: trustDomainGenerator{}},
				{key: "remote.ip", values: s.GetRemoteIpBlocks(), notValues: s.GetNotRemoteIpBlocks(), g: remoteIPGenerator{}},
				{key: "source.ip", values: s.GetIpBlocks(), notValues: s.GetNotIpBlocks(), g: srcIPGenerator{}},
			}
			merged = append(withValues(front), merged...)
		}
		principals = append(principals, merged)
	}
	if len(r.GetFrom()) == 0 {
		principals = append(principals, basePrinc)
	}

	var permissions [][]ruleEntry
	for _, t := range r.GetTo() {
		merged := slices.Clone(basePerm)
		if o := t.GetOperation(); o != nil {
			front := []ruleEntry{
				{key: ":authority", values: o.GetHosts(), notValues: o.GetNotHosts(), g: hostGenerator{}},
				{key: ":method", values: o.GetMethods(), notValues: o.GetNotMethods(), g: methodGenerator{}},
				{key: "path", values: o.GetPaths(), notValues: o.GetNotPaths(), g: pathGenerator{}},
				{key: "destination.port", values: o.GetPorts(), notValues: o.GetNotPorts(), g: destPortGenerator{}},
			}
			merged = append(withValues(front), merged...)
		}
		permissions = append(permissions, merged)
	}
	if len(r.GetTo()) == 0 {
		permissions = append(permissions, basePerm)
	}

	perms, err := assemble(permissionKind, permissions, forTCP, action)
	if err != nil {
		return nil, err
	}
	princs, err := assemble(principalKind, principals, forTCP, action)
	if err != nil {
		return nil, err
	}
	return &rbacv3.Policy{Permissions: perms, Principals: princs}, nil
}

// matcherKind is what building rules needs to know of Permission or
// Principal: how to ask a generator for one, and how to combine them.
type matcherKind[T comparable] struct {
	gen   func(g generator, key, v string, forTCP bool) (T, error)
	ext   func(g extendedGenerator, key string, vs []string, forTCP bool) (T, error)
	and   func([]T) T
	or    func([]T) T
	not   func(T) T
	match T // matches anything
}

var permissionKind = matcherKind[*rbacv3.Permission]{
	gen: func(g generator, key, v string, forTCP bool) (*rbacv3.Permission, error) {
		return g.permission(key, v, forTCP)
	},
	ext: func(g extendedGenerator, key string, vs []string, forTCP bool) (*rbacv3.Permission, error) {
		return g.extendedPermission(key, vs, forTCP)
	},
	and: func(ps []*rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
	},
	or: func(ps []*rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
	},
	not: func(p *rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
	},
	match: permissionAny(),
}

var principalKind = matcherKind[*rbacv3.Principal]{
	gen: func(g generator, key, v string, forTCP bool) (*rbacv3.Principal, error) {
		return g.principal(key, v, forTCP)
	},
	ext: func(g extendedGenerator, key string, vs []string, forTCP bool) (*rbacv3.Principal, error) {
		return g.extendedPrincipal(key, vs, forTCP)
	},
	and: func(ps []*rbacv3.Principal) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
	},
	or: func(ps []*rbacv3.Principal) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
	},
	not: func(p *rbacv3.Principal) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
	},
	match: principalAny(),
}

// assemble makes one and_rules / and_ids per entry list (one per `to` or
// `from`), "any" when an entry list yields nothing.
func assemble[T comparable](k matcherKind[T], lists [][]ruleEntry, forTCP bool, action rbacv3.RBAC_Action) ([]T, error) {
	var out []T
	for _, rl := range lists {
		var and []T
		for _, e := range rl {
			ms, err := entryMatchers(k, e, forTCP, action)
			if err != nil {
				return nil, err
			}
			and = append(and, ms...)
		}
		if len(and) == 0 {
			and = append(and, k.match)
		}
		out = append(out, k.and(and))
	}
	return out, nil
}

// withValues keeps the entries that have values or notValues.
func withValues(es []ruleEntry) []ruleEntry {
	var out []ruleEntry
	for _, e := range es {
		if len(e.values) > 0 || len(e.notValues) > 0 {
			out = append(out, e)
		}
	}
	return out
}

// keep is Istio's checkError: in an ALLOW policy an ungeneratable value
// fails the whole rule (the rule is dropped); in DENY, AUDIT and CUSTOM it
// is ignored (the rule matches more).
func keep(action rbacv3.RBAC_Action, err error) error {
	if action == rbacv3.RBAC_ALLOW {
		return err
	}
	return nil
}

// entryMatchers makes the matchers of one entry: an or of its values and
// a not of an or of its notValues (for an extended generator, its one
// matcher of the values and a not of its one matcher of the notValues).
func entryMatchers[T comparable](k matcherKind[T], e ruleEntry, forTCP bool, action rbacv3.RBAC_Action) ([]T, error) {
	var out, zero []T
	var none T
	for i, vs := range [][]string{e.values, e.notValues} {
		if len(vs) == 0 {
			continue
		}
		var m T
		if eg, ok := e.g.(extendedGenerator); ok {
			var err error
			m, err = k.ext(eg, e.key, vs, forTCP)
			if err := keep(action, err); err != nil {
				return zero, err
			}
			if err != nil {
				m = none
			}
		} else {
			var or []T
			for _, v := range vs {
				x, err := k.gen(e.g, e.key, v, forTCP)
				if err := keep(action, err); err != nil {
					return zero, err
				}
				if err == nil && x != none {
					or = append(or, x)
				}
			}
			if len(or) > 0 {
				m = k.or(or)
			}
		}
		if m == none {
			continue
		}
		if i == 1 {
			m = k.not(m)
		}
		out = append(out, m)
	}
	return out, nil
}

// withAliases is Istio's trust domain migration of source principals: a
// principal whose trust domain is the mesh's or one of its aliases (or a
// wildcard matching one) also stands for the same identity in every
// other trust domain of the bundle. "*" and principals without "/ns/" are
// kept as they are.
func (b *authzBuilder) withAliases(principals []string) []string {
	if len(b.trustDomains) < 2 || len(principals) == 0 {
		return principals
	}
	var out []string
	for _, pr := range principals {
		td, rest, ok := strings.Cut(pr, "/ns/")
		if pr == "*" || !ok {
			out = append(out, pr)
			continue
		}
		covered := func(t string) bool {
			switch {
			case td == t:
				return true
			case td == "*":
				return true
			case strings.HasPrefix(td, "*"):
				return strings.HasSuffix(t, td[1:])
			case strings.HasSuffix(td, "*"):
				return strings.HasPrefix(t, td[:len(td)-1])
			}
			return false
		}
		if !slices.ContainsFunc(b.trustDomains, covered) {
			out = append(out, pr)
			continue
		}
		emitted := false
		for _, t := range b.trustDomains {
			var v string
			if covered(t) {
				if emitted {
					continue
				}
				v, emitted = pr, true
			} else {
				v = t + "/ns/" + rest
			}
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// nestedBrackets reads "[a][b]" as ["a", "b"] (a claim path).
func nestedBrackets(s string) ([]string, error) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, fmt.Errorf("bad claim key %q: must be [name]...", s)
		}
		end := strings.IndexByte(s, ']')
		if end < 2 {
			return nil, fmt.Errorf("bad claim key %q: must be [name]...", s)
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	if len(out) == 0 {
		return nil, errors.New("claim key: must be [name]")
	}
	return out, nil
}

// ---- generators ----

var errHTTPOnly = errors.New("HTTP only")

func httpOnly(key string) error { return fmt.Errorf("%q is %w", key, errHTTPOnly) }

type (
	destIPGenerator           struct{}
	destPortGenerator         struct{}
	sniGenerator              struct{}
	envoyFilterGenerator      struct{}
	srcIPGenerator            struct{}
	remoteIPGenerator         struct{}
	namespaceGenerator        struct{}
	principalGenerator        struct{}
	trustDomainGenerator      struct{}
	requestPrincipalGenerator struct{}
	headerGenerator           struct{}
	hostGenerator             struct{}
	methodGenerator           struct{}
	pathGenerator             struct{}
	serviceAccountGenerator   struct{ namespace string }
	claimGenerator            struct{ claims []string }
)

func (destIPGenerator) permission(_, v string, _ bool) (*rbacv3.Permission, error) {
	c, err := cidrRange(v)
	if err != nil {
		return nil, err
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: c}}, nil
}
func (destIPGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}

func (destPortGenerator) permission(_, v string, _ bool) (*rbacv3.Permission, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bad port %q: %w", v, err)
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}, nil
}
func (destPortGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}

func (sniGenerator) permission(_, v string, _ bool) (*rbacv3.Permission, error) {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: authzStringMatcher(v)}}, nil
}
func (sniGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}

func (envoyFilterGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}
func (envoyFilterGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}

// extendedPermission reads "experimental.envoy.filters.a.b[c]" as the
// metadata key c of filter envoy.filters.a.b; a value written "[v]"
// matches a list holding v.
func (envoyFilterGenerator) extendedPermission(key string, values []string, _ bool) (*rbacv3.Permission, error) {
	filter, k, ok := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(key, "experimental."), "]"), "[")
	if !ok {
		return nil, fmt.Errorf("invalid key: %v", key)
	}
	var ms []*matcherv3.ValueMatcher
	for _, v := range values {
		if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
			ms = append(ms, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
				MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: stringValue(authzStringMatcher(strings.Trim(v, "[]")))}}}})
		} else {
			ms = append(ms, stringValue(authzStringMatcher(v)))
		}
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: metadataMatcher(filter, []string{k}, orValue(ms))}}, nil
}
func (envoyFilterGenerator) extendedPrincipal(string, []string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}

func (srcIPGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}
func (srcIPGenerator) principal(_, v string, _ bool) (*rbacv3.Principal, error) {
	c, err := cidrRange(v)
	if err != nil {
		return nil, err
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: c}}, nil
}

func (remoteIPGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}
func (remoteIPGenerator) principal(_, v string, _ bool) (*rbacv3.Principal, error) {
	c, err := cidrRange(v)
	if err != nil {
		return nil, err
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: c}}, nil
}

func (namespaceGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}

// principal matches the namespace segment of a SPIFFE ID: ".*/ns/NS/.*",
// "*" in NS matching anything.
func (namespaceGenerator) principal(_, v string, _ bool) (*rbacv3.Principal, error) {
	ns := strings.ReplaceAll(regexp.QuoteMeta(v), `\*`, ".*")
	return authenticated(regexMatcher(".*/ns/" + ns + "/.*")), nil
}

func (principalGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}
func (principalGenerator) principal(_, v string, _ bool) (*rbacv3.Principal, error) {
	return authenticated(authzStringMatcherWithPrefix(v, spiffePrefix)), nil
}

func (trustDomainGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}

// principal matches the trust domain of a SPIFFE ID: "spiffe://TD/" as a
// prefix, or a regex over the trust domain for "x*", "*x" and "*".
func (trustDomainGenerator) principal(_, v string, _ bool) (*rbacv3.Principal, error) {
	switch {
	case v == "*":
		return authenticated(regexMatcher(`spiffe://[^/]+/.*`)), nil
	case strings.HasSuffix(v, "*"):
		return authenticated(regexMatcher("spiffe://" + regexp.QuoteMeta(strings.TrimSuffix(v, "*")) + "[^/]*/.*")), nil
	case strings.HasPrefix(v, "*"):
		return authenticated(regexMatcher("spiffe://[^/]*" + regexp.QuoteMeta(strings.TrimPrefix(v, "*")) + "/.*")), nil
	}
	return authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: spiffePrefix + v + "/"}}), nil
}

func (serviceAccountGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}

// principal matches "NS/SA" (or "SA" in the policy's namespace) in any
// trust domain, with any path segments between ns and sa.
func (g serviceAccountGenerator) principal(_, v string, _ bool) (*rbacv3.Principal, error) {
	ns, sa, ok := strings.Cut(v, "/")
	if !ok {
		ns, sa = g.namespace, v
	}
	return authenticated(regexMatcher(fmt.Sprintf("spiffe://.+/ns/%s/(.+/|)sa/%s(/.+)?", ns, sa))), nil
}

func (requestPrincipalGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}
func (requestPrincipalGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}
func (requestPrincipalGenerator) extendedPermission(string, []string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}

// extendedPrincipal matches the JWT's iss and sub claims of each
// "ISS/SUB" (split at the last "/"), with Istio's wildcards on either side.
func (requestPrincipalGenerator) extendedPrincipal(key string, values []string, forTCP bool) (*rbacv3.Principal, error) {
	if forTCP {
		return nil, httpOnly(key)
	}
	matchAny := regexMatcher(".+")
	var or []*rbacv3.Principal
	for _, v := range values {
		idx := strings.LastIndex(v, "/")
		found := idx >= 0
		iss, sub := v, ""
		if found {
			iss, sub = v[:idx], v[idx+1:]
		}
		var mi, ms *matcherv3.StringMatcher
		switch {
		case v == "*":
			mi, ms = matchAny, matchAny
		case strings.HasPrefix(v, "*"):
			if found {
				if iss == "*" {
					mi = matchAny
				} else {
					mi = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: strings.TrimPrefix(iss, "*")}}
				}
				ms = exactMatcher(sub)
			} else {
				mi, ms = matchAny, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: strings.TrimPrefix(v, "*")}}
			}
		case strings.HasSuffix(v, "*"):
			if found {
				mi = exactMatcher(iss)
				if sub == "*" {
					ms = matchAny
				} else {
					ms = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: strings.TrimSuffix(sub, "*")}}
				}
			} else {
				mi, ms = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: strings.TrimSuffix(v, "*")}}, matchAny
			}
		default:
			mi, ms = exactMatcher(iss), exactMatcher(sub)
		}
		or = append(or, &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			{Identifier: &rbacv3.Principal_Metadata{Metadata: metadataMatcher(jwtAuthnFilter, []string{"payload", "iss"}, stringValue(mi))}},
			{Identifier: &rbacv3.Principal_Metadata{Metadata: metadataMatcher(jwtAuthnFilter, []string{"payload", "sub"}, stringValue(ms))}},
		}}}})
	}
	switch len(or) {
	case 0:
		return nil, nil
	case 1:
		return or[0], nil
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: or}}}, nil
}

func (claimGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}
func (claimGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}
func (claimGenerator) extendedPermission(string, []string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}

// extendedPrincipal matches a JWT claim (aud, azp, or a nested claim
// path) that equals one of values, or is a list holding one.
func (g claimGenerator) extendedPrincipal(key string, values []string, forTCP bool) (*rbacv3.Principal, error) {
	if forTCP {
		return nil, httpOnly(key)
	}
	var ms []*matcherv3.ValueMatcher
	for _, v := range values {
		ms = append(ms, stringValue(authzStringMatcher(v)))
	}
	one := orValue(ms)
	list := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: one}}}}
	v := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{list, one}}}}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metadataMatcher(jwtAuthnFilter, append([]string{"payload"}, g.claims...), v)}}, nil
}

func (headerGenerator) permission(string, string, bool) (*rbacv3.Permission, error) {
	return nil, errUnimplemented
}
func (headerGenerator) principal(key, v string, forTCP bool) (*rbacv3.Principal, error) {
	if forTCP {
		return nil, httpOnly(key)
	}
	name, err := nestedBrackets(strings.TrimPrefix(key, "request.headers"))
	if err != nil || len(name) != 1 {
		return nil, fmt.Errorf("bad header key %q", key)
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: authzHeaderMatcher(name[0], v)}}, nil
}

func (hostGenerator) permission(key, v string, forTCP bool) (*rbacv3.Permission, error) {
	if forTCP {
		return nil, httpOnly(key)
	}
	var m *matcherv3.StringMatcher
	switch {
	case v == "*":
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":authority",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}, nil
	case strings.HasPrefix(v, "*"):
		m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}, IgnoreCase: true}
	case strings.HasSuffix(v, "*"):
		m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v[:len(v)-1]}, IgnoreCase: true}
	default:
		m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}, IgnoreCase: true}
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":authority",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}}}, nil
}
func (hostGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}

func (methodGenerator) permission(key, v string, forTCP bool) (*rbacv3.Permission, error) {
	if forTCP {
		return nil, httpOnly(key)
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: authzHeaderMatcher(":method", v)}}, nil
}
func (methodGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}

// permission is a url_path matcher, or for a path with {*} or {**} an
// Envoy URI template ("{*}" is "*", "{**}" is "**").
func (pathGenerator) permission(key, v string, forTCP bool) (*rbacv3.Permission, error) {
	if forTCP {
		return nil, httpOnly(key)
	}
	if strings.Contains(v, "{*}") || strings.Contains(v, "{**}") {
		a, err := packAny(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: strings.ReplaceAll(strings.ReplaceAll(v, "{**}", "**"), "{*}", "*")})
		if err != nil {
			return nil, err
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{Name: uriTemplateExtension, TypedConfig: a}}}, nil
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: authzStringMatcher(v)}}}}, nil
}
func (pathGenerator) principal(string, string, bool) (*rbacv3.Principal, error) {
	return nil, errUnimplemented
}

// ---- matcher helpers (Istio's authz/matcher) ----

func permissionAny() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}
func principalAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

func exactMatcher(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regexMatcher(r string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: r}}}
}

// authzStringMatcher is Istio's StringMatcher: "*" is presence (".+"), "*x"
// a suffix, "x*" a prefix, else exact.
func authzStringMatcher(v string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatcher(".+")
	case strings.HasPrefix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v[:len(v)-1]}}
	}
	return exactMatcher(v)
}

// authzStringMatcherWithPrefix is authzStringMatcher with prefix prepended to the
// value: "*" stays presence, "*x" is the regex prefix.*x.
func authzStringMatcherWithPrefix(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatcher(".+")
	case strings.HasPrefix(v, "*"):
		return regexMatcher(regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(v[1:]))
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix + v[:len(v)-1]}}
	}
	return exactMatcher(prefix + v)
}

// authzHeaderMatcher is Istio's HeaderMatcher: "*" is presence, else a string
// match as stringMatcher's, with no presence regex.
func authzHeaderMatcher(name, v string) *routev3.HeaderMatcher {
	if v == "*" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: authzStringMatcher(v)}}
}

func stringValue(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}
}

// orValue is an or_match of ms, or ms[0] alone (Envoy requires two or
// more matchers in an or_match).
func orValue(ms []*matcherv3.ValueMatcher) *matcherv3.ValueMatcher {
	if len(ms) == 1 {
		return ms[0]
	}
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: ms}}}
}

func metadataMatcher(filter string, path []string, v *matcherv3.ValueMatcher) *matcherv3.MetadataMatcher {
	m := &matcherv3.MetadataMatcher{Filter: filter, Value: v}
	for _, k := range path {
		m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return m
}

// cidrRange reads an IP ("1.2.3.4", a /32) or a CIDR ("5.6.0.0/16") as
// Envoy's CidrRange, with the address as written.
func cidrRange(v string) (*corev3.CidrRange, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("bad CIDR %q: %w", v, err)
		}
		return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return nil, fmt.Errorf("bad IP address %q", v)
	}
	return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}, nil
}

// ---- CUSTOM: ext_authz ----

type builtExtAuthz struct {
	http *extauthzv3.ExtAuthz
	tcp  *extauthznetv3.ExtAuthz // nil for an HTTP provider
}

// extAuthz resolves a CUSTOM group's provider from the mesh config into
// the ext_authz filters, as Istio's processExtensionProvider: the error
// says why Istio would fail closed (several providers, an unknown or
// invalid provider, a service not in the registry).
func (b *authzBuilder) extAuthz(g customGroup) (*builtExtAuthz, error) {
	if g.conflict {
		return nil, errors.New("only one extension provider may be used per workload")
	}
	ep, ok := b.providers[g.provider]
	if !ok {
		return nil, fmt.Errorf("extension provider %q is not in the mesh config", g.provider)
	}
	enabled := func(filter string) *matcherv3.MetadataMatcher {
		return metadataMatcher(filter, []string{extAuthzShadowStatPrefix + shadowEffectivePolicyIDKey},
			stringValue(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: extAuthzPolicyPrefix + "-" + g.provider}}))
	}
	body := func(rb *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationRequestBody) *extauthzv3.BufferSettings {
		if rb == nil {
			return nil
		}
		return &extauthzv3.BufferSettings{MaxRequestBytes: rb.GetMaxRequestBytes(), AllowPartialMessage: rb.GetAllowPartialMessage(), PackAsBytes: rb.GetPackAsBytes()}
	}
	switch p := ep.GetProvider().(type) {
	case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc:
		c := p.EnvoyExtAuthzGrpc
		host, cluster, status, timeout, err := b.extAuthzService(c.GetService(), c.GetPort(), c.GetStatusOnError(), c.GetTimeout())
		if err != nil {
			return nil, err
		}
		grpc := &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster, Authority: host}},
			Timeout:         timeout,
		}
		return &builtExtAuthz{
			http: &extauthzv3.ExtAuthz{
				StatusOnError:         status,
				FailureModeAllow:      c.GetFailOpen(),
				Services:              &extauthzv3.ExtAuthz_GrpcService{GrpcService: grpc},
				FilterEnabledMetadata: enabled(rbacHTTPFilter),
				TransportApiVersion:   corev3.ApiVersion_V3,
				WithRequestBody:       body(c.GetIncludeRequestBodyInCheck()),
				ClearRouteCache:       c.GetClearRouteCache(),
			},
			tcp: &extauthznetv3.ExtAuthz{
				StatPrefix:            rbacTCPStatPrefix,
				FailureModeAllow:      c.GetFailOpen(),
				TransportApiVersion:   corev3.ApiVersion_V3,
				GrpcService:           grpc,
				FilterEnabledMetadata: enabled(rbacNetworkFilter),
			},
		}, nil
	case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp:
		c := p.EnvoyExtAuthzHttp
		host, cluster, status, timeout, err := b.extAuthzService(c.GetService(), c.GetPort(), c.GetStatusOnError(), c.GetTimeout())
		if err != nil {
			return nil, err
		}
		if c.GetPathPrefix() != "" && !strings.HasPrefix(c.GetPathPrefix(), "/") {
			return nil, fmt.Errorf("pathPrefix must begin with /, found %q", c.GetPathPrefix())
		}
		svc := &extauthzv3.HttpService{
			PathPrefix: c.GetPathPrefix(),
			ServerUri: &corev3.HttpUri{
				Uri:              "http://" + host,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
				Timeout:          timeout,
			},
		}
		if add := c.GetIncludeAdditionalHeadersInCheck(); len(add) > 0 {
			keys := make([]string, 0, len(add))
			for k := range add {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			svc.AuthorizationRequest = &extauthzv3.AuthorizationRequest{}
			for _, k := range keys {
				svc.AuthorizationRequest.HeadersToAdd = append(svc.AuthorizationRequest.HeadersToAdd, &corev3.HeaderValue{Key: k, Value: add[k]})
			}
		}
		if len(c.GetHeadersToUpstreamOnAllow()) > 0 || len(c.GetHeadersToDownstreamOnDeny()) > 0 || len(c.GetHeadersToDownstreamOnAllow()) > 0 {
			svc.AuthorizationResponse = &extauthzv3.AuthorizationResponse{
				AllowedUpstreamHeaders:        headerList(c.GetHeadersToUpstreamOnAllow()),
				AllowedClientHeaders:          headerList(c.GetHeadersToDownstreamOnDeny()),
				AllowedClientHeadersOnSuccess: headerList(c.GetHeadersToDownstreamOnAllow()),
			}
		}
		include := c.GetIncludeRequestHeadersInCheck()
		if len(include) == 0 {
			//nolint:staticcheck // the deprecated field still works in Istio.
			include = c.GetIncludeHeadersInCheck()
		}
		return &builtExtAuthz{http: &extauthzv3.ExtAuthz{
			AllowedHeaders:        headerList(include),
			StatusOnError:         status,
			FailureModeAllow:      c.GetFailOpen(),
			Services:              &extauthzv3.ExtAuthz_HttpService{HttpService: svc},
			FilterEnabledMetadata: enabled(rbacHTTPFilter),
			TransportApiVersion:   corev3.ApiVersion_V3,
			WithRequestBody:       body(c.GetIncludeRequestBodyInCheck()),
			ClearRouteCache:       c.GetClearRouteCache(),
		}}, nil
	}
	return nil, fmt.Errorf("extension provider %q is not an ext_authz provider", g.provider)
}

// extAuthzService resolves a provider's "[NAMESPACE/]HOST" in the
// registry and its port, statusOnError and timeout (Istio's default
// 600s).
func (b *authzBuilder) extAuthzService(service string, port uint32, statusOnError string, timeout *durationpb.Duration) (host, cluster string, status *typev3.HttpStatus, to *durationpb.Duration, err error) {
	if port == 0 || port > 65535 {
		return "", "", nil, nil, fmt.Errorf("port must be in the range [1, 65535], found %d", port)
	}
	if service == "" {
		return "", "", nil, nil, errors.New("service must not be empty")
	}
	ns, host, hasNS := strings.Cut(service, "/")
	if !hasNS {
		ns, host = "", service
	}
	svc := b.pc.ServiceForHost(host)
	if svc == nil || (hasNS && svc.Namespace != ns) {
		return "", "", nil, nil, fmt.Errorf("could not find service %s", service)
	}
	if statusOnError != "" {
		code, err := strconv.ParseInt(statusOnError, 10, 32)
		if err != nil {
			return "", "", nil, nil, fmt.Errorf("invalid statusOnError %s: %w", statusOnError, err)
		}
		if _, ok := typev3.StatusCode_name[int32(code)]; !ok {
			return "", "", nil, nil, fmt.Errorf("unsupported statusOnError %s", statusOnError)
		}
		status = &typev3.HttpStatus{Code: typev3.StatusCode(code)}
	}
	to = durationpb.New(defaultExtAuthzTimeout * 1e9)
	if timeout != nil {
		if err := timeout.CheckValid(); err != nil {
			return "", "", nil, nil, fmt.Errorf("invalid timeout: %w", err)
		}
		to = timeout
	}
	return host, "outbound|" + strconv.FormatUint(uint64(port), 10) + "||" + host, status, to, nil
}

// headerList is Istio's header list for ext_authz: exact, prefix ("x*")
// or suffix ("*x"), case-insensitive; nil for none.
func headerList(hs []string) *matcherv3.ListStringMatcher {
	if len(hs) == 0 {
		return nil
	}
	l := &matcherv3.ListStringMatcher{}
	for _, h := range hs {
		m := authzStringMatcher(h)
		m.IgnoreCase = true
		l.Patterns = append(l.Patterns, m)
	}
	return l
}

// AuthzFilters are the authorization filters of one proxy: HTTP filters
// for its inbound (sidecar) or gateway HTTP connection managers, and
// network filters for its inbound or gateway TCP filter chains, to put
// before their tcp_proxy.
type AuthzFilters struct {
	HTTP []*hcmv3.HttpFilter
	TCP  []*listenerv3.Filter
}

// AuthorizationFilters builds the authorization filters of proxy p from
// the AuthorizationPolicies that apply to it, under mesh config mesh
// (nil: Istio's defaults), as GenerateMesh puts them on its listeners.
// The TCP ones are for the inbound TCP filter chains an intercepting
// sidecar has (explicit mode has none). It is pure and safe for
// concurrent use; it fails only when a typed config cannot be packed.
func AuthorizationFilters(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig) (*AuthzFilters, error) {
	b := newAuthzBuilder(pc.ForProxy(p), p, mesh)
	h, err := b.httpFilters()
	if err != nil {
		return nil, err
	}
	t, err := b.tcpFilters()
	if err != nil {
		return nil, err
	}
	return &AuthzFilters{HTTP: h, TCP: t}, nil
}

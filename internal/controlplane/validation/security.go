package validation

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
)

// AuthorizationPolicy and PeerAuthentication (Istio's
// ValidateAuthorizationPolicy and ValidatePeerAuthentication, with the
// CRD schema's rules: selector, targetRef and targetRefs exclusive; at
// most 512 rules and 512 from per rule; serviceAccounts apart from
// principals and namespaces). Loom serves selector policies on sidecars
// and gateways; a targetRef or targetRefs (Kubernetes Gateway API
// Gateways, waypoints' Services and ServiceEntries) is checked as Istio
// checks it and then refused as Unsupported.

// Limits of Istio's CRD schema.
const (
	maxPolicyRules       = 512
	maxRuleFrom          = 512
	maxPolicyTargetRefs  = 16
	maxServiceAccounts   = 16
	maxServiceAccountLen = 320
)

// conditionKeys are the `when` keys of Istio's ValidateAttribute that are
// matched whole; conditionMapKeys take a name in brackets
// ("request.headers[User-Agent]"); conditionPrefix is the experimental
// metadata key.
var (
	conditionKeys = []string{
		"source.ip", "remote.ip", "source.namespace", "source.principal", "source.trustDomain",
		"request.auth.principal", "request.auth.audiences", "request.auth.presenter",
		"destination.ip", "destination.port", "connection.sni",
	}
	conditionMapKeys = []string{"request.headers", "request.auth.claims"}
	conditionPrefix  = "experimental.envoy.filters."
)

func (c *checker) authorizationPolicy(ap *security.AuthorizationPolicy) {
	c.policyTargets(ap.GetSelector(), ap.GetTargetRef(), ap.GetTargetRefs(), true)
	rulesNil := ap.Rules == nil
	switch ap.GetAction() {
	case security.AuthorizationPolicy_CUSTOM:
		if rulesNil {
			c.errf("spec.rules", "Required value: CUSTOM action without `rules` is meaningless as it will never be triggered, "+
				"add an empty rule `{}` if you want it be triggered for every request")
		} else if ap.GetProvider().GetName() == "" {
			c.errf("spec.provider.name", "Required value: `provider.name` must not be empty")
		}
		c.customRules(ap.GetRules())
	case security.AuthorizationPolicy_DENY:
		if rulesNil {
			c.errf("spec.rules", "Required value: DENY action without `rules` is meaningless as it will never be triggered, "+
				"add an empty rule `{}` if you want it be triggered for every request")
		}
	}
	if ap.GetProvider() != nil && ap.GetAction() != security.AuthorizationPolicy_CUSTOM {
		c.errf("spec.provider", "Invalid value: `provider` must not be with non CUSTOM action, found %s", ap.GetAction())
	}
	if len(ap.GetRules()) > maxPolicyRules {
		c.errf("spec.rules", "Too many: %d: must have at most %d items", len(ap.GetRules()), maxPolicyRules)
	}
	for i, r := range ap.GetRules() {
		c.authzRule(fmt.Sprintf("spec.rules[%d]", i), i, r)
	}
}

// customRules refuses the fields Istio does not support with CUSTOM: the
// sources and conditions that need the peer's identity or a JWT.
func (c *checker) customRules(rules []*security.Rule) {
	for i, r := range rules {
		p := fmt.Sprintf("spec.rules[%d]", i)
		for j, f := range r.GetFrom() {
			src := f.GetSource()
			sp := fmt.Sprintf("%s.from[%d].source", p, j)
			for _, fld := range []struct {
				name, field string
				set         bool
			}{
				{"From.Namespaces", "namespaces", len(src.GetNamespaces()) > 0},
				{"From.NotNamespaces", "notNamespaces", len(src.GetNotNamespaces()) > 0},
				{"From.Principals", "principals", len(src.GetPrincipals()) > 0},
				{"From.NotPrincipals", "notPrincipals", len(src.GetNotPrincipals()) > 0},
				{"From.RequestPrincipals", "requestPrincipals", len(src.GetRequestPrincipals()) > 0},
				{"From.NotRequestPrincipals", "notRequestPrincipals", len(src.GetNotRequestPrincipals()) > 0},
			} {
				if fld.set {
					c.errf(sp+"."+fld.field, "Invalid value: %s is currently not supported with CUSTOM action", fld.name)
				}
			}
		}
		for j, w := range r.GetWhen() {
			k := w.GetKey()
			if k == "source.namespace" || k == "source.principal" || strings.HasPrefix(k, "request.auth.") {
				c.errf(fmt.Sprintf("%s.when[%d].key", p, j), "Invalid value: %s is currently not supported with CUSTOM action", k)
			}
		}
	}
}

func (c *checker) authzRule(p string, i int, r *security.Rule) {
	if r == nil {
		c.errf(p, "Required value: `rule` must not be nil, found at rule %d", i)
		return
	}
	if r.From != nil && len(r.From) == 0 {
		c.errf(p+".from", "Required value: `from` must not be empty, found at rule %d", i)
	}
	if len(r.From) > maxRuleFrom {
		c.errf(p+".from", "Too many: %d: must have at most %d items", len(r.From), maxRuleFrom)
	}
	for j, f := range r.From {
		fp := fmt.Sprintf("%s.from[%d]", p, j)
		if f == nil {
			c.errf(fp, "Required value: `from` must not be nil, found at rule %d", i)
			continue
		}
		if f.Source == nil {
			c.errf(fp+".source", "Required value: `from.source` must not be nil, found at rule %d", i)
			continue
		}
		c.authzSource(fp+".source", i, f.Source)
	}
	if r.To != nil && len(r.To) == 0 {
		c.errf(p+".to", "Required value: `to` must not be empty, found at rule %d", i)
	}
	for j, t := range r.To {
		tp := fmt.Sprintf("%s.to[%d]", p, j)
		if t == nil {
			c.errf(tp, "Required value: `to` must not be nil, found at rule %d", i)
			continue
		}
		if t.Operation == nil {
			c.errf(tp+".operation", "Required value: `to.operation` must not be nil, found at rule %d", i)
			continue
		}
		c.authzOperation(tp+".operation", i, t.Operation)
	}
	for j, w := range r.When {
		wp := fmt.Sprintf("%s.when[%d]", p, j)
		if w == nil {
			c.errf(wp, "Required value: `when` must not be nil, found at rule %d", i)
			continue
		}
		c.authzCondition(wp, w)
	}
}

func (c *checker) authzSource(p string, i int, s *security.Source) {
	if c.valueLists(p, []namedValues{
		{"principals", s.Principals}, {"notPrincipals", s.NotPrincipals},
		{"requestPrincipals", s.RequestPrincipals}, {"notRequestPrincipals", s.NotRequestPrincipals},
		{"namespaces", s.Namespaces}, {"notNamespaces", s.NotNamespaces},
		{"serviceAccounts", s.ServiceAccounts}, {"notServiceAccounts", s.NotServiceAccounts},
		{"ipBlocks", s.IpBlocks}, {"notIpBlocks", s.NotIpBlocks},
		{"remoteIpBlocks", s.RemoteIpBlocks}, {"notRemoteIpBlocks", s.NotRemoteIpBlocks},
		{"trustDomains", s.TrustDomains}, {"notTrustDomains", s.NotTrustDomains},
	}) {
		c.errf(p, "Required value: `from.source` must not be empty, found at rule %d", i)
	}
	if (s.ServiceAccounts != nil || s.NotServiceAccounts != nil) &&
		(s.Principals != nil || s.NotPrincipals != nil || s.Namespaces != nil || s.NotNamespaces != nil) {
		c.errf(p, "Invalid value: Cannot set serviceAccounts with namespaces or principals")
	}
	c.serviceAccounts(p+".serviceAccounts", s.ServiceAccounts)
	c.serviceAccounts(p+".notServiceAccounts", s.NotServiceAccounts)
	c.ipBlocks(p+".ipBlocks", s.IpBlocks)
	c.ipBlocks(p+".notIpBlocks", s.NotIpBlocks)
	c.ipBlocks(p+".remoteIpBlocks", s.RemoteIpBlocks)
	c.ipBlocks(p+".notRemoteIpBlocks", s.NotRemoteIpBlocks)
}

// serviceAccounts checks Source.serviceAccounts: at most 16 entries of at
// most 320 characters, each "NAMESPACE/NAME" or "NAME" without wildcards.
func (c *checker) serviceAccounts(p string, sas []string) {
	if len(sas) > maxServiceAccounts {
		c.errf(p, "Too many: %d: must have at most %d items", len(sas), maxServiceAccounts)
	}
	for k, sa := range sas {
		sp := fmt.Sprintf("%s[%d]", p, k)
		switch ns, name, hasNS := strings.Cut(sa, "/"); {
		case sa == "":
			// nonEmptyValues said it.
		case len(sa) > maxServiceAccountLen:
			c.errf(sp, "Too long: may not be longer than %d", maxServiceAccountLen)
		case strings.Contains(sa, "*"):
			c.errf(sp, "Invalid value: %q: wildcard is not supported in serviceAccounts", sa)
		case hasNS && (ns == "" || name == "" || strings.Contains(name, "/")):
			c.errf(sp, "Invalid value: %q: must be <namespace>/<serviceaccount> or <serviceaccount>", sa)
		}
	}
}

func (c *checker) authzOperation(p string, i int, o *security.Operation) {
	if c.valueLists(p, []namedValues{
		{"hosts", o.Hosts}, {"notHosts", o.NotHosts}, {"ports", o.Ports}, {"notPorts", o.NotPorts},
		{"methods", o.Methods}, {"notMethods", o.NotMethods}, {"paths", o.Paths}, {"notPaths", o.NotPaths},
	}) {
		c.errf(p, "Required value: `to.operation` must not be empty, found at rule %d", i)
	}
	c.authzPorts(p+".ports", o.Ports)
	c.authzPorts(p+".notPorts", o.NotPorts)
	c.pathTemplates(p+".paths", o.Paths)
	c.pathTemplates(p+".notPaths", o.NotPaths)
}

func (c *checker) authzCondition(p string, w *security.Condition) {
	key := w.GetKey()
	if key == "" {
		c.errf(p+".key", "Required value: `key` must not be empty")
		return
	}
	if len(w.Values) == 0 && len(w.NotValues) == 0 {
		c.errf(p, "Required value: at least one of `values` or `notValues` must be set for key %s", key)
		return
	}
	switch {
	case slices.Contains(conditionKeys, key):
	case strings.HasPrefix(key, conditionPrefix):
	case slices.ContainsFunc(conditionMapKeys, func(k string) bool { return strings.HasPrefix(key, k) }):
		if open := strings.Index(key, "["); !strings.HasSuffix(key, "]") || open <= 0 || open >= len(key)-2 {
			c.errf(p+".key", "Invalid value: %q: bad key: should have format a[b]", key)
		}
		return
	default:
		c.errf(p+".key", "Unsupported value: %q: unknown attribute (see https://istio.io/docs/reference/config/security/conditions/)", key)
		return
	}
	switch key {
	case "source.ip", "remote.ip", "destination.ip":
		c.ipBlocks(p+".values", w.Values)
		c.ipBlocks(p+".notValues", w.NotValues)
	case "destination.port":
		c.authzPorts(p+".values", w.Values)
		c.authzPorts(p+".notValues", w.NotValues)
	}
}

// namedValues is one list field of a Source or an Operation.
type namedValues struct {
	field  string
	values []string
}

// valueLists applies Istio's CheckEmptyValues to each list under p and
// reports whether every list is empty.
func (c *checker) valueLists(p string, lists []namedValues) (empty bool) {
	empty = true
	for _, l := range lists {
		if len(l.values) > 0 {
			empty = false
		}
		c.nonEmptyValues(p+"."+l.field, l.values)
	}
	return empty
}

// nonEmptyValues applies Istio's CheckEmptyValues.
func (c *checker) nonEmptyValues(p string, vs []string) {
	for k, v := range vs {
		if v == "" {
			c.errf(fmt.Sprintf("%s[%d]", p, k), "Invalid value: \"\": empty value not allowed")
		}
	}
}

// ipBlocks applies Istio's ValidateIPs: an IP address or a CIDR range.
func (c *checker) ipBlocks(p string, vs []string) {
	for k, v := range vs {
		if v == "" {
			continue
		}
		if strings.Contains(v, "/") {
			if _, err := netip.ParsePrefix(v); err != nil {
				c.errf(fmt.Sprintf("%s[%d]", p, k), "Invalid value: %q: bad CIDR range: %v", v, err)
			}
		} else if _, err := netip.ParseAddr(v); err != nil {
			c.errf(fmt.Sprintf("%s[%d]", p, k), "Invalid value: %q: bad IP address", v)
		}
	}
}

// authzPorts applies Istio's ValidatePorts: a number 0-65535.
func (c *checker) authzPorts(p string, vs []string) {
	for k, v := range vs {
		if v == "" {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 32); err != nil || n < 0 || n > 65535 {
			c.errf(fmt.Sprintf("%s[%d]", p, k), "Invalid value: %q: bad port: must be a number 0-65535", v)
		}
	}
}

// pathTemplates applies Istio's CheckValidPathTemplate to paths that use
// the {*} and {**} operators: no '{', '}' or '*' outside an operator
// segment, and {**} last.
func (c *checker) pathTemplates(p string, paths []string) {
	for k, path := range paths {
		if msg := pathTemplateError(path); msg != "" {
			c.errf(fmt.Sprintf("%s[%d]", p, k), "Invalid value: %q: invalid or unsupported path: %s", path, msg)
		}
	}
}

// Istio's path template operators (Operation.paths).
const (
	pathMatchOne = "{*}"
	pathMatchAny = "{**}"
)

// ContainsPathTemplate reports whether an AuthorizationPolicy path uses a
// template operator, {*} or {**}, and is therefore an Envoy URI template
// rather than an exact, prefix or suffix match.
func ContainsPathTemplate(path string) bool {
	return strings.Contains(path, pathMatchOne) || strings.Contains(path, pathMatchAny)
}

func pathTemplateError(path string) string {
	template := ContainsPathTemplate(path)
	seenAny := false
	for _, glob := range strings.Split(strings.Trim(path, "/"), "/") {
		switch {
		case (glob == pathMatchOne || glob == pathMatchAny) && seenAny:
			return "{**} is not the last operator"
		case glob == pathMatchOne:
			continue
		case glob == pathMatchAny:
			seenAny = true
			continue
		case strings.ContainsAny(glob, "{}"):
			return "contains '{' or '}' beyond a supported path template"
		case template && strings.Contains(glob, "*"):
			return "contains '*' beyond a supported path template"
		}
	}
	return ""
}

// policyTargets checks the exclusive selector, targetRef and targetRefs of
// a security policy, as Istio's CRD rules, validateWorkloadSelector and
// validatePolicyTargetReference do. With refuseTargets a target is refused
// as not served (a policy Loom would silently not apply).
func (c *checker) policyTargets(sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference, refuseTargets bool) {
	set := 0
	for _, b := range []bool{sel != nil, ref != nil, len(refs) > 0} {
		if b {
			set++
		}
	}
	if set > 1 {
		c.errf("spec", "Invalid value: only one of targetRefs or selector can be set")
	}
	if sel != nil {
		c.selector("spec.selector.matchLabels", sel.GetMatchLabels())
		if _, ok := sel.GetMatchLabels()[""]; ok {
			c.errf("spec.selector.matchLabels", "Invalid value: key must not be empty")
		}
	}
	if len(refs) > maxPolicyTargetRefs {
		c.errf("spec.targetRefs", "Too many: %d: must have at most %d items", len(refs), maxPolicyTargetRefs)
	}
	check := func(p string, r *typev1beta1.PolicyTargetReference) {
		c.policyTargetRef(p, r)
		if refuseTargets {
			c.unsupported(p)
		}
	}
	if ref != nil {
		check("spec.targetRef", ref)
	}
	for i, r := range refs {
		check(fmt.Sprintf("spec.targetRefs[%d]", i), r)
	}
}

var (
	targetGroupRE = regexp.MustCompile(`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	targetKindRE  = regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
)

// policyTargetKinds are the group/kind pairs Istio's webhook lets a policy
// target ("" and "core" are the core group).
var policyTargetKinds = map[string]bool{
	"core/Service":                           true,
	"networking.istio.io/ServiceEntry":       true,
	"gateway.networking.k8s.io/Gateway":      true,
	"gateway.networking.k8s.io/GatewayClass": true,
}

func (c *checker) policyTargetRef(p string, r *typev1beta1.PolicyTargetReference) {
	if r == nil {
		c.errf(p, `Invalid value: "null": must be of type object`)
		return
	}
	if g := r.GetGroup(); len(g) > 253 || !targetGroupRE.MatchString(g) {
		c.errf(p+".group", "Invalid value: %q: %s.group in body should match '%s'", g, p, targetGroupRE)
	}
	switch k := r.GetKind(); {
	case k == "":
		c.errf(p+".kind", "Required value")
	case len(k) > 63 || !targetKindRE.MatchString(k):
		c.errf(p+".kind", "Invalid value: %q: %s.kind in body should match '%s'", k, p, targetKindRE)
	default:
		group := r.GetGroup()
		if group == "" {
			group = "core"
		}
		if !policyTargetKinds[group+"/"+k] {
			c.errf(p, "Invalid value: targetRef must be to one of Service, ServiceEntry, gateway.networking.k8s.io Gateway or GatewayClass but was %s/%s", r.GetGroup(), k)
		}
	}
	switch n := r.GetName(); {
	case n == "":
		c.errf(p+".name", "Required value")
	case len(n) > 253:
		c.errf(p+".name", "Too long: must have at most 253 bytes")
	}
	if r.GetNamespace() != "" {
		c.errf(p+".namespace", "Invalid value: %q: cross namespace referencing is not currently supported", r.GetNamespace())
	}
}

func (c *checker) peerAuthentication(pa *security.PeerAuthentication) {
	sel := pa.GetSelector()
	if sel != nil {
		c.selector("spec.selector.matchLabels", sel.GetMatchLabels())
	}
	if len(pa.GetPortLevelMtls()) == 0 {
		return
	}
	if len(sel.GetMatchLabels()) == 0 {
		c.errf("spec.portLevelMtls", "Invalid value: portLevelMtls requires selector: mesh and namespace peer authentication cannot have port level mTLS")
	}
	for _, port := range slices.Sorted(maps.Keys(pa.GetPortLevelMtls())) {
		if port == 0 || port > 65535 {
			c.errf(fmt.Sprintf("spec.portLevelMtls[%d]", port), "Invalid value: %d: port must be between 1-65535", port)
		}
	}
}

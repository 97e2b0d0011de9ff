package model

import (
	"strconv"

	security "istio.io/api/security/v1beta1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// DryRunAnnotation marks an AuthorizationPolicy to be evaluated without
// being enforced (Istio's istio.io/dry-run: "true").
const DryRunAnnotation = "istio.io/dry-run"

// AuthorizationPolicy is one AuthorizationPolicy resource.
type AuthorizationPolicy struct {
	Name      string
	Namespace string
	// DryRun is the istio.io/dry-run annotation read as Istio does
	// (strconv.ParseBool; anything else is false).
	DryRun bool
	Spec   *security.AuthorizationPolicy
}

// AuthorizationPolicies are the policies that apply to one workload, by
// action, each list in Istio's order: those of the root namespace first,
// then those of the workload's namespace, each by name.
type AuthorizationPolicies struct {
	Custom []*AuthorizationPolicy
	Deny   []*AuthorizationPolicy
	Allow  []*AuthorizationPolicy
	Audit  []*AuthorizationPolicy
}

// Empty reports whether no policy applies.
func (a AuthorizationPolicies) Empty() bool {
	return len(a.Custom)+len(a.Deny)+len(a.Allow)+len(a.Audit) == 0
}

// authzIndex holds the AuthorizationPolicies by namespace, sorted by name.
type authzIndex map[string][]*AuthorizationPolicy

func newAuthzIndex(snap *config.Snapshot) authzIndex {
	idx := authzIndex{}
	for _, r := range snap.List(config.KindAuthorizationPolicy) {
		spec, ok := r.Spec.(*security.AuthorizationPolicy)
		if !ok {
			continue
		}
		dry, _ := strconv.ParseBool(r.Annotations[DryRunAnnotation])
		idx[r.Namespace] = append(idx[r.Namespace], &AuthorizationPolicy{Name: r.Name, Namespace: r.Namespace, DryRun: dry, Spec: spec})
	}
	return idx
}

// AuthorizationPoliciesFor returns the AuthorizationPolicies that apply to
// a workload in namespace ns with labels, as Istio's
// ListAuthorizationPolicies does for a sidecar or a gateway: the policies
// of RootNamespace (mesh-wide) and of ns whose selector the labels
// contain (no selector, or one without labels, selects every workload).
// Policies with targetRef or targetRefs apply only to Gateway API
// gateways and waypoints, which Loom does not serve, and are skipped.
func (pc *PushContext) AuthorizationPoliciesFor(ns string, labels map[string]string) AuthorizationPolicies {
	idx := pc.authz
	if pc.base != nil {
		idx = pc.base.authz
	}
	var out AuthorizationPolicies
	namespaces := []string{RootNamespace}
	if ns != RootNamespace {
		namespaces = append(namespaces, ns)
	}
	for _, n := range namespaces {
		for _, p := range idx[n] {
			if p.Spec.GetTargetRef() != nil || len(p.Spec.GetTargetRefs()) > 0 {
				continue
			}
			if !registry.LabelsContain(labels, p.Spec.GetSelector().GetMatchLabels()) {
				continue
			}
			switch p.Spec.GetAction() {
			case security.AuthorizationPolicy_ALLOW:
				out.Allow = append(out.Allow, p)
			case security.AuthorizationPolicy_DENY:
				out.Deny = append(out.Deny, p)
			case security.AuthorizationPolicy_AUDIT:
				out.Audit = append(out.Audit, p)
			case security.AuthorizationPolicy_CUSTOM:
				out.Custom = append(out.Custom, p)
			}
		}
	}
	return out
}

package model

import (
	security "istio.io/api/security/v1beta1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// RequestAuthentication is one RequestAuthentication resource.
type RequestAuthentication struct {
	Name      string
	Namespace string
	Spec      *security.RequestAuthentication
}

// requestAuthentications lists the RequestAuthentications of snap, sorted
// by namespace and name.
func requestAuthentications(snap *config.Snapshot) []*RequestAuthentication {
	var out []*RequestAuthentication
	for _, r := range snap.List(config.KindRequestAuthentication) {
		if spec, ok := r.Spec.(*security.RequestAuthentication); ok {
			out = append(out, &RequestAuthentication{Name: r.Name, Namespace: r.Namespace, Spec: spec})
		}
	}
	return out
}

// RequestAuthenticationsForProxy returns the RequestAuthentications that
// apply to proxy p, as Istio's policy matcher picks them for a sidecar or
// a gateway deployment: those of RootNamespace and then those of p's
// namespace, each without a selector (the whole mesh, or the whole
// namespace) or with one p's labels contain. A policy with targetRef or
// targetRefs applies only to Kubernetes Gateways and waypoints, which Loom
// has not, so never here. Sorted by namespace (root first) and name.
func (pc *PushContext) RequestAuthenticationsForProxy(p *Proxy) []*RequestAuthentication {
	all := pc.requestAuthns
	if pc.base != nil {
		all = pc.base.requestAuthns
	}
	var out []*RequestAuthentication
	for _, ns := range []string{RootNamespace, p.Namespace} {
		for _, ra := range all {
			if ra.Namespace != ns {
				continue
			}
			s := ra.Spec
			if s.GetTargetRef() != nil || len(s.GetTargetRefs()) > 0 {
				continue
			}
			if registry.LabelsContain(p.Labels, s.GetSelector().GetMatchLabels()) {
				out = append(out, ra)
			}
		}
		if p.Namespace == RootNamespace {
			break
		}
	}
	return out
}

// JwksSet is the JWKS loomd fetched for the RequestAuthentication rules
// that have no inline jwks: from a jwksUri, or found through the issuer's
// OpenID discovery document when jwksUri is empty. It is immutable and
// safe for concurrent use; the zero value and nil hold nothing.
type JwksSet struct {
	byRule map[JwksKey]string
}

// JwksKey names what a rule's JWKS comes from: its issuer and jwksUri
// (either may be empty), as Istio's resolver keys its cache.
type JwksKey struct {
	Issuer, URI string
}

// NewJwksSet makes a set from fetched JWKS documents; m is copied.
func NewJwksSet(m map[JwksKey]string) *JwksSet {
	s := &JwksSet{byRule: make(map[JwksKey]string, len(m))}
	for k, v := range m {
		s.byRule[k] = v
	}
	return s
}

// Get returns the JWKS fetched for k, or false when none was (not yet, or
// every fetch failed).
func (s *JwksSet) Get(k JwksKey) (string, bool) {
	if s == nil {
		return "", false
	}
	v, ok := s.byRule[k]
	return v, ok
}

// Len is the number of JWKS in the set.
func (s *JwksSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.byRule)
}

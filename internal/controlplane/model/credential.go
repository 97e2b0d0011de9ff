package model

import (
	"github.com/loom-mesh/loom/internal/controlplane/config"
	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// Credential returns the TLS material of the Secret namespace/name, as a
// Gateway's credentialName names it (Istio's credentials controller), or
// nil when there is no such Secret or it is not a valid credential. Views
// read the same Secrets as their mesh-wide context. The bytes are secret:
// never log them.
func (pc *PushContext) Credential(namespace, name string) *config.Credential {
	r := pc.Config.Get(config.Key{Kind: config.KindSecret, Namespace: namespace, Name: name})
	if r == nil {
		return nil
	}
	s, ok := r.Spec.(*loomv1alpha1.KubernetesSecret)
	if !ok || !config.IsCredential(s) {
		return nil
	}
	c, err := config.ParseCredential(s)
	if err != nil {
		return nil
	}
	return c
}

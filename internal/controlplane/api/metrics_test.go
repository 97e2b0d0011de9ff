package api

import (
	"testing"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

func TestResourceName(t *testing.T) {
	for kind, want := range map[config.Kind]string{
		config.KindVirtualService:      "virtualservices",
		config.KindServiceEntry:        "serviceentries",
		config.KindAuthorizationPolicy: "authorizationpolicies",
		config.KindPeerAuthentication:  "peerauthentications",
		config.KindSidecar:             "sidecars",
		"":                             "",
	} {
		if got := resourceName(kind); got != want {
			t.Errorf("resourceName(%q) = %q, want %q", kind, got, want)
		}
	}
}

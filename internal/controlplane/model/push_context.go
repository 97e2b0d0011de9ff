package model

import "github.com/loom-mesh/loom/internal/controlplane/config"

// PushContext is the immutable input of translation: one config snapshot
// and the registry derived from it, indexed. Safe for concurrent use.
type PushContext struct {
	Config *config.Snapshot
}

// NewPushContext indexes snap. snap must already be validated.
func NewPushContext(snap *config.Snapshot) *PushContext {
	return &PushContext{Config: snap}
}

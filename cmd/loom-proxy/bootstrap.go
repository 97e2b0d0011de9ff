package main

import (
	"github.com/loom-mesh/loom/internal/dataplane/bootstrap"
	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// loadBootstrap reads a static bootstrap file: the admin address ("" when
// the file has none) and the resources to build the one generation from.
func loadBootstrap(path string) (adminAddr string, res config.Resources, err error) {
	b, err := bootstrap.Load(path)
	if err != nil {
		return "", config.Resources{}, err
	}
	return b.AdminAddress, b.Resources, nil
}

package filter

import "fmt"

// named is what a registry indexes: a factory's name and type URLs.
type named interface {
	Name() string
	TypeURLs() []string
}

// index finds factories of one kind by type URL and by name.
type index[F named] struct {
	byType map[string]F
	byName map[string]F
}

func newIndex[F named](what string, fs []F) (index[F], error) {
	ix := index[F]{byType: map[string]F{}, byName: map[string]F{}}
	for _, f := range fs {
		if _, dup := ix.byName[f.Name()]; dup {
			return ix, fmt.Errorf("%s registry: duplicate name %q", what, f.Name())
		}
		ix.byName[f.Name()] = f
		for _, u := range f.TypeURLs() {
			if _, dup := ix.byType[u]; dup {
				return ix, fmt.Errorf("%s registry: duplicate type URL %q", what, u)
			}
			ix.byType[u] = f
		}
	}
	return ix, nil
}

// Registry finds Factories by type URL and by name. It is immutable after
// NewRegistry and safe for concurrent use.
type Registry struct{ ix index[Factory] }

// NewRegistry indexes fs. It fails when two factories claim the same name
// or type URL.
func NewRegistry(fs ...Factory) (*Registry, error) {
	ix, err := newIndex("filter", fs)
	if err != nil {
		return nil, err
	}
	return &Registry{ix: ix}, nil
}

// ByTypeURL returns the Factory of typed_config type URL u, or nil.
func (r *Registry) ByTypeURL(u string) Factory { return r.ix.byType[u] }

// ByName returns the Factory whose Name is name, or nil.
func (r *Registry) ByName(name string) Factory { return r.ix.byName[name] }

// NetworkRegistry finds NetworkFactories by type URL and by name. It is
// immutable after NewNetworkRegistry and safe for concurrent use.
type NetworkRegistry struct{ ix index[NetworkFactory] }

// NewNetworkRegistry indexes fs. It fails when two factories claim the
// same name or type URL.
func NewNetworkRegistry(fs ...NetworkFactory) (*NetworkRegistry, error) {
	ix, err := newIndex("network filter", fs)
	if err != nil {
		return nil, err
	}
	return &NetworkRegistry{ix: ix}, nil
}

// ByTypeURL returns the NetworkFactory of typed_config type URL u, or nil.
func (r *NetworkRegistry) ByTypeURL(u string) NetworkFactory { return r.ix.byType[u] }

// ByName returns the NetworkFactory whose Name is name, or nil.
func (r *NetworkRegistry) ByName(name string) NetworkFactory { return r.ix.byName[name] }

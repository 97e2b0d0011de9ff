package filter

import "fmt"

// Registry finds Factories by type URL and by name. It is immutable after
// NewRegistry and safe for concurrent use.
type Registry struct {
	byType map[string]Factory
	byName map[string]Factory
}

// NewRegistry indexes fs. It fails when two factories claim the same name
// or type URL.
func NewRegistry(fs ...Factory) (*Registry, error) {
	r := &Registry{byType: map[string]Factory{}, byName: map[string]Factory{}}
	for _, f := range fs {
		if _, dup := r.byName[f.Name()]; dup {
			return nil, fmt.Errorf("filter registry: duplicate name %q", f.Name())
		}
		r.byName[f.Name()] = f
		for _, u := range f.TypeURLs() {
			if _, dup := r.byType[u]; dup {
				return nil, fmt.Errorf("filter registry: duplicate type URL %q", u)
			}
			r.byType[u] = f
		}
	}
	return r, nil
}

// ByTypeURL returns the Factory of typed_config type URL u, or nil.
func (r *Registry) ByTypeURL(u string) Factory { return r.byType[u] }

// ByName returns the Factory whose Name is name, or nil.
func (r *Registry) ByName(name string) Factory { return r.byName[name] }

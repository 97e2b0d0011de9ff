package config

import (
	"sort"
)

// Snapshot is an immutable, validated set of resources: the whole config at
// one moment. Readers never see it change; a new config is a new Snapshot.
type Snapshot struct {
	// Version increases by one for every new snapshot a Store publishes.
	Version   uint64
	resources map[Key]*Resource
	byKind    map[Kind][]*Resource
}

// NewSnapshot builds a snapshot of rs. Later resources with the same key
// replace earlier ones. It does not validate.
func NewSnapshot(version uint64, rs []*Resource) *Snapshot {
	s := &Snapshot{Version: version, resources: map[Key]*Resource{}, byKind: map[Kind][]*Resource{}}
	for _, r := range rs {
		s.resources[r.Key()] = r
	}
	for _, r := range s.resources {
		s.byKind[r.Kind] = append(s.byKind[r.Kind], r)
	}
	for _, l := range s.byKind {
		sort.Slice(l, func(i, j int) bool {
			if l[i].Namespace != l[j].Namespace {
				return l[i].Namespace < l[j].Namespace
			}
			return l[i].Name < l[j].Name
		})
	}
	return s
}

// Get returns the resource with key k, or nil.
func (s *Snapshot) Get(k Key) *Resource {
	if s == nil {
		return nil
	}
	return s.resources[k]
}

// List returns the resources of kind, sorted by namespace and name. The
// slice must not be modified.
func (s *Snapshot) List(kind Kind) []*Resource {
	if s == nil {
		return nil
	}
	return s.byKind[kind]
}

// All returns every resource, sorted by kind, namespace and name.
func (s *Snapshot) All() []*Resource {
	if s == nil {
		return nil
	}
	var out []*Resource
	for _, k := range Kinds() {
		out = append(out, s.byKind[k]...)
	}
	return out
}

// Len is the number of resources.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.resources)
}

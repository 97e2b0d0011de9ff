package config

import (
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// HeaderMutation is one level's (route configuration, virtual host, route
// or weighted cluster) request_headers_to_remove + request_headers_to_add,
// or the response_* pair. Apply removes first, then adds, as Envoy's
// HeaderParser does.
type HeaderMutation struct {
	Remove []string // canonical names
	Add    []filter.HeaderOption
}

// Empty reports whether m changes nothing.
func (m *HeaderMutation) Empty() bool { return m == nil || (len(m.Remove) == 0 && len(m.Add) == 0) }

// Apply mutates h in place. A nil m does nothing. New values are fresh
// slices: h never shares memory with the config.
func (m *HeaderMutation) Apply(h http.Header) {
	if m == nil {
		return
	}
	for _, k := range m.Remove {
		delete(h, k)
	}
	for i := range m.Add {
		m.Add[i].Apply(h)
	}
}

// HeaderMutations are the header changes of a route for one direction,
// every level, in the order Envoy applies them.
type HeaderMutations struct {
	// Levels are the route's, its virtual host's and its route
	// configuration's mutations (nil entries left out), in evaluation
	// order: route first by default, so that the route configuration's
	// wins; route configuration first with
	// most_specific_header_mutations_wins.
	Levels []*HeaderMutation
	// WeightedLast says the weighted cluster's mutation runs after Levels
	// (most_specific_header_mutations_wins) rather than before them.
	WeightedLast bool
}

// Apply applies m to h; wc is the picked weighted cluster's mutation for
// this direction, or nil.
func (m *HeaderMutations) Apply(h http.Header, wc *HeaderMutation) {
	if wc != nil && !m.WeightedLast {
		wc.Apply(h)
	}
	for _, l := range m.Levels {
		l.Apply(h)
	}
	if wc != nil && m.WeightedLast {
		wc.Apply(h)
	}
}

// ClusterFor returns the WeightedCluster of r named name, or nil.
func (r *Route) ClusterFor(name string) *WeightedCluster {
	if r == nil {
		return nil
	}
	for i := range r.Clusters {
		if r.Clusters[i].Name == name {
			return &r.Clusters[i]
		}
	}
	return nil
}

// buildHeaderMutation parses one level's headers_to_add and
// headers_to_remove; the paths are the two fields' names. It returns nil
// when both are empty.
func buildHeaderMutation(addPath string, add []*corev3.HeaderValueOption, removePath string, remove []string) (*HeaderMutation, error) {
	if len(add) == 0 && len(remove) == 0 {
		return nil, nil
	}
	m := &HeaderMutation{}
	for i, k := range remove {
		if err := filter.CheckMutableHeader(idx(removePath, i), k); err != nil {
			return nil, err
		}
		m.Remove = append(m.Remove, http.CanonicalHeaderKey(k))
	}
	var err error
	if m.Add, err = filter.ParseHeaderOptions(addPath, add); err != nil {
		return nil, err
	}
	return m, nil
}

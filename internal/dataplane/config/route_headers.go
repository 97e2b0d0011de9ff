package config

import (
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// AppendAction is envoy.config.core.v3.HeaderValueOption.HeaderAppendAction.
type AppendAction int

// Header append actions.
const (
	AppendIfExistsOrAdd AppendAction = iota
	AddIfAbsent
	OverwriteIfExistsOrAdd
	OverwriteIfExists
)

// HeaderValue is one HeaderValueOption of *_headers_to_add: a literal
// value (no %COMMAND% substitution) for the canonical header Name.
type HeaderValue struct {
	Name   string
	Value  string
	Action AppendAction
	// KeepEmpty adds the header even when Value is "" (keep_empty_value).
	KeepEmpty bool
}

// HeaderMutation is one level's (route configuration, virtual host, route
// or weighted cluster) request_headers_to_remove + request_headers_to_add,
// or the response_* pair. Apply removes first, then adds, as Envoy's
// HeaderParser does.
type HeaderMutation struct {
	Remove []string // canonical names
	Add    []HeaderValue
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
		a := &m.Add[i]
		if a.Value == "" && !a.KeepEmpty {
			continue
		}
		_, present := h[a.Name]
		switch a.Action {
		case AppendIfExistsOrAdd:
			h[a.Name] = append(h[a.Name][:len(h[a.Name]):len(h[a.Name])], a.Value)
		case AddIfAbsent:
			if !present {
				h[a.Name] = []string{a.Value}
			}
		case OverwriteIfExistsOrAdd:
			h[a.Name] = []string{a.Value}
		case OverwriteIfExists:
			if present {
				h[a.Name] = []string{a.Value}
			}
		}
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
		p := idx(removePath, i)
		if err := checkMutableHeader(p, k); err != nil {
			return nil, err
		}
		m.Remove = append(m.Remove, http.CanonicalHeaderKey(k))
	}
	for i, o := range add {
		p := idx(addPath, i)
		hv := o.GetHeader()
		if hv == nil {
			return nil, ferr(p+".header", "must be set")
		}
		if err := checkMutableHeader(p+".header.key", hv.GetKey()); err != nil {
			return nil, err
		}
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			if v != "" {
				return nil, ferr(p+".header", "only one of value and raw_value may be set")
			}
			v = string(hv.GetRawValue())
		}
		lit, err := literalHeaderValue(v)
		if err != nil {
			return nil, verr(p+".header.value", v, "%s", err)
		}
		a := HeaderValue{Name: http.CanonicalHeaderKey(hv.GetKey()), Value: lit, KeepEmpty: o.GetKeepEmptyValue()}
		//nolint:staticcheck // append is deprecated but still sent by control planes.
		if ap := o.GetAppend(); ap != nil {
			if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, ferr(p, "append and append_action must not both be set")
			}
			if !ap.GetValue() {
				a.Action = OverwriteIfExistsOrAdd
			}
		} else {
			switch o.GetAppendAction() {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				a.Action = AppendIfExistsOrAdd
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				a.Action = AddIfAbsent
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				a.Action = OverwriteIfExistsOrAdd
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				a.Action = OverwriteIfExists
			default:
				return nil, verr(p+".append_action", o.GetAppendAction().String(), "unknown append action")
			}
		}
		m.Add = append(m.Add, a)
	}
	return m, nil
}

// checkMutableHeader refuses what Envoy refuses to add or remove: an empty
// or invalid name, a pseudo-header and host.
func checkMutableHeader(path, k string) error {
	switch {
	case k == "":
		return ferr(path, "must not be empty")
	case strings.HasPrefix(k, ":") || strings.EqualFold(k, "host"):
		return verr(path, k, "must not be a pseudo-header or host")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return verr(path, k, "must be a valid header name")
		}
	}
	return nil
}

// literalHeaderValue returns v with "%%" unescaped; a value that uses a
// %COMMAND% (Envoy's substitution formatter) is an error, as this version
// implements none, and so is a value with a control character.
func literalHeaderValue(v string) (string, error) {
	if strings.ContainsAny(v, "\r\n\x00") {
		return "", errString("must not contain CR, LF or NUL")
	}
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", errString("must be a literal: %COMMAND% substitutions are not supported (write %% for a percent sign)")
	}
	return b.String(), nil
}

type errString string

func (e errString) Error() string { return string(e) }

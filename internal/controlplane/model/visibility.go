package model

import "slices"

// Visibility is a resource's exportTo resolved against its namespace: the
// namespaces whose proxies see it (Istio's pkg/config/visibility). The zero
// value is visible to no namespace.
type Visibility struct {
	// Public is exportTo "*", or exportTo unset (Istio's default).
	Public bool
	// Namespaces are the named namespaces, "." resolved to the resource's
	// own; unused when Public.
	Namespaces []string
}

// NewVisibility resolves exportTo (VirtualService, DestinationRule or
// ServiceEntry .exportTo) of a resource in namespace ns: empty or "*" is
// every namespace, "." is ns, "~" (ServiceEntry only) is none, any other
// entry a namespace name.
func NewVisibility(exportTo []string, ns string) Visibility {
	if len(exportTo) == 0 {
		return Visibility{Public: true}
	}
	var v Visibility
	for _, e := range exportTo {
		switch e {
		case "*":
			v.Public = true
		case "~":
		case ".":
			v.Namespaces = append(v.Namespaces, ns)
		default:
			v.Namespaces = append(v.Namespaces, e)
		}
	}
	return v
}

// VisibleTo reports whether proxies (or resources) of namespace ns see the
// resource.
func (v Visibility) VisibleTo(ns string) bool {
	return v.Public || slices.Contains(v.Namespaces, ns)
}

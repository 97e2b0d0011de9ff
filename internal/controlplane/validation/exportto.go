package validation

import (
	"fmt"
	"slices"
)

// exportTo checks a VirtualService, DestinationRule or ServiceEntry
// exportTo as Istio's validateExportTo: each entry "." (the resource's
// namespace), "*" (every namespace), a namespace name, or, for a
// ServiceEntry only, "~" (no namespace); no entry twice ("." and the
// resource's own namespace count as the same); "*" and "~" alone.
func (c *checker) exportTo(p string, exportTo []string, serviceEntry bool) {
	var seen []string
	for i, e := range exportTo {
		ep := fmt.Sprintf("%s[%d]", p, i)
		key := e
		if e == "." {
			key = c.r.Namespace
		}
		switch {
		case slices.Contains(seen, key):
			c.errf(ep, "Duplicate value: %q", e)
			continue
		case e == "~" && !serviceEntry:
			c.errf(ep, `Invalid value: %q: "~" (export to no namespace) is only allowed on a ServiceEntry`, e)
		case e != "*" && e != "." && e != "~" && !isDNS1123Label(e):
			c.errf(ep, `Invalid value: %q: must be ".", "*" or a namespace name (a DNS-1123 label)`, e)
		}
		seen = append(seen, key)
	}
	if len(exportTo) > 1 {
		if slices.Contains(exportTo, "*") {
			c.errf(p, `Invalid value: %q: cannot have both public (*) and non-public exportTo values`, exportTo)
		}
		if slices.Contains(exportTo, "~") {
			c.errf(p, `Invalid value: %q: cannot export to no namespace (~) and to some`, exportTo)
		}
	}
}

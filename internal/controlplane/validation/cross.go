package validation

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// DomainSuffix is the cluster domain short host names are resolved in:
// "reviews" in namespace "default" is "reviews.default.svc.cluster.local".
const DomainSuffix = "svc.cluster.local"

// ResolveHost turns a short host name (one with no dot) written in a
// resource of namespace ns into its fully qualified name, as Istio's
// ResolveShortnameToFQDN does. Names with a dot, wildcards and IPs are
// returned unchanged.
func ResolveHost(host, ns string) string {
	if host == "" || host == "*" || strings.Contains(host, ".") || strings.Contains(host, ":") {
		return host
	}
	return host + "." + ns + "." + DomainSuffix
}

// ValidateAll checks a whole config set: every resource with Validate, then
// the checks that need more than one resource:
//   - a key (kind, namespace, name) defined twice is an error naming both
//     sources;
//   - a VirtualService destination's subset must be defined by a
//     DestinationRule for that host (short names resolved in each
//     resource's namespace; a wildcard DestinationRule host matches too).
//
// It returns nil when the set is valid. It does not modify rs and is safe
// for concurrent use.
func ValidateAll(rs []*config.Resource) config.Errors {
	var errs config.Errors
	seen := map[config.Key]*config.Resource{}
	for _, r := range rs {
		errs = append(errs, Validate(r)...)
		k := r.Key()
		if first, ok := seen[k]; ok {
			errs = append(errs, &config.Error{Source: r.Source, Key: k, Field: "metadata.name",
				Msg: fmt.Sprintf("Duplicate value: %s is also defined in %s", k, sourceOrUnknown(first.Source))})
			continue
		}
		seen[k] = r
	}
	errs = append(errs, checkSubsets(rs)...)
	return errs
}

func sourceOrUnknown(s config.Source) string {
	if str := s.String(); str != "" {
		return str
	}
	return "(unknown source)"
}

// drHost is a DestinationRule's resolved host and its subsets.
type drHost struct {
	host    string
	subsets map[string]bool
}

func checkSubsets(rs []*config.Resource) config.Errors {
	var drs []drHost
	for _, r := range rs {
		dr, ok := r.Spec.(*networking.DestinationRule)
		if !ok || dr.Host == "" {
			continue
		}
		d := drHost{host: ResolveHost(dr.Host, r.Namespace), subsets: map[string]bool{}}
		for _, s := range dr.Subsets {
			d.subsets[s.Name] = true
		}
		drs = append(drs, d)
	}
	var errs config.Errors
	for _, r := range rs {
		vs, ok := r.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		check := func(field string, d *networking.Destination) {
			if d == nil || d.Subset == "" || d.Host == "" {
				return
			}
			host := ResolveHost(d.Host, r.Namespace)
			found, anyDR := false, false
			for _, dr := range drs {
				if hostMatches(dr.host, host) {
					anyDR = true
					if dr.subsets[d.Subset] {
						found = true
						break
					}
				}
			}
			if found {
				return
			}
			msg := fmt.Sprintf("Invalid value: %q: no DestinationRule for host %q defines subset %q", d.Subset, host, d.Subset)
			if !anyDR {
				msg = fmt.Sprintf("Invalid value: %q: no DestinationRule for host %q (subset %q is undefined)", d.Subset, host, d.Subset)
			}
			errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: field + ".subset", Msg: msg})
		}
		for i, h := range vs.Http {
			for j, rd := range h.Route {
				check(fmt.Sprintf("spec.http[%d].route[%d].destination", i, j), rd.Destination)
			}
			check(fmt.Sprintf("spec.http[%d].mirror", i), h.Mirror)
			for j, m := range h.Mirrors {
				check(fmt.Sprintf("spec.http[%d].mirrors[%d].destination", i, j), m.Destination)
			}
		}
		for i, t := range vs.Tcp {
			for j, rd := range t.Route {
				check(fmt.Sprintf("spec.tcp[%d].route[%d].destination", i, j), rd.Destination)
			}
		}
		for i, t := range vs.Tls {
			for j, rd := range t.Route {
				check(fmt.Sprintf("spec.tls[%d].route[%d].destination", i, j), rd.Destination)
			}
		}
	}
	return errs
}

// hostMatches reports whether a DestinationRule host (possibly "*" or
// "*.suffix") covers the destination host.
func hostMatches(drHost, host string) bool {
	if drHost == host || drHost == "*" {
		return true
	}
	if suffix, ok := strings.CutPrefix(drHost, "*"); ok {
		return strings.HasSuffix(host, suffix)
	}
	return false
}

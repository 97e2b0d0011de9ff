package validation

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
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
//     resource's namespace; a wildcard DestinationRule host matches too);
//   - a VirtualService http[].delegate must name a VirtualService that
//     exists, has no hosts and is exported to the root's namespace, and
//     following delegates must never come back to where it started;
//   - a namespace has at most one Sidecar without workloadSelector;
//   - a DestinationRule trafficPolicy.tunnel must not go to a cluster
//     that speaks HTTP/2 (checkTunnels).
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
	errs = append(errs, checkDelegates(rs)...)
	errs = append(errs, checkSidecars(rs)...)
	errs = append(errs, checkTunnels(rs)...)
	return errs
}

// checkTunnels refuses a DestinationRule trafficPolicy.tunnel (top level
// or a subset's) whose cluster would speak HTTP/2: a ServiceEntry of the
// set declares the rule's host with an HTTP2, GRPC or GRPC-Web port (the
// cluster's protocol is the port's, as Istio's setUpstreamProtocol), or
// the same policy's connectionPool.http.h2UpgradePolicy is UPGRADE. Envoy
// would send the tunnel as an HTTP/2 CONNECT; loom-proxy speaks tunnels
// over HTTP/1.1 only and would fail every connection with UF, so the rule
// is refused here rather than NACKed by the proxy (a NACK holds back
// every later update). Hosts known only from Kubernetes Services are not
// in the set: the proxy refuses those connections (UF) and logs it.
func checkTunnels(rs []*config.Resource) config.Errors {
	type h2Port struct {
		se    *config.Resource
		host  string
		port  uint32
		proto registry.Protocol
	}
	var h2 []h2Port
	for _, r := range rs {
		se, ok := r.Spec.(*networking.ServiceEntry)
		if !ok {
			continue
		}
		for _, p := range se.Ports {
			proto := registry.ParseProtocol(p.GetProtocol(), p.GetName())
			if !proto.IsHTTP2() {
				continue
			}
			for _, h := range se.Hosts {
				h2 = append(h2, h2Port{se: r, host: ResolveHost(h, r.Namespace), port: p.GetNumber(), proto: proto})
			}
		}
	}
	var errs config.Errors
	for _, r := range rs {
		dr, ok := r.Spec.(*networking.DestinationRule)
		if !ok || dr.Host == "" {
			continue
		}
		host := ResolveHost(dr.Host, r.Namespace)
		check := func(field string, tp, top *networking.TrafficPolicy) {
			if tp.GetTunnel() == nil {
				return
			}
			cp := tp.GetConnectionPool()
			if cp == nil {
				cp = top.GetConnectionPool()
			}
			if cp.GetHttp().GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE && !cp.GetHttp().GetUseClientProtocol() {
				errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: field + ".tunnel",
					Msg: "Invalid value: with connectionPool.http.h2UpgradePolicy UPGRADE the tunnel would go over HTTP/2 (an HTTP/2 CONNECT), and loom-proxy tunnels over HTTP/1.1 only"})
				return
			}
			for _, p := range h2 {
				if hostMatches(host, p.host) {
					errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: field + ".tunnel",
						Msg: fmt.Sprintf("Invalid value: host %q port %d is %s (%s), so the tunnel would go over HTTP/2 (an HTTP/2 CONNECT), and loom-proxy tunnels over HTTP/1.1 only: declare the proxy's port TCP or HTTP",
							p.host, p.port, p.proto, p.se.Key())})
					return
				}
			}
		}
		top := dr.GetTrafficPolicy()
		check("spec.trafficPolicy", top, nil)
		for i, sub := range dr.Subsets {
			check(fmt.Sprintf("spec.subsets[%d].trafficPolicy", i), sub.GetTrafficPolicy(), top)
		}
	}
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

// checkDelegates checks every http[].delegate against the VirtualService
// it names (namespace defaulting to the root's). Istio only ignores a
// route whose delegate is missing or not exported to the root; here it is
// an error, as nothing would route its requests. A chain of delegates
// that comes back to its root is a cycle, reported on each root in it.
func checkDelegates(rs []*config.Resource) config.Errors {
	vss := map[config.Key]*config.Resource{}
	for _, r := range rs {
		if _, ok := r.Spec.(*networking.VirtualService); ok {
			vss[r.Key()] = r
		}
	}
	// targets are the VirtualServices r's routes delegate to, in order.
	targets := func(r *config.Resource) []config.Key {
		var out []config.Key
		for _, h := range r.Spec.(*networking.VirtualService).Http {
			if d := h.Delegate; d != nil && d.Name != "" {
				out = append(out, delegateKey(d, r.Namespace))
			}
		}
		return out
	}
	var errs config.Errors
	for _, r := range rs {
		vs, ok := r.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		for i, h := range vs.Http {
			d := h.Delegate
			if d == nil || d.Name == "" {
				continue
			}
			field := fmt.Sprintf("spec.http[%d].delegate", i)
			k := delegateKey(d, r.Namespace)
			target, ok := vss[k]
			if !ok {
				errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: field + ".name",
					Msg: fmt.Sprintf("Invalid value: %q: no VirtualService %s/%s to delegate to", d.Name, k.Namespace, k.Name)})
				continue
			}
			if path := delegateCycle(r.Key(), k, targets, vss); path != nil {
				errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: field,
					Msg: fmt.Sprintf("Invalid value: delegate cycle: %s: a chain of delegates must not come back", strings.Join(path, " -> "))})
				continue
			}
			tvs := target.Spec.(*networking.VirtualService)
			if len(tvs.Hosts) > 0 {
				errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: field + ".name",
					Msg: fmt.Sprintf("Invalid value: %q: VirtualService %s/%s has hosts; a delegate must have none", d.Name, k.Namespace, k.Name)})
				continue
			}
			if !exportedTo(tvs.ExportTo, k.Namespace, r.Namespace) {
				errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: field + ".namespace",
					Msg: fmt.Sprintf("Invalid value: %q: VirtualService %s/%s is not exported to namespace %q (exportTo %q)", k.Namespace, k.Namespace, k.Name, r.Namespace, tvs.ExportTo)})
			}
		}
	}
	return errs
}

func delegateKey(d *networking.Delegate, rootNamespace string) config.Key {
	ns := d.Namespace
	if ns == "" {
		ns = rootNamespace
	}
	return config.Key{Kind: config.KindVirtualService, Namespace: ns, Name: d.Name}
}

// delegateCycle follows delegates depth first from next and returns the
// chain ("ns/name" each, starting at root) when it reaches root again, or
// nil. Each VirtualService is visited once, so the walk is bounded by
// their number.
func delegateCycle(root, next config.Key, targets func(*config.Resource) []config.Key, vss map[config.Key]*config.Resource) []string {
	name := func(k config.Key) string { return k.Namespace + "/" + k.Name }
	visited := map[config.Key]bool{}
	var walk func(k config.Key, path []string) []string
	walk = func(k config.Key, path []string) []string {
		path = append(path, name(k))
		if k == root {
			return path
		}
		r, ok := vss[k]
		if !ok || visited[k] {
			return nil
		}
		visited[k] = true
		for _, t := range targets(r) {
			if p := walk(t, path); p != nil {
				return p
			}
		}
		return nil
	}
	return walk(next, []string{name(root)})
}

// exportedTo reports whether a resource of namespace own with exportTo is
// visible in namespace ns: exportTo unset or "*" is every namespace, "."
// its own, "~" none.
func exportedTo(exportTo []string, own, ns string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		if e == "*" || e == ns || (e == "." && own == ns) {
			return true
		}
	}
	return false
}

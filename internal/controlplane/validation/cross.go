package validation

import (
	"cmp"
	"fmt"
	"slices"
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
//   - a DestinationRule trafficPolicy.tunnel must not go only to
//     clusters that speak HTTP/2 (checkTunnels).
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
// or a subset's) when every cluster it can apply to would speak HTTP/2:
// Envoy would send the tunnel as an HTTP/2 CONNECT, and loom-proxy
// tunnels over HTTP/1.1 only, failing every connection with UF, so the
// rule is refused here rather than NACKed by the proxy (a NACK holds back
// every later update). Istio tunnels over the cluster of the port the TCP
// route picks ("outbound|PORT|SUBSET|HOST"), so the question is per port:
// a port's cluster speaks HTTP/2 when its protocol is HTTP2, GRPC or
// GRPC-Web (setUpstreamProtocol) or when its connection pool, merged with
// portLevelSettings as Istio's MergeTrafficPolicy (the top level's for the
// port, the subset's connectionPool, the subset's for the port; a port
// level entry replaces the pool), has h2UpgradePolicy UPGRADE without
// useClientProtocol (shouldH2Upgrade upgrades any protocol then). The
// ports are those ServiceEntries of the set declare for a host the rule's
// host matches (a wildcard rule reaches every such host); a rule whose
// host no ServiceEntry declares (a Kubernetes Service) is judged on the
// ports its portLevelSettings name and any other port, so only UPGRADE can
// refuse it. The proxy refuses what is left (UF) and logs it.
func checkTunnels(rs []*config.Resource) config.Errors {
	type sePort struct {
		se    *config.Resource
		host  string
		port  uint32
		proto registry.Protocol
	}
	var ports []sePort
	for _, r := range rs {
		se, ok := r.Spec.(*networking.ServiceEntry)
		if !ok {
			continue
		}
		for _, p := range se.Ports {
			proto := registry.ParseProtocol(p.GetProtocol(), p.GetName())
			for _, h := range se.Hosts {
				ports = append(ports, sePort{se: r, host: ResolveHost(h, r.Namespace), port: p.GetNumber(), proto: proto})
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
		var reach []sePort
		for _, p := range ports {
			if hostMatches(host, p.host) {
				reach = append(reach, p)
			}
		}
		// check reports whether it refused the tunnel of the cluster of
		// field's policy: the top level's tp (sub nil) or subset sub's.
		check := func(field string, tp, sub *networking.TrafficPolicy) bool {
			// As Istio's MergeTrafficPolicy, a subset without its own
			// tunnel takes the top level's.
			t, inherited := sub.GetTunnel(), false
			if t == nil {
				t, inherited = tp.GetTunnel(), sub != nil
			}
			if t == nil {
				return false
			}
			rp := reach
			if len(rp) == 0 {
				// No ServiceEntry: port 0 stands for every port no
				// portLevelSettings entry names.
				rp = []sePort{{port: 0}}
				for _, pls := range append(slices.Clone(tp.GetPortLevelSettings()), sub.GetPortLevelSettings()...) {
					rp = append(rp, sePort{port: pls.GetPort().GetNumber()})
				}
			}
			var why []string
			for _, p := range rp {
				switch cp := mergedConnectionPool(tp, sub, p.port); {
				case p.proto.IsHTTP2():
					why = append(why, fmt.Sprintf("host %q port %d is %s (%s)", p.host, p.port, p.proto, p.se.Key()))
				case cp.GetHttp().GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE && !cp.GetHttp().GetUseClientProtocol():
					if p.se == nil {
						why = append(why, "connectionPool.http.h2UpgradePolicy is UPGRADE")
					} else {
						why = append(why, fmt.Sprintf("host %q port %d has connectionPool.http.h2UpgradePolicy UPGRADE", p.host, p.port))
					}
				default:
					return false // this port's cluster speaks HTTP/1.1
				}
			}
			proto := cmp.Or(t.GetProtocol(), "CONNECT")
			field, from := field+".tunnel", ""
			if inherited {
				// The subset sets no tunnel: name its policy, which makes
				// the cluster HTTP/2, and where the tunnel comes from.
				field, from = strings.TrimSuffix(field, ".tunnel"), " (the subset inherits spec.trafficPolicy.tunnel)"
			}
			errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: field,
				Msg: fmt.Sprintf("Unsupported value: %q%s: %s over HTTP/2, and every cluster the rule reaches speaks it (%s): loom-proxy tunnels over HTTP/1.1 only; declare the proxy's port TCP or HTTP, without h2UpgradePolicy UPGRADE",
					proto, from, Unsupported, strings.Join(slices.Compact(why), "; "))})
			return true
		}
		top := dr.GetTrafficPolicy()
		topRefused := check("spec.trafficPolicy", top, nil)
		for i, sub := range dr.Subsets {
			sp := sub.GetTrafficPolicy()
			if sp == nil || (topRefused && sp.GetTunnel() == nil) {
				continue // same cluster, or same tunnel already refused
			}
			check(fmt.Sprintf("spec.subsets[%d].trafficPolicy", i), top, sp)
		}
	}
	return errs
}

// mergedConnectionPool is the connection pool of port port's cluster under
// the top-level policy top and the subset's sub (nil for the top level's
// own cluster), as Istio's MergeTrafficPolicy: top's, replaced by top's
// portLevelSettings entry for the port, then by sub's connectionPool when
// set, then by sub's entry for the port. A port level entry replaces the
// whole pool (nil when it sets none): port level settings do not inherit.
// Port 0 matches no entry.
func mergedConnectionPool(top, sub *networking.TrafficPolicy, port uint32) *networking.ConnectionPoolSettings {
	forPort := func(tp *networking.TrafficPolicy, cp *networking.ConnectionPoolSettings) *networking.ConnectionPoolSettings {
		for _, pls := range tp.GetPortLevelSettings() {
			if port != 0 && pls.GetPort().GetNumber() == port {
				return pls.GetConnectionPool()
			}
		}
		return cp
	}
	cp := forPort(top, top.GetConnectionPool())
	if sub == nil {
		return cp
	}
	if sub.GetConnectionPool() != nil {
		cp = sub.GetConnectionPool()
	}
	return forPort(sub, cp)
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

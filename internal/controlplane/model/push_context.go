package model

import (
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// DomainSuffix is the cluster's DNS domain: short service names resolve to
// NAME.NAMESPACE.svc.DomainSuffix.
const DomainSuffix = registry.DomainSuffix

// MeshGateway is the reserved gateway name of all sidecars, as in
// VirtualService.gateways.
const MeshGateway = "mesh"

// RootNamespace is Istio's default config root namespace (meshConfig
// rootNamespace): a DestinationRule there applies, when exported, to
// proxies of every namespace that have none of their own or of the
// service's namespace.
const RootNamespace = "istio-system"

// VirtualService is a VirtualService with its hosts and gateways resolved:
// short hosts made FQDN against its namespace, gateway references made
// "namespace/name" (or MeshGateway).
type VirtualService struct {
	Name      string
	Namespace string
	// Hosts are FQDNs, wildcards ("*.example.com") or "*", in spec order.
	Hosts []string
	// Gateways are "namespace/name" or MeshGateway; [MeshGateway] when the
	// spec names none.
	Gateways []string
	Spec     *networking.VirtualService
	// HTTP is Spec.http with every route that delegates replaced by the
	// delegate's routes merged with it (see mergeDelegates); Spec.http
	// itself when no route delegates. Translate HTTP, not Spec.http.
	HTTP []*networking.HTTPRoute
	// ExportTo is spec.exportTo resolved.
	ExportTo Visibility
}

// IsDelegate reports whether the VirtualService is a delegate: it has no
// hosts, and is used only through a root VirtualService's
// http[].delegate.
func (v *VirtualService) IsDelegate() bool { return len(v.Hosts) == 0 }

// Key returns the VirtualService's key.
func (v *VirtualService) Key() config.Key {
	return config.Key{Kind: config.KindVirtualService, Namespace: v.Namespace, Name: v.Name}
}

// BoundTo reports whether the VirtualService applies to gateway
// ("namespace/name" or MeshGateway).
func (v *VirtualService) BoundTo(gateway string) bool { return slices.Contains(v.Gateways, gateway) }

// DestinationRule is a DestinationRule with its host resolved to an FQDN
// (or a wildcard) against its namespace.
type DestinationRule struct {
	Name      string
	Namespace string
	Host      string
	Spec      *networking.DestinationRule
	// ExportTo is spec.exportTo resolved; only the rule's namespace for a
	// rule with a workloadSelector.
	ExportTo Visibility
}

// Subset returns the subset called name, or nil.
func (d *DestinationRule) Subset(name string) *networking.Subset {
	if d == nil {
		return nil
	}
	for _, s := range d.Spec.GetSubsets() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

// Gateway is one Gateway resource.
type Gateway struct {
	Name      string
	Namespace string
	Spec      *networking.Gateway
}

// Ref is the gateway's "namespace/name", as VirtualService.gateways refer to it.
func (g *Gateway) Ref() string { return g.Namespace + "/" + g.Name }

// PushContext is the immutable input of translation: one config snapshot
// and the registry derived from it, indexed. It is built once per config
// change and then only read: safe for concurrent use, no method blocks
// (ForNamespace builds a view once per namespace under a short lock).
// Every slice it returns is shared and must not be modified.
//
// NewPushContext gives the mesh-wide context, which ignores exportTo;
// ForNamespace gives the view of a proxy's namespace, which applies it.
type PushContext struct {
	Config *config.Snapshot

	// namespace is the namespace of a view; scoped is false for the
	// mesh-wide context, which base is nil for.
	namespace string
	scoped    bool
	base      *PushContext

	services       []*registry.Service
	servicesByHost map[string]*registry.Service
	workloads      []*registry.Workload

	// allServices are every service of every ServiceEntry, sorted by host
	// then namespace; inbound are the services ServicesForProxy and
	// InstancesForProxy look at (one per host, exportTo ignored, as
	// Istio's inbound does).
	allServices []*registry.Service
	inbound     []*registry.Service
	// exportTo is the visibility of each service source that has one, by
	// the source's key: a ServiceEntry's spec.exportTo, a Kubernetes
	// Service's networking.istio.io/exportTo annotation.
	exportTo map[config.Key]Visibility

	// destinationRules are, in the mesh-wide context, the
	// DestinationRules as written (nil in views); mergedDRs are them
	// merged per namespace and host (mergeDestinationRules), which every
	// lookup reads, in a view only those it sees. drByHost is the first merged rule of
	// each host.
	destinationRules []*DestinationRule
	mergedDRs        []*DestinationRule
	drByHost         map[string]*DestinationRule
	// drsByNsHost are the mesh-wide context's mergedDRs by namespace and
	// host, and selectorDRs those with a workloadSelector by namespace,
	// both in mergedDRs order; views read their base's.
	drsByNsHost map[nsHost][]*DestinationRule
	selectorDRs map[string][]*DestinationRule

	virtualServices []*VirtualService
	vsByGateway     map[string][]*VirtualService
	delegates       map[config.Key]*VirtualService

	gateways []*Gateway

	// authz indexes the AuthorizationPolicies by namespace (the mesh-wide
	// context's; views read their base's).
	authz authzIndex

	// requestAuthns are every RequestAuthentication; read from the
	// mesh-wide context by views.
	requestAuthns []*RequestAuthentication

	// peerAuthns are every PeerAuthentication; read from the mesh-wide
	// context by views.
	peerAuthns []*peerAuthn

	// rateLimitPolicies are every RateLimitPolicy, normalized once per
	// push; read from the mesh-wide context by views.
	rateLimitPolicies []*RateLimitPolicy

	// sidecar is the Sidecar a ForProxy view applies; nil elsewhere.
	sidecar *Sidecar
	// egressPorts and egressOther are, in a ForProxy view whose Sidecar
	// has egress listeners with a port, the views of those listeners by
	// port and of the others (ForEgressPort); nil otherwise.
	egressPorts map[uint32]*PushContext
	egressOther *PushContext
	// egressPipes are the views of the Sidecar's unix socket egress
	// listeners by path (ForEgressPipe).
	egressPipes map[string]*PushContext

	// selectedDRs are, in a ForProxy view, the DestinationRules of the
	// proxy's namespace whose workloadSelector selects the proxy; nil
	// elsewhere (no rule with a workloadSelector applies).
	selectedDRs []*DestinationRule

	// viewsMu guards views, the namespace views of the mesh-wide context,
	// and sidecarViews, its ForProxy views (nil until the first).
	viewsMu      sync.Mutex
	views        map[string]*PushContext
	sidecarViews map[sidecarViewKey]*PushContext
}

// NewPushContext indexes snap. snap must already be validated; resources
// whose spec is not of their kind's type are ignored. A nil snap gives an
// empty push context.
func NewPushContext(snap *config.Snapshot) *PushContext {
	pc := &PushContext{
		Config:         snap,
		servicesByHost: map[string]*registry.Service{},
		exportTo:       map[config.Key]Visibility{},
		drByHost:       map[string]*DestinationRule{},
		vsByGateway:    map[string][]*VirtualService{},
		delegates:      map[config.Key]*VirtualService{},
		views:          map[string]*PushContext{},
	}
	pc.workloads = registry.Workloads(snap)
	for _, r := range snap.List(config.KindServiceEntry) {
		if spec, ok := r.Spec.(*networking.ServiceEntry); ok {
			pc.exportTo[r.Key()] = NewVisibility(spec.GetExportTo(), r.Namespace)
		}
	}
	for _, r := range snap.List(config.KindService) {
		if e := registry.KubeExportTo(r.Annotations); e != nil {
			pc.exportTo[r.Key()] = NewVisibility(e, r.Namespace)
		}
	}
	// Services come sorted by host then namespace: the first of a host wins
	// (Istio would pick the oldest; we have no creation time).
	pc.allServices = registry.Services(snap)
	for _, s := range pc.allServices {
		if _, dup := pc.servicesByHost[s.Hostname]; dup {
			continue
		}
		pc.servicesByHost[s.Hostname] = s
		pc.services = append(pc.services, s)
	}
	pc.inbound = pc.services

	for _, r := range snap.List(config.KindDestinationRule) {
		spec, ok := r.Spec.(*networking.DestinationRule)
		if !ok || spec.GetHost() == "" {
			continue
		}
		dr := &DestinationRule{
			Name: r.Name, Namespace: r.Namespace, Host: ResolveShortName(spec.GetHost(), r.Namespace), Spec: spec,
			ExportTo: NewVisibility(spec.GetExportTo(), r.Namespace),
		}
		if spec.GetWorkloadSelector() != nil {
			// Istio's SetDestinationRules never exports a rule with a
			// workloadSelector, whatever its exportTo.
			dr.ExportTo = NewVisibility([]string{"."}, r.Namespace)
		}
		pc.destinationRules = append(pc.destinationRules, dr)
	}
	pc.mergedDRs = mergeDestinationRules(pc.destinationRules)
	pc.drsByNsHost = map[nsHost][]*DestinationRule{}
	pc.selectorDRs = map[string][]*DestinationRule{}
	for _, dr := range pc.mergedDRs {
		if _, dup := pc.drByHost[dr.Host]; !dup {
			pc.drByHost[dr.Host] = dr
		}
		k := nsHost{dr.Namespace, dr.Host}
		pc.drsByNsHost[k] = append(pc.drsByNsHost[k], dr)
		if dr.Spec.GetWorkloadSelector() != nil {
			pc.selectorDRs[dr.Namespace] = append(pc.selectorDRs[dr.Namespace], dr)
		}
	}

	for _, r := range snap.List(config.KindVirtualService) {
		spec, ok := r.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		vs := &VirtualService{Name: r.Name, Namespace: r.Namespace, Spec: spec, ExportTo: NewVisibility(spec.GetExportTo(), r.Namespace)}
		for _, h := range spec.GetHosts() {
			vs.Hosts = append(vs.Hosts, ResolveShortName(h, r.Namespace))
		}
		if vs.IsDelegate() {
			pc.delegates[vs.Key()] = vs
			continue
		}
		for _, g := range spec.GetGateways() {
			ref := ResolveGatewayName(g, r.Namespace)
			if !slices.Contains(vs.Gateways, ref) {
				vs.Gateways = append(vs.Gateways, ref)
			}
		}
		if len(vs.Gateways) == 0 {
			vs.Gateways = []string{MeshGateway}
		}
		pc.virtualServices = append(pc.virtualServices, vs)
		for _, g := range vs.Gateways {
			pc.vsByGateway[g] = append(pc.vsByGateway[g], vs)
		}
	}

	find := func(ns, name string) *VirtualService {
		return pc.delegates[config.Key{Kind: config.KindVirtualService, Namespace: ns, Name: name}]
	}
	for _, vs := range pc.virtualServices {
		vs.HTTP = mergeDelegates(vs, find)
	}

	for _, r := range snap.List(config.KindGateway) {
		spec, ok := r.Spec.(*networking.Gateway)
		if !ok {
			continue
		}
		pc.gateways = append(pc.gateways, &Gateway{Name: r.Name, Namespace: r.Namespace, Spec: spec})
	}
	pc.authz = newAuthzIndex(snap)
	pc.requestAuthns = requestAuthentications(snap)
	pc.peerAuthns = peerAuthentications(snap)
	pc.rateLimitPolicies = RateLimitPolicies(snap)
	return pc
}

// Services returns every service, one per hostname, sorted by hostname.
func (pc *PushContext) Services() []*registry.Service { return pc.services }

// ServiceForHost returns the service of FQDN host, or nil.
func (pc *PushContext) ServiceForHost(host string) *registry.Service {
	return pc.servicesByHost[host]
}

// Workloads returns every WorkloadEntry, sorted by namespace and name.
func (pc *PushContext) Workloads() []*registry.Workload { return pc.workloads }

// DestinationRules returns, for the mesh-wide context, every
// DestinationRule as written (not merged), sorted by namespace and name;
// for a view, the rules its lookups choose among: those merged per
// namespace and host (mergeDestinationRules) that the view sees, in the
// same order (a merged rule keeps the name of the first it merges).
func (pc *PushContext) DestinationRules() []*DestinationRule {
	if pc.scoped {
		return pc.mergedDRs
	}
	return pc.destinationRules
}

// DestinationRule returns the DestinationRule that applies to outbound
// traffic to FQDN host, as Istio's PushContext.destinationRule followed by
// SidecarScope.DestinationRule(outbound). First a namespace and a host are
// chosen among the rules visible to pc, with or without workloadSelector:
// in the mesh-wide context, the rule for exactly host, else the one with
// the most specific wildcard host matching it ("*.default.svc.cluster.local"
// before "*"), the first in namespace/name order among equals; in a
// namespace view, the most specific among the rules exported to the
// view's namespace, searched in that namespace, else in the namespace of
// host's service, else in RootNamespace (a rule in any other namespace
// never applies). Then, among the rules of that namespace and host, a
// ForProxy view takes the first whose workloadSelector selects its proxy
// (only the proxy's own namespace's rules can), else the last rule without
// workloadSelector; nil when there is none, even if another namespace or
// a wider host has one (as Istio). Rules are those merged per namespace
// and host (mergeDestinationRules): the result may be a merged copy.
func (pc *PushContext) DestinationRule(host string) *DestinationRule {
	return pc.destinationRule(host, true)
}

// InboundDestinationRule returns the DestinationRule whose traffic policy
// Istio's buildInboundCluster reads for the inbound cluster of a workload
// of FQDN host's service (SidecarScope.DestinationRule for the inbound
// direction): nil unless that service is visible to pc (in a Sidecar's
// view, its egress imports it: Istio keeps the rules of the scope's
// services only); else chosen as DestinationRule does, except that a
// rule with a workloadSelector never applies (Istio honours selectors
// outbound only). Nil when none applies.
func (pc *PushContext) InboundDestinationRule(host string) *DestinationRule {
	if pc.ServiceForHost(host) == nil {
		return nil
	}
	return pc.destinationRule(host, false)
}

func (pc *PushContext) destinationRule(host string, outbound bool) *DestinationRule {
	if !pc.scoped {
		dr, ok := pc.drByHost[host]
		if !ok {
			dr = mostSpecificDestinationRule(pc.mergedDRs, host, func(*DestinationRule) bool { return true })
		}
		if dr == nil {
			return nil
		}
		return pc.selectDestinationRule(dr.Namespace, dr.Host, outbound)
	}
	namespaces := []string{pc.namespace}
	if svc := pc.ServiceForHost(host); svc != nil && svc.Namespace != pc.namespace {
		namespaces = append(namespaces, svc.Namespace)
	}
	if !slices.Contains(namespaces, RootNamespace) {
		namespaces = append(namespaces, RootNamespace)
	}
	for _, ns := range namespaces {
		if dr := mostSpecificDestinationRule(pc.mergedDRs, host, func(dr *DestinationRule) bool { return dr.Namespace == ns }); dr != nil {
			return pc.selectDestinationRule(ns, dr.Host, outbound)
		}
	}
	return nil
}

// selectDestinationRule picks among pc's merged rules of namespace ns for
// exactly host (a wildcard for a wildcard) as Istio's
// SidecarScope.DestinationRule: outbound, the first that pc.selectedDRs
// holds; else the last without workloadSelector; else nil.
func (pc *PushContext) selectDestinationRule(ns, host string, outbound bool) *DestinationRule {
	var catchAll *DestinationRule
	for _, dr := range pc.mesh().drsByNsHost[nsHost{ns, host}] {
		// A view's mergedDRs are the mesh-wide ones exported to its
		// namespace, and in a Sidecar's view those whose host an imported
		// service matches: the same for every rule of one host, and ns and
		// host come from one of the view's rules.
		if pc.scoped && !dr.ExportTo.VisibleTo(pc.namespace) {
			continue
		}
		if dr.Spec.GetWorkloadSelector() == nil {
			catchAll = dr
			continue
		}
		if outbound && slices.Contains(pc.selectedDRs, dr) {
			return dr
		}
	}
	return catchAll
}

// selectedDestinationRules lists the merged DestinationRules of p's
// namespace whose workloadSelector matchLabels p's labels contain (an
// empty one selects every proxy of the namespace), in namespace/name
// order.
func (pc *PushContext) selectedDestinationRules(p *Proxy) []*DestinationRule {
	var out []*DestinationRule
	for _, dr := range pc.mesh().selectorDRs[p.Namespace] {
		if registry.LabelsContain(p.Labels, dr.Spec.GetWorkloadSelector().GetMatchLabels()) {
			out = append(out, dr)
		}
	}
	return out
}

// mergeDestinationRules merges drs (in namespace/name order, Istio's
// creation order) per namespace and resolved host as Istio's
// SetDestinationRules and mergeDestinationRule (with
// ENABLE_ENHANCED_DESTINATIONRULE_MERGE, its default). A rule is merged
// into each earlier entry of its namespace and host whose exportTo
// (exportToSet) equals its own or is a non-empty subset of its own, unless
// both have workloadSelectors with different matchLabels: the entry, a copy, gains the rule's subsets whose names it
// lacks, and its trafficPolicy when it has none; its name, exportTo and
// workloadSelector stay. The rule becomes an entry of its own unless the
// last entry it was checked against had the same selector (or none, like
// it) and was merged into. drs are not modified.
func mergeDestinationRules(drs []*DestinationRule) []*DestinationRule {
	var out []*DestinationRule
	entries := map[nsHost][]int{} // indexes into out
	for _, dr := range drs {
		k := nsHost{dr.Namespace, dr.Host}
		set := exportToSet(dr)
		rule := dr.Spec
		appendSeparately := true
		for _, i := range entries[k] {
			m := out[i]
			mset := exportToSet(m)
			existing := m.Spec
			bothWithout := rule.GetWorkloadSelector() == nil && existing.GetWorkloadSelector() == nil
			bothWith := rule.GetWorkloadSelector() != nil && existing.GetWorkloadSelector() != nil
			selectorsMatch := maps.Equal(rule.GetWorkloadSelector().GetMatchLabels(), existing.GetWorkloadSelector().GetMatchLabels())
			// Istio merges only into an entry exported as the rule is, or
			// to a non-empty subset of where the rule is.
			if !slices.Equal(set, mset) && (len(mset) == 0 || !isSuperset(set, mset)) {
				appendSeparately = true
				continue
			}
			if bothWith && !selectorsMatch {
				appendSeparately = true
				continue
			}
			// A rule with a selector merged into one without (or the
			// reverse) still stands on its own for the proxies it selects.
			appendSeparately = !(bothWithout || bothWith)
			out[i] = mergeDestinationRule(m, rule)
		}
		if appendSeparately {
			entries[k] = append(entries[k], len(out))
			out = append(out, dr)
		}
	}
	return out
}

// mesh returns the mesh-wide context of pc: pc itself or its base.
func (pc *PushContext) mesh() *PushContext {
	if pc.base != nil {
		return pc.base
	}
	return pc
}

// nsHost keys DestinationRules by namespace and resolved host.
type nsHost struct{ ns, host string }

// mergeDestinationRule returns a copy of m with rule's subsets whose names
// m lacks appended, and rule's trafficPolicy when m has none.
func mergeDestinationRule(m *DestinationRule, rule *networking.DestinationRule) *DestinationRule {
	merged := *m
	merged.Spec = proto.Clone(m.Spec).(*networking.DestinationRule)
	for _, s := range rule.GetSubsets() {
		if merged.Subset(s.GetName()) == nil {
			merged.Spec.Subsets = append(merged.Spec.Subsets, s)
		}
	}
	if merged.Spec.TrafficPolicy == nil && rule.GetTrafficPolicy() != nil {
		merged.Spec.TrafficPolicy = rule.GetTrafficPolicy()
	}
	return &merged
}

// exportToSet is dr's exportTo as Istio's SetDestinationRules compares
// it, sorted and without duplicates: the values as written ("." and the
// namespace's name differ; none is empty), ["."] for a rule with a
// workloadSelector.
func exportToSet(dr *DestinationRule) []string {
	if dr.Spec.GetWorkloadSelector() != nil {
		return []string{"."}
	}
	set := slices.Clone(dr.Spec.GetExportTo())
	slices.Sort(set)
	return slices.Compact(set)
}

// isSuperset reports whether sorted set a holds every element of b.
func isSuperset(a, b []string) bool {
	for _, e := range b {
		if _, ok := slices.BinarySearch(a, e); !ok {
			return false
		}
	}
	return true
}

// mostSpecificDestinationRule returns, among the rules of drs that keep
// accepts, the one for exactly host, else the one with the longest
// wildcard host matching it; the first in drs order among equals.
func mostSpecificDestinationRule(drs []*DestinationRule, host string, keep func(*DestinationRule) bool) *DestinationRule {
	var best *DestinationRule
	bestLen := -1
	for _, dr := range drs {
		if !keep(dr) || !HostMatches(dr.Host, host) {
			continue
		}
		l := len(dr.Host)
		if dr.Host == host {
			l = 1 << 30 // exact beats any wildcard
		} else if !strings.HasPrefix(dr.Host, "*") {
			continue
		}
		if l > bestLen {
			best, bestLen = dr, l
		}
	}
	return best
}

// VirtualServices returns every VirtualService but the delegates (those
// without hosts), sorted by namespace and name; in a namespace view, only
// those exported to it.
func (pc *PushContext) VirtualServices() []*VirtualService { return pc.virtualServices }

// VirtualServicesForGateway returns the VirtualServices bound to gateway
// ("namespace/name" or MeshGateway), sorted by namespace and name; this
// order is the order their routes are tried in.
func (pc *PushContext) VirtualServicesForGateway(gateway string) []*VirtualService {
	return pc.vsByGateway[gateway]
}

// VirtualServiceForHost returns the VirtualService bound to gateway that
// routes FQDN host: one naming host exactly, else the one with the most
// specific wildcard host matching it; ties go to the first in
// namespace/name order. Istio uses one VirtualService per host for
// sidecars. Nil when none does.
func (pc *PushContext) VirtualServiceForHost(gateway, host string) *VirtualService {
	var best *VirtualService
	bestLen := -1
	for _, vs := range pc.vsByGateway[gateway] {
		for _, h := range vs.Hosts {
			if !HostMatches(h, host) {
				continue
			}
			l := len(h)
			if h == host {
				l = 1 << 30 // exact beats any wildcard
			}
			if l > bestLen {
				best, bestLen = vs, l
			}
		}
	}
	return best
}

// Delegate returns the delegate VirtualService (one without hosts) called
// name in namespace ns, or nil. Translation needs none: roots come with
// their delegates merged into VirtualService.HTTP.
func (pc *PushContext) Delegate(ns, name string) *VirtualService {
	return pc.delegates[config.Key{Kind: config.KindVirtualService, Namespace: ns, Name: name}]
}

// Gateways returns every Gateway, sorted by namespace and name.
func (pc *PushContext) Gateways() []*Gateway { return pc.gateways }

// GatewaysForProxy returns the Gateways whose selector the proxy's labels
// contain, in any namespace (Istio's default, PILOT_SCOPE_GATEWAY_TO_NAMESPACE
// off), sorted by namespace and name. An empty selector selects every proxy.
func (pc *PushContext) GatewaysForProxy(p *Proxy) []*Gateway {
	var out []*Gateway
	for _, g := range pc.gateways {
		if registry.LabelsContain(p.Labels, g.Spec.GetSelector()) {
			out = append(out, g)
		}
	}
	return out
}

// ServicesForProxy returns the services with an instance at the proxy's IP
// (the services that select its workload), sorted by hostname, whatever
// their exportTo.
func (pc *PushContext) ServicesForProxy(p *Proxy) []*registry.Service {
	var out []*registry.Service
	for _, s := range pc.inbound {
		if slices.ContainsFunc(s.Instances, func(i *registry.Instance) bool { return i.Address == p.IP }) {
			out = append(out, s)
		}
	}
	return out
}

// InstancesForProxy returns the instances at the proxy's IP, sorted by
// service hostname and service port.
func (pc *PushContext) InstancesForProxy(p *Proxy) []*ServiceInstance {
	var out []*ServiceInstance
	for _, s := range pc.inbound {
		for _, i := range s.Instances {
			if i.Address == p.IP {
				out = append(out, &ServiceInstance{Service: s, Instance: i})
			}
		}
	}
	return out
}

// ServiceInstance is an instance with the service it belongs to.
type ServiceInstance struct {
	Service  *registry.Service
	Instance *registry.Instance
}

// WorkloadForProxy returns the WorkloadEntry at the proxy's IP, or nil.
// When several share the IP it prefers the one with the proxy's namespace
// and name, then the proxy's namespace, then namespace/name order.
func (pc *PushContext) WorkloadForProxy(p *Proxy) *registry.Workload {
	var best *registry.Workload
	bestScore := -1
	for _, w := range pc.workloads {
		if w.Address != p.IP {
			continue
		}
		score := 0
		if w.Namespace == p.Namespace {
			score++
			if w.Name == p.Name {
				score++
			}
		}
		if score > bestScore {
			best, bestScore = w, score
		}
	}
	return best
}

// ResolveShortName makes host an FQDN as Istio's ResolveShortnameToFQDN
// does: a name without dots is a service of namespace ns
// ("reviews" -> "reviews.default.svc.cluster.local"); "*", wildcards and
// names with dots are kept.
func ResolveShortName(host, ns string) string {
	if host == "" || host == "*" || strings.Contains(host, ".") || strings.HasPrefix(host, "*") {
		return host
	}
	return host + "." + ns + ".svc." + DomainSuffix
}

// ResolveGatewayName turns a VirtualService.gateways entry into
// "namespace/name": "mesh" stays, "name" gets ns, "ns2/name" stays, and
// the legacy "name.ns2.svc.cluster.local" becomes "ns2/name".
func ResolveGatewayName(gw, ns string) string {
	switch {
	case gw == MeshGateway || strings.Contains(gw, "/"):
		return gw
	case strings.Contains(gw, "."):
		name, rest, _ := strings.Cut(gw, ".")
		gns, _, _ := strings.Cut(rest, ".")
		return gns + "/" + name
	}
	return ns + "/" + gw
}

// HostMatches reports whether pattern (a host, "*.suffix" or "*") covers
// the concrete or wildcard host. "*.example.com" covers "a.example.com"
// and "*.b.example.com" but not "example.com".
func HostMatches(pattern, host string) bool {
	switch {
	case pattern == "*" || pattern == host:
		return true
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(host, pattern[1:]) && len(host) > len(pattern)-1
	}
	return false
}

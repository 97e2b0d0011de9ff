package translate

import (
	"cmp"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Istio's label that says a workload has a sidecar taking mTLS; in explicit
// mode it means "reach it through its sidecar's inbound port".
const (
	tlsModeLabel = "security.istio.io/tlsMode"
	tlsModeIstio = "istio"
)

// outboundEndpoints returns a ClusterLoadAssignment per outbound EDS
// cluster (resolution STATIC; DNS clusters carry their load_assignment,
// NONE clusters have none) as proxy p sees it, with the endpoints
// instanceEndpoints gives grouped in one LocalityLbEndpoints per locality
// (sorted by "region/zone/subzone"; load_balancing_weight the sum of its
// endpoints' weights, as Istio's), then Istio's locality load balancing
// applied for p (applyLocalityLB). Every endpoint is HEALTHY. A cluster
// with no instances gets an assignment with no endpoints.
//
// Only IP addresses go in: an instance whose address is a host name (a
// WorkloadEntry of a STATIC ServiceEntry) is left out, since the proxy
// NACKs an endpoint update with any non-IP socket address, which would
// freeze endpoints for every cluster. A unix:// WorkloadEntry is left out
// too: the proxy dials pipe endpoints (a Sidecar ingress unix://
// defaultEndpoint's), but EDS does not send them yet (issue 3).
func outboundEndpoints(pc *model.PushContext, p *model.Proxy) []*endpointv3.ClusterLoadAssignment {
	return loadAssignments(pc, p, false)
}

// ProxylessEndpoints returns the ClusterLoadAssignments of outboundEndpoints
// for a proxyless gRPC client p (Istio serves such a client the same EDS as
// a sidecar, locality load balancing included), with two differences: no
// sidecar sits between client and app, so every endpoint is the app's own
// ADDRESS:targetPort with no tlsMode (nor telemetry) metadata; each
// locality has a Locality, empty when unknown; and each carries a
// load_balancing_weight, since grpc-go's xDS balancer drops a locality of
// weight 0 or none. That weight is the sum of its endpoints' weights, as
// Istio's EndpointBuilder sets it, unless distribute set the cluster's
// weights, where a locality left without one gets no traffic. Localities
// with no endpoint (those distribute dropped) are left out. pc is the
// mesh-wide push context, as Generate's.
func ProxylessEndpoints(pc *model.PushContext, p *model.Proxy) []*endpointv3.ClusterLoadAssignment {
	out := loadAssignments(pc.ForProxy(p), p, true)
	for _, cla := range out {
		weighLocalities(cla)
	}
	return out
}

// weighLocalities gives each locality of cla a Locality and a weight as
// ProxylessEndpoints says, and drops those with no endpoint.
func weighLocalities(cla *endpointv3.ClusterLoadAssignment) {
	for _, l := range cla.GetEndpoints() {
		if l.Locality == nil {
			l.Locality = &corev3.Locality{} // grpc-go refuses a locality without one
		}
	}
	weighted := slices.ContainsFunc(cla.GetEndpoints(), func(l *endpointv3.LocalityLbEndpoints) bool { return l.GetLoadBalancingWeight() != nil })
	cla.Endpoints = slices.DeleteFunc(cla.Endpoints, func(l *endpointv3.LocalityLbEndpoints) bool {
		return len(l.GetLbEndpoints()) == 0 || weighted && l.GetLoadBalancingWeight().GetValue() == 0
	})
	if weighted {
		return
	}
	for _, l := range cla.Endpoints {
		var sum uint64
		for _, lb := range l.GetLbEndpoints() {
			sum += uint64(max(lb.GetLoadBalancingWeight().GetValue(), 1))
		}
		l.LoadBalancingWeight = wrapperspb.UInt32(uint32(min(sum, math.MaxUint32)))
	}
}

// loadAssignments is outboundEndpoints; direct leaves out the sidecar (see
// ProxylessEndpoints).
func loadAssignments(pc *model.PushContext, p *model.Proxy, direct bool) []*endpointv3.ClusterLoadAssignment {
	var out []*endpointv3.ClusterLoadAssignment
	seen := map[string]bool{}
	for _, oc := range outboundClusterSet(pc) {
		if seen[oc.name] || !isEDS(oc) {
			continue
		}
		seen[oc.name] = true
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: oc.name}
		groups := localityGroups(collectEndpoints(oc, true, direct))
		for _, g := range groups {
			cla.Endpoints = append(cla.Endpoints, g.lle)
		}
		applyLocalityLB(cla, groups, oc.policy, p)
		out = append(out, cla)
	}
	return out
}

// wrappedEndpoint is an endpoint with what locality load balancing reads
// of its instance: its locality and labels.
type wrappedEndpoint struct {
	lb       *endpointv3.LbEndpoint
	locality string
	labels   map[string]string
}

// instanceEndpoints returns the endpoints of outbound cluster oc: an
// instance of its service port is in it when its labels contain the
// subset's; its address is ADDRESS:targetPort, its app's own port, except
// for an explicit-mode workload (its WorkloadEntry is not annotated
// sidecar.istio.io/interceptionMode: REDIRECT) labelled
// security.istio.io/tlsMode=istio on an HTTP port, which is reached at
// ADDRESS:15006, its sidecar's inbound listener. (An explicit-mode sidecar
// cannot learn a TCP connection's original destination, so TCP goes to
// its app directly; a REDIRECT workload's iptables send every inbound
// connection to its sidecar.) Duplicates are
// dropped; the list is sorted by address and port. ipOnly leaves out every
// address that is not an IP (for EDS); otherwise only unix:// sockets are
// left out (for DNS clusters, whose host names the proxy resolves).
func instanceEndpoints(oc outboundCluster, ipOnly bool) []*endpointv3.LbEndpoint {
	var lbs []*endpointv3.LbEndpoint
	for _, w := range collectEndpoints(oc, ipOnly, false) {
		lbs = append(lbs, w.lb)
	}
	return lbs
}

// collectEndpoints is instanceEndpoints with each endpoint's locality and
// labels. direct: the client dials apps themselves (a proxyless gRPC
// client), so no endpoint is a sidecar's.
func collectEndpoints(oc outboundCluster, ipOnly, direct bool) []wrappedEndpoint {
	var out []wrappedEndpoint
	addrs := map[string]bool{}
	for _, in := range oc.service.Instances {
		if in.ServicePort.Number != oc.port.Number || !registry.LabelsContain(in.Labels, oc.subsetLabels) {
			continue
		}
		if ipOnly && !isIP(in.Address) || !ipOnly && strings.HasPrefix(in.Address, registry.UnixAddressPrefix) {
			continue
		}
		port := in.TargetPort
		// sidecar: the endpoint is the workload's sidecar, which takes
		// mTLS (Istio's tlsMode endpoint metadata).
		sidecar := !direct && in.Labels[tlsModeLabel] == tlsModeIstio && in.InterceptionMode == registry.InterceptionRedirect
		if !direct && in.InterceptionMode != registry.InterceptionRedirect && in.Labels[tlsModeLabel] == tlsModeIstio && oc.port.Protocol.IsHTTP() {
			port = xdsapi.PortInbound
			sidecar = true
		}
		key := hostPort(in.Address, port)
		if addrs[key] {
			continue
		}
		addrs[key] = true
		lb := lbEndpoint(in.Address, port, in.Weight)
		if sidecar {
			lb.Metadata = tlsModeMetadata()
		}
		if !direct {
			addWorkloadMetadata(lb, in)
		}
		out = append(out, wrappedEndpoint{lb: lb, locality: in.Locality, labels: in.Labels})
	}
	slices.SortFunc(out, func(a, b wrappedEndpoint) int {
		sa := a.lb.GetEndpoint().GetAddress().GetSocketAddress()
		sb := b.lb.GetEndpoint().GetAddress().GetSocketAddress()
		return cmp.Or(cmp.Compare(sa.GetAddress(), sb.GetAddress()), cmp.Compare(sa.GetPortValue(), sb.GetPortValue()))
	})
	return out
}

// isIP reports whether addr is an IP address without a zone, the only
// endpoint address the proxy accepts.
func isIP(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.Zone() == ""
}

// lbEndpoint is a HEALTHY endpoint; weight 0 means 1.
func lbEndpoint(ip string, port, weight uint32) *endpointv3.LbEndpoint {
	return lbEndpointAt(socketAddress(ip, port), weight)
}

// lbEndpointAt is lbEndpoint at address addr (a socket address or a pipe).
func lbEndpointAt(addr *corev3.Address, weight uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: addr,
		}},
		HealthStatus:        corev3.HealthStatus_HEALTHY,
		LoadBalancingWeight: wrapperspb.UInt32(max(weight, 1)),
	}
}

// localityGroup is one LocalityLbEndpoints of a cluster and the endpoints
// it holds, in the same order as lle.LbEndpoints.
type localityGroup struct {
	lle      *endpointv3.LocalityLbEndpoints
	locality xdsapi.Locality
	eps      []wrappedEndpoint
}

// localityGroups groups ws by locality, sorted by locality string, each
// group at priority 0 and with no load_balancing_weight (set only by
// distribute: the proxy reads locality weights only under
// locality_weighted_lb_config). A locality that does not parse counts as
// none (validation refuses it first).
func localityGroups(ws []wrappedEndpoint) []*localityGroup {
	byName := map[string]*localityGroup{}
	var out []*localityGroup
	for _, w := range ws {
		l, err := xdsapi.ParseLocality(w.locality)
		if err != nil {
			l = xdsapi.Locality{}
		}
		name := l.String()
		g := byName[name]
		if g == nil {
			g = &localityGroup{lle: &endpointv3.LocalityLbEndpoints{Locality: l.Proto()}, locality: l}
			byName[name] = g
			out = append(out, g)
		}
		g.lle.LbEndpoints = append(g.lle.LbEndpoints, w.lb)
		g.eps = append(g.eps, w)
	}
	slices.SortFunc(out, func(a, b *localityGroup) int { return cmp.Compare(a.locality.String(), b.locality.String()) })
	return out
}

// localityLbSetting returns the locality load-balancing setting in effect
// for a cluster with traffic policy tp, as Istio's getLocalityLbSetting:
// the DestinationRule's loadBalancer.localityLbSetting unless its enabled
// is false (then none), else the mesh's, which is Istio's default
// MeshConfig.localityLbSetting {enabled: true}.
func localityLbSetting(tp *networking.TrafficPolicy) *networking.LocalityLoadBalancerSetting {
	if l := tp.GetLoadBalancer().GetLocalityLbSetting(); l != nil {
		if l.GetEnabled() != nil && !l.GetEnabled().GetValue() {
			return nil
		}
		return l
	}
	return &networking.LocalityLoadBalancerSetting{}
}

// applyLocalityLB applies Istio's locality load balancing
// (ApplyLocalityLoadBalancer) for proxy p to cla, whose Endpoints are the
// LocalityLbEndpoints of groups: with distribute, the weights of the first
// rule whose from matches p's locality (applyLocalityWeights); else, when
// tp has outlierDetection (without it Envoy would never fail over),
// priorities: by failoverPriority labels and then failover, or by
// locality alone (applyLocalityFailover).
func applyLocalityLB(cla *endpointv3.ClusterLoadAssignment, groups []*localityGroup, tp *networking.TrafficPolicy, p *model.Proxy) {
	l := localityLbSetting(tp)
	if l == nil || len(cla.GetEndpoints()) == 0 {
		return
	}
	if len(l.GetDistribute()) > 0 {
		applyLocalityWeights(xdsapi.Locality(p.Locality), groups, l.GetDistribute())
		return
	}
	if tp.GetOutlierDetection() == nil {
		return
	}
	if len(l.GetFailoverPriority()) > 0 {
		if !applyFailoverPriorities(cla, groups, p.Labels, xdsapi.Locality(p.Locality), l.GetFailoverPriority()) {
			return
		}
		if len(l.GetFailover()) == 0 {
			return
		}
	}
	applyLocalityFailover(xdsapi.Locality(p.Locality), cla, l.GetFailover())
}

// lbPriority is Istio's LbPriority: 0 when region, zone and subzone all
// match, 1 for region and zone, 2 for region only, 3 otherwise.
func lbPriority(proxy, ep xdsapi.Locality) uint32 {
	switch {
	case proxy.Region != ep.Region:
		return 3
	case proxy.Zone != ep.Zone:
		return 2
	case proxy.SubZone != ep.SubZone:
		return 1
	}
	return 0
}

// applyLocalityFailover sets each LocalityLbEndpoints' priority as Istio's
// applyLocalityFailover: lbPriority from the proxy's locality, where a
// locality of another region is 3 when it is the to of the failover rule
// whose from is the proxy's region, and 4 when such a rule names another
// region. The priority already set (by failoverPriority) counts first:
// the result is old*5+new, then renumbered 0..N-1 without gaps.
func applyLocalityFailover(proxy xdsapi.Locality, cla *endpointv3.ClusterLoadAssignment, failover []*networking.LocalityLoadBalancerSetting_Failover) {
	for _, lle := range cla.GetEndpoints() {
		ep := xdsapi.LocalityFromProto(lle.GetLocality())
		prio := lbPriority(proxy, ep)
		if prio == 3 {
			for _, f := range failover {
				if f.GetFrom() == proxy.Region {
					if ep.Region != f.GetTo() {
						prio = 4
					}
					break
				}
			}
		}
		lle.Priority = lle.GetPriority()*5 + prio
	}
	compactPriorities(cla.GetEndpoints())
}

// compactPriorities renumbers the priorities of es to 0..N-1 in order,
// as Envoy wants them without gaps.
func compactPriorities(es []*endpointv3.LocalityLbEndpoints) {
	var ps []uint32
	for _, e := range es {
		ps = append(ps, e.GetPriority())
	}
	slices.Sort(ps)
	ps = slices.Compact(ps)
	for _, e := range es {
		i, _ := slices.BinarySearch(ps, e.GetPriority())
		e.Priority = uint32(i)
	}
}

// applyFailoverPriorities splits every group by Istio's failoverPriority
// (applyFailoverPriorities): an endpoint's priority is 0 when it matches
// the proxy on every label of failoverPriority, else N-i for the first
// label i (of N) it does not match. A label written "key=value" matches
// endpoints whose key has that value, whatever the proxy's. The proxy's
// and the endpoints' labels include their locality as Istio's
// topology.kubernetes.io/region, topology.kubernetes.io/zone and
// topology.istio.io/subzone labels. cla's endpoints become one
// LocalityLbEndpoints per group and priority, priorities renumbered
// without gaps. It does nothing and returns false when the proxy has no
// labels and no locality, as Istio skips a proxy without labels.
func applyFailoverPriorities(cla *endpointv3.ClusterLoadAssignment, groups []*localityGroup, proxyLabels map[string]string, loc xdsapi.Locality, priorities []string) bool {
	if len(proxyLabels) == 0 && loc == (xdsapi.Locality{}) {
		return false
	}
	pl := withLocalityLabels(proxyLabels, loc)
	var out []*endpointv3.LocalityLbEndpoints
	for _, g := range groups {
		byPrio := map[uint32]*endpointv3.LocalityLbEndpoints{}
		var order []uint32
		for _, w := range g.eps {
			el := withLocalityLabels(w.labels, g.locality)
			prio := uint32(0)
			for i, label := range priorities {
				key, want, override := strings.Cut(label, "=")
				if !override {
					want = pl[key]
				}
				if el[key] != want {
					prio = uint32(len(priorities) - i)
					break
				}
			}
			lle := byPrio[prio]
			if lle == nil {
				lle = &endpointv3.LocalityLbEndpoints{Locality: g.lle.GetLocality(), LoadBalancingWeight: g.lle.GetLoadBalancingWeight(), Priority: prio}
				byPrio[prio] = lle
				order = append(order, prio)
			}
			lle.LbEndpoints = append(lle.LbEndpoints, w.lb)
		}
		slices.Sort(order)
		for _, prio := range order {
			out = append(out, byPrio[prio])
		}
	}
	compactPriorities(out)
	cla.Endpoints = out
	return true
}

// Istio's topology labels, which its endpoints and proxies carry for
// their locality.
const (
	labelRegion  = "topology.kubernetes.io/region"
	labelZone    = "topology.kubernetes.io/zone"
	labelSubZone = "topology.istio.io/subzone"
)

// withLocalityLabels returns labels plus l's topology labels, for the
// parts of l that are set and the labels do not have already.
func withLocalityLabels(labels map[string]string, l xdsapi.Locality) map[string]string {
	out := make(map[string]string, len(labels)+3)
	for _, kv := range [...][2]string{{labelRegion, l.Region}, {labelZone, l.Zone}, {labelSubZone, l.SubZone}} {
		if kv[1] != "" {
			out[kv[0]] = kv[1]
		}
	}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

// localityMatch reports whether locality l matches rule, a
// "region/zone/subzone" of localityLbSetting's distribute, where a part
// "*" matches any value of that part and of the parts after it, and a
// part left off matches only an empty one (Istio's LocalityMatch).
func localityMatch(l xdsapi.Locality, rule string) bool {
	parts := strings.SplitN(rule, "/", 3)
	for i, have := range [...]string{l.Region, l.Zone, l.SubZone} {
		want := ""
		if i < len(parts) {
			want = parts[i]
		}
		if want == "*" {
			return true
		}
		if want != have {
			return false
		}
	}
	return true
}

// applyLocalityWeights sets locality weights as Istio's
// applyLocalityWeights, for the first distribute rule whose from matches
// the proxy's locality (none matches: nothing changes): every locality
// its to matches (each taken by the first to entry, in sorted order of the
// to keys, that matches it) gets load_balancing_weight
// ceil(weight * own / total), own being the sum of its endpoints' weights
// and total that sum over the localities of the entry; a locality no
// entry matches loses its endpoints.
func applyLocalityWeights(proxy xdsapi.Locality, groups []*localityGroup, distribute []*networking.LocalityLoadBalancerSetting_Distribute) {
	for _, d := range distribute {
		if d == nil || !localityMatch(proxy, d.GetFrom()) {
			continue
		}
		matched := make([]bool, len(groups))
		for _, to := range slices.Sorted(maps.Keys(d.GetTo())) {
			weight := d.GetTo()[to]
			var total uint64
			own := make(map[int]uint64)
			for i, g := range groups {
				if matched[i] || !localityMatch(g.locality, to) {
					continue
				}
				matched[i] = true
				var sum uint64
				for _, lb := range g.lle.GetLbEndpoints() {
					sum += uint64(max(lb.GetLoadBalancingWeight().GetValue(), 1))
				}
				own[i] = sum
				total += sum
			}
			for i, o := range own {
				if w := math.Ceil(float64(o) * float64(weight) / float64(total)); w > 0 {
					groups[i].lle.LoadBalancingWeight = wrapperspb.UInt32(uint32(min(w, math.MaxUint32)))
				}
			}
		}
		for i, g := range groups {
			if !matched[i] {
				g.lle.LbEndpoints = nil
			}
		}
		return
	}
}

// addWorkloadMetadata writes Istio's endpoint telemetry metadata
// (filter_metadata.istio.workload) on lb, the endpoint of instance in of
// a WorkloadEntry: a source reporter's destination labels when the
// metadata exchange tells it nothing (plain TCP, a peer without sidecar).
// An inline ServiceEntry endpoint names no workload and gets none.
func addWorkloadMetadata(lb *endpointv3.LbEndpoint, in *registry.Instance) {
	if in.Workload.Name == "" {
		return
	}
	svc, rev := xdsapi.CanonicalService(in.Labels, in.Workload.Name)
	w := xdsapi.EndpointWorkload{Name: in.Workload.Name, Namespace: in.Workload.Namespace,
		CanonicalService: svc, CanonicalRevision: rev, ClusterID: xdsapi.DefaultClusterID}
	if lb.Metadata == nil {
		lb.Metadata = &corev3.Metadata{}
	}
	if lb.Metadata.FilterMetadata == nil {
		lb.Metadata.FilterMetadata = map[string]*structpb.Struct{}
	}
	lb.Metadata.FilterMetadata[xdsapi.EndpointMetadataNamespace] = &structpb.Struct{Fields: map[string]*structpb.Value{
		xdsapi.EndpointMetadataWorkload: structpb.NewStringValue(w.String())}}
}

package model

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// Sidecar is the Sidecar resource that applies to a proxy, with its egress
// hosts resolved for the proxy's namespace.
type Sidecar struct {
	Name      string
	Namespace string
	Spec      *networking.Sidecar
	// Egress are the hosts of all egress listeners (spec.egress[].hosts),
	// "." resolved to the proxy's namespace: what the proxy's clusters
	// serve. Nil when the Sidecar has no egress listener: the proxy then
	// sees all its namespace sees, as with Istio's default "*/*".
	Egress []EgressHost
	// Listeners are the egress listeners one by one, in spec order, as
	// Istio's SidecarScope.EgressListeners; each port's routes and chains
	// see only the hosts of its listener (PushContext.ForEgressPort).
	Listeners []EgressListener
}

// EgressListener is one Sidecar egress listener (Istio's
// IstioEgressListener) with its hosts resolved.
type EgressListener struct {
	// Port is spec.egress[].port.number; 0 for the catch-all listener.
	Port uint32
	// Protocol is spec.egress[].port's protocol (registry.ParseProtocol
	// of its protocol, else its name); "" for the catch-all listener.
	Protocol registry.Protocol
	// Bind is spec.egress[].bind, an IP or unix://PATH; "" for the
	// default.
	Bind string
	// Pipe is the PATH of a unix://PATH bind on a listener whose port
	// number is 0 (Istio's unix domain socket egress listener, always
	// bound: bindToPort whatever the captureMode); "" otherwise. Such a
	// listener is not the catch-all although its Port is 0.
	Pipe string
	// CaptureMode is spec.egress[].captureMode: under REDIRECT, NONE
	// binds the port's listener to its address (Istio's bindToPort);
	// DEFAULT and IPTABLES leave it reached by iptables alone.
	CaptureMode networking.CaptureMode
	Hosts       []EgressHost
}

// GetListeners returns s's egress listeners; nil when s is nil.
func (s *Sidecar) GetListeners() []EgressListener {
	if s == nil {
		return nil
	}
	return s.Listeners
}

// Key returns the Sidecar's key.
func (s *Sidecar) Key() config.Key {
	return config.Key{Kind: config.KindSidecar, Namespace: s.Namespace, Name: s.Name}
}

// GetSpec returns the Sidecar's spec; nil when s is nil.
func (s *Sidecar) GetSpec() *networking.Sidecar {
	if s == nil {
		return nil
	}
	return s.Spec
}

// EgressHost is one "namespace/dnsName" of a Sidecar egress listener.
type EgressHost struct {
	// Namespace is "*" (any), "~" (none: the entry imports nothing) or a
	// namespace name.
	Namespace string
	// Host is "*", "*.suffix" or an FQDN.
	Host string
}

// imports reports whether the entry covers a resource of namespace ns
// whose host is host (an FQDN or a wildcard): the namespaces match and the
// hosts overlap, as Istio's host.Name.Matches.
func (e EgressHost) imports(ns, host string) bool {
	if e.Namespace == "~" || (e.Namespace != "*" && e.Namespace != ns) {
		return false
	}
	return HostMatches(e.Host, host) || HostMatches(host, e.Host)
}

// sidecarViewKey keys a ForProxy view: a Sidecar seen from a proxy
// namespace (a root namespace Sidecar resolves "." per namespace).
type sidecarViewKey struct {
	namespace string
	sidecar   config.Key
	// destinationRules names the selectedDRs of the view, each followed
	// by "/" (names cannot hold one).
	destinationRules string
}

// SidecarForProxy returns the Sidecar that applies to sidecar proxy p, as
// Istio's PushContext.getSidecarScope chooses it: the first Sidecar of p's
// namespace (in name order) whose workloadSelector labels p's labels
// contain; else the one of p's namespace without workloadSelector (or
// with empty labels); else the one of RootNamespace without
// workloadSelector; else nil, and p sees everything its namespace sees.
// A router proxy gets nil: Sidecars apply to sidecars only.
func (pc *PushContext) SidecarForProxy(p *Proxy) *Sidecar {
	if p == nil || p.Type == RouterProxy {
		return nil
	}
	var nsDefault, rootDefault *config.Resource
	for _, r := range pc.Config.List(config.KindSidecar) {
		spec, ok := r.Spec.(*networking.Sidecar)
		if !ok || (r.Namespace != p.Namespace && r.Namespace != RootNamespace) {
			continue
		}
		sel := spec.GetWorkloadSelector().GetLabels()
		switch {
		case len(sel) > 0:
			if r.Namespace == p.Namespace && registry.LabelsContain(p.Labels, sel) {
				return newSidecar(r, spec, p.Namespace)
			}
		case r.Namespace == p.Namespace:
			if nsDefault == nil {
				nsDefault = r
			}
		case rootDefault == nil:
			rootDefault = r
		}
	}
	switch {
	case nsDefault != nil:
		return newSidecar(nsDefault, nsDefault.Spec.(*networking.Sidecar), p.Namespace)
	case rootDefault != nil:
		return newSidecar(rootDefault, rootDefault.Spec.(*networking.Sidecar), p.Namespace)
	}
	return nil
}

// newSidecar resolves spec's egress hosts for a proxy of namespace ns.
func newSidecar(r *config.Resource, spec *networking.Sidecar, ns string) *Sidecar {
	s := &Sidecar{Name: r.Name, Namespace: r.Namespace, Spec: spec}
	for _, eg := range spec.GetEgress() {
		l := EgressListener{Port: eg.GetPort().GetNumber(), Bind: eg.GetBind(), CaptureMode: eg.GetCaptureMode(), Hosts: []EgressHost{}}
		if port := eg.GetPort(); port != nil {
			l.Protocol = registry.ParseProtocol(port.GetProtocol(), port.GetName())
			if path, ok := strings.CutPrefix(eg.GetBind(), registry.UnixAddressPrefix); ok && port.GetNumber() == 0 {
				l.Pipe = path
			}
		}
		for _, h := range eg.GetHosts() {
			hns, host, ok := strings.Cut(h, "/")
			if !ok {
				continue // refused by validation
			}
			if hns == "." {
				hns = ns
			}
			s.Egress = append(s.Egress, EgressHost{Namespace: hns, Host: host})
			l.Hosts = append(l.Hosts, EgressHost{Namespace: hns, Host: host})
		}
		s.Listeners = append(s.Listeners, l)
	}
	return s
}

// catchAll reports whether l is the port-less (catch-all) egress
// listener: no port, and not a unix socket listener (port 0).
func (l EgressListener) catchAll() bool { return l.Port == 0 && l.Pipe == "" }

// PipeListeners returns s's unix domain socket egress listeners (Pipe
// set), in spec order; nil when s is nil.
func (s *Sidecar) PipeListeners() []EgressListener {
	var out []EgressListener
	for _, l := range s.GetListeners() {
		if l.Pipe != "" {
			out = append(out, l)
		}
	}
	return out
}

// EgressListenerForPort returns the egress listener of s whose port is
// port, else nil.
func (s *Sidecar) EgressListenerForPort(port uint32) *EgressListener {
	if s == nil {
		return nil
	}
	for i := range s.Listeners {
		if s.Listeners[i].Port == port && port != 0 {
			return &s.Listeners[i]
		}
	}
	return nil
}

// EgressListenerBuilding returns the egress listener of s that builds
// outbound port port, as Istio's buildSidecarOutboundListeners: the one
// with that port, else the port-less (catch-all) one, whose bind and
// captureMode then apply to the port; nil when neither exists.
func (s *Sidecar) EgressListenerBuilding(port uint32) *EgressListener {
	if l := s.EgressListenerForPort(port); l != nil {
		return l
	}
	if s == nil {
		return nil
	}
	for i := range s.Listeners {
		if s.Listeners[i].catchAll() {
			return &s.Listeners[i]
		}
	}
	return nil
}

// hasPortListener reports whether an egress listener of s has a port (a
// unix socket listener's port 0 included).
func (s *Sidecar) hasPortListener() bool {
	for _, l := range s.Listeners {
		if !l.catchAll() {
			return true
		}
	}
	return false
}

// ForEgressPort returns the view of a ForProxy view pc that outbound port
// port has, as Istio builds each egress listener's routes and chains from
// its own services: when the Sidecar has egress listeners with a port, the
// view of the listener with this port, else of the port-less (catch-all)
// listener, else an empty view (no listener serves the port). Otherwise,
// and for views that are not ForProxy views, pc itself. Clusters and
// endpoints stay pc's: the union over all listeners.
func (pc *PushContext) ForEgressPort(port uint32) *PushContext {
	if pc.egressOther == nil {
		return pc
	}
	if v, ok := pc.egressPorts[port]; ok {
		return v
	}
	return pc.egressOther
}

// ForEgressPipe returns the view of a ForProxy view pc that the unix
// socket egress listener of path path has (EgressListener.Pipe): the
// services and VirtualServices of that listener's hosts, every port of
// them, as Istio's BuildSidecarOutboundVirtualHosts takes listenerPort 0
// for a UDS listener. pc itself when it has no view of that path (not a
// ForProxy view of a Sidecar with that listener).
func (pc *PushContext) ForEgressPipe(path string) *PushContext {
	if v, ok := pc.egressPipes[path]; ok {
		return v
	}
	return pc
}

// EgressServes reports whether port port of svc, a service of pc, is
// served by the egress listener of that port (ForEgressPort).
func (pc *PushContext) EgressServes(svc *registry.Service, port uint32) bool {
	v := pc.ForEgressPort(port)
	if v == pc {
		return true
	}
	s := v.ServiceForHost(svc.Hostname)
	return s != nil && s.Namespace == svc.Namespace
}

// EgressClusterPort reports whether port port of svc, a service of pc,
// keeps its outbound clusters, as Istio's SidecarScope services hold only
// the ports their egress listeners import: the port-less listener imports
// every port of its services, a listener with a port only that port
// (needsPortMatch, serviceMatchingListenerPort), so a service imported by
// a port listener alone has no cluster for its other ports; an
// HTTP_PROXY listener imports every port of its services. True for
// views without per-listener views (ForEgressPort).
func (pc *PushContext) EgressClusterPort(svc *registry.Service, port uint32) bool {
	if pc.egressOther == nil {
		return true
	}
	imports := func(v *PushContext) bool {
		s := v.ServiceForHost(svc.Hostname)
		return s != nil && s.Namespace == svc.Namespace
	}
	if v, ok := pc.egressPorts[port]; ok && imports(v) {
		return true
	}
	for _, v := range pc.egressPipes {
		// A unix socket listener imports every port of its services
		// (port 0: Istio's needsPortMatch is false).
		if imports(v) {
			return true
		}
	}
	if pc.sidecar != nil {
		for _, l := range pc.sidecar.Listeners {
			// An HTTP_PROXY listener imports every port of its
			// services: Istio's needsPortMatch leaves them whole.
			if v := pc.egressPorts[l.Port]; l.Protocol == registry.HTTPProxy && v != nil && imports(v) {
				return true
			}
		}
	}
	return imports(pc.egressOther)
}

// addEgressViews gives sidecar view v one view per egress listener of
// sc when one of them has a port (ForEgressPort).
func (nv *PushContext) addEgressViews(v *PushContext, sc *Sidecar) {
	if !sc.hasPortListener() {
		return
	}
	v.egressPorts = map[uint32]*PushContext{}
	sub := func(hosts []EgressHost) *PushContext {
		lv := nv.newSidecarView(sc, hosts)
		lv.selectedDRs = v.selectedDRs
		return lv
	}
	for _, l := range sc.Listeners {
		switch {
		case l.Pipe != "":
			if v.egressPipes == nil {
				v.egressPipes = map[string]*PushContext{}
			}
			v.egressPipes[l.Pipe] = sub(l.Hosts)
		case l.Port == 0:
			v.egressOther = sub(l.Hosts)
		default:
			v.egressPorts[l.Port] = sub(l.Hosts)
		}
	}
	if v.egressOther == nil {
		v.egressOther = sub([]EgressHost{})
	}
}

// Sidecar returns the Sidecar a ForProxy view applies, or nil (no Sidecar
// applies, or pc is not a ForProxy view).
func (pc *PushContext) Sidecar() *Sidecar { return pc.sidecar }

// ForProxy returns the view of pc that proxy p has: ForNamespace of p's
// namespace, further restricted by the Sidecar that applies to p
// (SidecarForProxy), as Istio's SidecarScope. With a Sidecar, the view
// holds only
//   - the services an egress host imports (the service's namespace and
//     hostname match it; among services of one hostname the one in p's
//     namespace wins), plus the destinations of the imported
//     VirtualServices, as Istio infers them;
//   - the VirtualServices an egress host imports (its namespace matches
//     and one of its hosts overlaps the egress host);
//   - the DestinationRules whose host overlaps an imported service's.
//
// A Sidecar without egress listener restricts nothing, but the view still
// carries it (Sidecar). The view also knows the DestinationRules of p's
// namespace whose workloadSelector selects p (DestinationRule prefers
// them outbound, and ignores the others with a workloadSelector).
// Without either, ForProxy is ForNamespace(p.Namespace). Views are built
// once per (namespace, Sidecar, selected DestinationRules) and cached in
// the mesh-wide context; they are immutable and safe for concurrent use.
func (pc *PushContext) ForProxy(p *Proxy) *PushContext {
	base := pc
	if pc.scoped {
		base = pc.base
	}
	nsView := base.ForNamespace(p.Namespace)
	sc := base.SidecarForProxy(p)
	selected := base.selectedDestinationRules(p)
	if sc == nil && len(selected) == 0 {
		return nsView
	}
	key := sidecarViewKey{namespace: p.Namespace}
	if sc != nil {
		key.sidecar = sc.Key()
	}
	for _, dr := range selected {
		key.destinationRules += dr.Name + "/"
	}
	base.viewsMu.Lock()
	defer base.viewsMu.Unlock()
	if v, ok := base.sidecarViews[key]; ok {
		return v
	}
	var v *PushContext
	if sc != nil {
		v = nsView.newSidecarView(sc, sc.Egress)
	} else {
		v = base.newView(p.Namespace)
	}
	v.selectedDRs = selected
	if sc != nil {
		nsView.addEgressViews(v, sc)
	}
	if base.sidecarViews == nil {
		base.sidecarViews = map[sidecarViewKey]*PushContext{}
	}
	base.sidecarViews[key] = v
	return v
}

// newSidecarView restricts namespace view nv to what hosts import (sc's
// Egress, or one of its listeners' hosts); nil hosts restrict nothing. The
// view carries sc.
func (nv *PushContext) newSidecarView(sc *Sidecar, hosts []EgressHost) *PushContext {
	v := &PushContext{
		Config:         nv.Config,
		namespace:      nv.namespace,
		scoped:         true,
		base:           nv.base,
		sidecar:        sc,
		servicesByHost: map[string]*registry.Service{},
		workloads:      nv.workloads,
		allServices:    nv.allServices,
		inbound:        nv.inbound,
		exportTo:       nv.exportTo,
		vsByGateway:    map[string][]*VirtualService{},
		delegates:      nv.delegates,
		gateways:       nv.gateways,
	}
	if hosts == nil {
		v.services, v.servicesByHost = nv.services, nv.servicesByHost
		v.mergedDRs, v.virtualServices, v.vsByGateway = nv.mergedDRs, nv.virtualServices, nv.vsByGateway
		return v
	}
	imported := func(ns string, names ...string) bool {
		for _, e := range hosts {
			for _, h := range names {
				if e.imports(ns, h) {
					return true
				}
			}
		}
		return false
	}
	for _, vs := range nv.virtualServices {
		if !imported(vs.Namespace, vs.Hosts...) {
			continue
		}
		v.virtualServices = append(v.virtualServices, vs)
		for _, g := range vs.Gateways {
			v.vsByGateway[g] = append(v.vsByGateway[g], vs)
		}
	}
	v.virtualServices = slices.Clip(v.virtualServices)

	// allServices is sorted by host then namespace: keep the first
	// visible, imported service of each host, replaced by one of the
	// proxy's namespace when there is one (as newView does).
	for _, s := range nv.allServices {
		if vis, ok := nv.exportTo[s.Source]; ok && !vis.VisibleTo(nv.namespace) {
			continue
		}
		if !imported(s.Namespace, s.Hostname) {
			continue
		}
		prev, dup := v.servicesByHost[s.Hostname]
		switch {
		case !dup:
			v.services = append(v.services, s)
		case s.Namespace == nv.namespace && prev.Namespace != nv.namespace:
			v.services[len(v.services)-1] = s
		default:
			continue
		}
		v.servicesByHost[s.Hostname] = s
	}
	// Istio infers more destinations from the imported VirtualServices: a
	// route to a service the egress hosts do not name still works.
	added := false
	for _, vs := range v.virtualServices {
		for _, h := range destinationHosts(vs) {
			if _, ok := v.servicesByHost[h]; ok {
				continue
			}
			if s := nv.ServiceForHost(h); s != nil {
				v.services = append(v.services, s)
				v.servicesByHost[h] = s
				added = true
			}
		}
	}
	if added {
		slices.SortFunc(v.services, func(a, b *registry.Service) int { return strings.Compare(a.Hostname, b.Hostname) })
	}
	v.services = slices.Clip(v.services)

	for _, dr := range nv.mergedDRs {
		for _, s := range v.services {
			if HostMatches(dr.Host, s.Hostname) {
				v.mergedDRs = append(v.mergedDRs, dr)
				break
			}
		}
	}
	return v
}

// destinationHosts lists the FQDN hosts vs routes or mirrors to, short
// names resolved against its namespace.
func destinationHosts(vs *VirtualService) []string {
	var out []string
	add := func(d *networking.Destination) {
		if d.GetHost() != "" {
			out = append(out, ResolveShortName(d.GetHost(), vs.Namespace))
		}
	}
	for _, r := range vs.HTTP {
		for _, d := range r.GetRoute() {
			add(d.GetDestination())
		}
		add(r.GetMirror())
		for _, m := range r.GetMirrors() {
			add(m.GetDestination())
		}
	}
	for _, r := range vs.Spec.GetTcp() {
		for _, d := range r.GetRoute() {
			add(d.GetDestination())
		}
	}
	for _, r := range vs.Spec.GetTls() {
		for _, d := range r.GetRoute() {
			add(d.GetDestination())
		}
	}
	return out
}

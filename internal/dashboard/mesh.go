package dashboard

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/controlplane/xds"
	"github.com/loom-mesh/loom/internal/loomctl"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// ConfigSource is loomd's config store as the dashboard reads it
// (*config.Store implements it). Both methods must be safe for concurrent
// use and must not block for long.
type ConfigSource interface {
	// Snapshot is the serving config; nil means none yet.
	Snapshot() *config.Snapshot
	// Errors are the errors of the config directory's latest read.
	Errors() config.Errors
}

// ProxySource reports the connected proxies and their xDS sync state
// (*xds.Server implements it).
type ProxySource interface {
	Syncz() []xds.ProxyStatus
}

var (
	_ ConfigSource = (*config.Store)(nil)
	_ ProxySource  = (*xds.Server)(nil)
)

// meshView is one consistent read of the config, the push context built
// from it, and the proxies.
type meshView struct {
	snap    *config.Snapshot
	pc      *model.PushContext
	errs    config.Errors
	proxies []xds.ProxyStatus
	now     time.Time
}

// pushContexts caches the push context of the latest snapshot, so that
// every API call does not index the config again.
type pushContexts struct {
	mu   sync.Mutex // guards the fields below
	snap *config.Snapshot
	pc   *model.PushContext
}

func (c *pushContexts) get(snap *config.Snapshot) *model.PushContext {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pc == nil || c.snap != snap {
		c.snap, c.pc = snap, model.NewPushContext(snap)
	}
	return c.pc
}

// ConfigRef is one resource that applies to a service or workload, and
// why.
type ConfigRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Source is where it was read, "FILE:LINE".
	Source string `json:"source,omitempty"`
	// Why says how it applies: "hosts", "routes to", "selector",
	// "namespace-wide", "mesh-wide", "defines".
	Why string `json:"why"`
}

// Port is a service port.
type Port struct {
	Number   uint32 `json:"number"`
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
}

// ServiceView is a service of the registry.
type ServiceView struct {
	Host      string   `json:"host"` // FQDN
	Name      string   `json:"name"` // the host's first label
	Namespace string   `json:"namespace"`
	Ports     []Port   `json:"ports"`
	Workloads []string `json:"workloads"` // names of the WorkloadEntries serving it
	// Config are the resources that apply to the service; only in a
	// service's own page.
	Config []ConfigRef `json:"config,omitempty"`
	// Warnings are validation and consistency problems of the service.
	Warnings []string `json:"warnings"`
}

// WorkloadView is a workload: a WorkloadEntry, a connected proxy, or both.
type WorkloadView struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	App       string            `json:"app,omitempty"`
	Version   string            `json:"version,omitempty"`
	Address   string            `json:"address,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Services are the hosts of the services it serves.
	Services []string `json:"services"`
	// Proxy is its connected proxy; nil when none is connected.
	Proxy *ProxyView `json:"proxy,omitempty"`
	// Config are the resources that apply to it; only in a workload's
	// own page.
	Config   []ConfigRef `json:"config,omitempty"`
	Warnings []string    `json:"warnings"`
}

// TypeView is one xDS type of a proxy.
type TypeView struct {
	Type string `json:"type"` // CDS, EDS, LDS, RDS
	// State is istioctl's word: SYNCED, NOT SENT, STALE or NACKED.
	State     string `json:"state"`
	Sent      string `json:"sent,omitempty"`
	Acked     string `json:"acked,omitempty"`
	NackError string `json:"nack_error,omitempty"`
}

// ProxyView is a connected proxy with its xDS sync state.
type ProxyView struct {
	ID        string `json:"id"`        // the xDS node ID
	Name      string `json:"name"`      // "reviews-v1.default", as istioctl proxy-status
	Type      string `json:"type"`      // sidecar, router
	Workload  string `json:"workload"`  // the node ID's name
	Namespace string `json:"namespace"` // the node ID's namespace
	IP        string `json:"ip"`
	Version   string `json:"version,omitempty"`
	Cluster   string `json:"cluster,omitempty"`
	// Synced is true when every type is SYNCED or NOT SENT.
	Synced bool       `json:"synced"`
	Types  []TypeView `json:"types"`
	// ConnectedAt and LastACK are times; ConfigAgeSeconds is the time
	// since LastACK (the age of the config the proxy serves), absent before
	// its first ACK.
	ConnectedAt      time.Time `json:"connected_at,omitzero"`
	LastACK          time.Time `json:"last_ack,omitzero"`
	ConfigAgeSeconds *float64  `json:"config_age_seconds,omitempty"`
	// Scrape is how the dashboard's last scrape of the proxy went (embedded
	// traffic source only).
	Scrape *TargetHealth `json:"scrape,omitempty"`
}

// ConfigItem is one row of the config page: a resource and its
// validation status.
type ConfigItem struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"api_version,omitempty"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	Source     string `json:"source,omitempty"`
	// Status is "valid" or "invalid".
	Status string `json:"status"`
	// Serving is true when a version of the resource is in the serving
	// config: an invalid resource may still serve its last good version.
	Serving bool     `json:"serving"`
	Errors  []string `json:"errors,omitempty"`
}

// proxyViews turns the sync status of the proxies into ProxyViews.
func proxyViews(ps []xds.ProxyStatus, now time.Time) []ProxyView {
	out := make([]ProxyView, 0, len(ps))
	for _, p := range ps {
		v := ProxyView{ID: p.ID, Name: loomctl.ProxyName(p.ID), Version: p.Version, Cluster: p.Cluster,
			ConnectedAt: p.ConnectedAt, LastACK: p.LastACK, Synced: true}
		if id, err := xdsapi.ParseNodeID(p.ID); err == nil {
			v.Type, v.Workload, v.Namespace, v.IP = string(id.Type), id.Name, id.Namespace, id.IP
		}
		if !p.LastACK.IsZero() {
			age := now.Sub(p.LastACK).Seconds()
			v.ConfigAgeSeconds = &age
		}
		for _, t := range p.Types {
			state := loomctl.TypeState(loomctl.TypeStatus(t))
			if state != loomctl.StateSynced && state != loomctl.StateNotSent {
				v.Synced = false
			}
			v.Types = append(v.Types, TypeView{Type: t.Short, State: state, Sent: t.Sent, Acked: t.Acked, NackError: t.NackError})
		}
		out = append(out, v)
	}
	return out
}

// shortName is a host's first label: "reviews" of
// "reviews.default.svc.cluster.local".
func shortName(host string) string {
	name, _, _ := strings.Cut(host, ".")
	return name
}

// services lists the registry's services, without their config.
func (m *meshView) services() []ServiceView {
	out := make([]ServiceView, 0, len(m.pc.Services()))
	for _, s := range m.pc.Services() {
		out = append(out, m.service(s, false))
	}
	return out
}

// findService returns the service of host in namespace ns, or nil.
func (m *meshView) findService(ns, host string) *registry.Service {
	s := m.pc.ServiceForHost(host)
	if s == nil || s.Namespace != ns {
		return nil
	}
	return s
}

// service builds a service's view; full adds the config that applies.
func (m *meshView) service(s *registry.Service, full bool) ServiceView {
	v := ServiceView{Host: s.Hostname, Name: shortName(s.Hostname), Namespace: s.Namespace, Workloads: []string{}, Warnings: []string{}}
	for _, p := range s.Ports {
		v.Ports = append(v.Ports, Port{Number: p.Number, Name: p.Name, Protocol: string(p.Protocol)})
	}
	for _, in := range s.Instances {
		if in.Workload.Kind != "" && !slices.Contains(v.Workloads, in.Workload.Name) {
			v.Workloads = append(v.Workloads, in.Workload.Name)
		}
	}
	sort.Strings(v.Workloads)
	refs := m.serviceConfig(s)
	v.Warnings = m.serviceWarnings(s, refs)
	if full {
		v.Config = refs
	}
	return v
}

// serviceConfig lists what applies to a service: the ServiceEntry that
// defines it, the VirtualServices whose hosts cover it or whose routes go
// to it, the DestinationRules whose host covers it, and what applies to
// its workloads.
func (m *meshView) serviceConfig(s *registry.Service) []ConfigRef {
	var refs []ConfigRef
	add := func(k config.Key, why string) {
		for _, r := range refs {
			if r.Kind == string(k.Kind) && r.Namespace == k.Namespace && r.Name == k.Name {
				return
			}
		}
		ref := ConfigRef{Kind: string(k.Kind), Namespace: k.Namespace, Name: k.Name, Why: why}
		if r := m.snap.Get(k); r != nil {
			ref.Source = r.Source.String()
		}
		refs = append(refs, ref)
	}
	add(s.Source, "defines")
	for _, r := range m.routingConfig(s, nil) {
		add(config.Key{Kind: config.Kind(r.Kind), Namespace: r.Namespace, Name: r.Name}, r.Why)
	}
	for _, w := range m.serviceWorkloads(s) {
		for _, r := range m.workloadPolicies(&model.Proxy{Type: model.SidecarProxy, Namespace: w.Namespace, Labels: w.Labels}) {
			add(config.Key{Kind: config.Kind(r.Kind), Namespace: r.Namespace, Name: r.Name}, r.Why)
		}
	}
	return refs
}

// routingConfig lists the VirtualServices whose hosts cover service s or
// whose routes go to it, and the DestinationRules whose host covers it;
// for a workload with labels (nil for the service itself), a
// DestinationRule one of whose subsets selects it says so ("subset v2").
func (m *meshView) routingConfig(s *registry.Service, labels map[string]string) []ConfigRef {
	var refs []ConfigRef
	for _, vs := range m.pc.VirtualServices() {
		if slices.ContainsFunc(vs.Hosts, func(h string) bool { return model.HostMatches(h, s.Hostname) }) {
			refs = append(refs, m.ref(config.KindVirtualService, vs.Namespace, vs.Name, "hosts"))
		} else if routesTo(vs, s.Hostname) {
			refs = append(refs, m.ref(config.KindVirtualService, vs.Namespace, vs.Name, "routes to"))
		}
	}
	for _, dr := range m.pc.DestinationRules() {
		if !model.HostMatches(dr.Host, s.Hostname) {
			continue
		}
		why := "host"
		for _, ss := range dr.Spec.GetSubsets() {
			if labels != nil && len(ss.GetLabels()) > 0 && registry.LabelsContain(labels, ss.GetLabels()) {
				why = "subset " + ss.GetName()
				break
			}
		}
		refs = append(refs, m.ref(config.KindDestinationRule, dr.Namespace, dr.Name, why))
	}
	return refs
}

// routesTo reports whether a VirtualService routes or mirrors to host.
func routesTo(vs *model.VirtualService, host string) bool {
	dest := func(d *networking.Destination) bool {
		return d != nil && model.ResolveShortName(d.GetHost(), vs.Namespace) == host
	}
	for _, r := range vs.HTTP {
		for _, rd := range r.GetRoute() {
			if dest(rd.GetDestination()) {
				return true
			}
		}
		if dest(r.GetMirror()) {
			return true
		}
	}
	for _, r := range vs.Spec.GetTcp() {
		for _, rd := range r.GetRoute() {
			if dest(rd.GetDestination()) {
				return true
			}
		}
	}
	for _, r := range vs.Spec.GetTls() {
		for _, rd := range r.GetRoute() {
			if dest(rd.GetDestination()) {
				return true
			}
		}
	}
	return false
}

// serviceWorkloads are the WorkloadEntries of a service's instances.
func (m *meshView) serviceWorkloads(s *registry.Service) []*registry.Workload {
	var out []*registry.Workload
	for _, w := range m.pc.Workloads() {
		for _, in := range s.Instances {
			if in.Workload == w.Key() {
				out = append(out, w)
				break
			}
		}
	}
	return out
}

// workloadPolicies lists the security and proxy config in effect for proxy
// p (a workload's namespace, labels and proxy type), as the control plane
// selects it for p's config: AuthorizationPolicies
// (AuthorizationPoliciesFor), the PeerAuthentications its mTLS mode comes
// from (PeerAuthenticationsFor), the one Sidecar that applies
// (SidecarForProxy) and EnvoyFilters (EnvoyFiltersForProxy).
func (m *meshView) workloadPolicies(p *model.Proxy) []ConfigRef {
	var refs []ConfigRef
	scope := func(rns string, sel map[string]string) string {
		switch {
		case len(sel) > 0:
			return "selector"
		case rns == model.RootNamespace:
			return "mesh-wide"
		}
		return "namespace-wide"
	}
	ap := m.pc.AuthorizationPoliciesFor(p.Namespace, p.Labels)
	for _, l := range [][]*model.AuthorizationPolicy{ap.Custom, ap.Deny, ap.Allow, ap.Audit} {
		for _, a := range l {
			refs = append(refs, m.ref(config.KindAuthorizationPolicy, a.Namespace, a.Name, scope(a.Namespace, a.Spec.GetSelector().GetMatchLabels())))
		}
	}
	for _, k := range m.pc.PeerAuthenticationsFor(p.Namespace, p.Labels) {
		var sel map[string]string
		if r := m.snap.Get(k); r != nil {
			if pa, ok := r.Spec.(*security.PeerAuthentication); ok {
				sel = pa.GetSelector().GetMatchLabels()
			}
		}
		refs = append(refs, m.ref(k.Kind, k.Namespace, k.Name, scope(k.Namespace, sel)))
	}
	if sc := m.pc.SidecarForProxy(p); sc != nil {
		refs = append(refs, m.ref(config.KindSidecar, sc.Namespace, sc.Name, scope(sc.Namespace, sc.Spec.GetWorkloadSelector().GetLabels())))
	}
	for _, ef := range m.pc.EnvoyFiltersForProxy(p) {
		refs = append(refs, m.ref(config.KindEnvoyFilter, ef.Namespace, ef.Name, scope(ef.Namespace, ef.Spec.GetWorkloadSelector().GetLabels())))
	}
	return refs
}

func (m *meshView) ref(kind config.Kind, ns, name, why string) ConfigRef {
	ref := ConfigRef{Kind: string(kind), Namespace: ns, Name: name, Why: why}
	if r := m.snap.Get(config.Key{Kind: kind, Namespace: ns, Name: name}); r != nil {
		ref.Source = r.Source.String()
	}
	return ref
}

// serviceWarnings are a service's problems: config errors about the
// resources that apply to it or naming its host, DestinationRule subsets
// that select none of its workloads, no workload at all, and NACKs of its
// workloads' proxies.
func (m *meshView) serviceWarnings(s *registry.Service, refs []ConfigRef) []string {
	warns := m.configErrorsAbout(refs, s.Hostname)
	if len(s.Instances) == 0 && s.Location != networking.ServiceEntry_MESH_EXTERNAL {
		warns = append(warns, fmt.Sprintf("no workload serves %s: requests to it fail (no healthy upstream)", s.Hostname))
	}
	for _, dr := range m.pc.DestinationRules() {
		if !model.HostMatches(dr.Host, s.Hostname) || strings.HasPrefix(dr.Host, "*") {
			continue
		}
		for _, sub := range dr.Spec.GetSubsets() {
			if !slices.ContainsFunc(s.Instances, func(in *registry.Instance) bool { return registry.LabelsContain(in.Labels, sub.GetLabels()) }) {
				warns = append(warns, fmt.Sprintf("DestinationRule %s/%s: subset %q (%s) selects no workload of %s",
					dr.Namespace, dr.Name, sub.GetName(), formatLabels(sub.GetLabels()), s.Hostname))
			}
		}
	}
	for _, w := range m.serviceWorkloads(s) {
		warns = append(warns, m.proxyWarnings(w.Namespace, w.Name)...)
	}
	return warns
}

// configErrorsAbout returns the config directory's errors about one of
// refs' resources, whose text names host, or about a VirtualService,
// DestinationRule or ServiceEntry of host's namespace named after it (as
// Istio's samples name them: an invalid resource is not in the serving
// config, so its hosts are not known).
func (m *meshView) configErrorsAbout(refs []ConfigRef, host string) []string {
	out := []string{}
	name, rest, _ := strings.Cut(host, ".")
	ns, _, _ := strings.Cut(rest, ".")
	for _, e := range m.errs {
		about := host != "" && strings.Contains(e.Error(), host)
		switch e.Key.Kind {
		case config.KindVirtualService, config.KindDestinationRule, config.KindServiceEntry, config.KindService:
			about = about || (host != "" && e.Key.Name == name && e.Key.Namespace == ns)
		}
		for _, r := range refs {
			if string(e.Key.Kind) == r.Kind && e.Key.Namespace == r.Namespace && e.Key.Name == r.Name {
				about = true
			}
		}
		if about {
			out = append(out, e.Error())
		}
	}
	return out
}

// proxyWarnings are the NACKs of the proxy of workload ns/name, or a note
// that none is connected.
func (m *meshView) proxyWarnings(ns, name string) []string {
	p := m.proxyOf(ns, name)
	if p == nil {
		return []string{fmt.Sprintf("no proxy of workload %s.%s is connected to loomd", name, ns)}
	}
	var out []string
	for _, t := range p.Types {
		if t.Nacked != "" {
			out = append(out, fmt.Sprintf("proxy %s refused %s version %s: %s", loomctl.ProxyName(p.ID), t.Short, t.Nacked, t.NackError))
		}
	}
	return out
}

// proxyOf returns the connected proxy whose node ID names workload ns/name.
func (m *meshView) proxyOf(ns, name string) *xds.ProxyStatus {
	for i, p := range m.proxies {
		if id, err := xdsapi.ParseNodeID(p.ID); err == nil && id.Name == name && id.Namespace == ns {
			return &m.proxies[i]
		}
	}
	return nil
}

func formatLabels(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// workloads lists the WorkloadEntries and the connected proxies that have
// none (gateways), by namespace and name, without their config.
func (m *meshView) workloads() []WorkloadView {
	var out []WorkloadView
	seen := map[[2]string]bool{}
	for _, w := range m.pc.Workloads() {
		seen[[2]string{w.Namespace, w.Name}] = true
		out = append(out, m.workload(w.Namespace, w.Name, false))
	}
	for _, p := range m.proxies {
		id, err := xdsapi.ParseNodeID(p.ID)
		if err != nil || seen[[2]string{id.Namespace, id.Name}] {
			continue
		}
		seen[[2]string{id.Namespace, id.Name}] = true
		out = append(out, m.workload(id.Namespace, id.Name, false))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// workload builds the view of workload ns/name; ok is false when neither a
// WorkloadEntry nor a proxy has that name. full adds the config that
// applies.
func (m *meshView) workload(ns, name string, full bool) WorkloadView {
	v := WorkloadView{Name: name, Namespace: ns, Services: []string{}, Warnings: []string{}}
	var we *registry.Workload
	for _, w := range m.pc.Workloads() {
		if w.Namespace == ns && w.Name == name {
			we = w
		}
	}
	var refs []ConfigRef
	proxy := &model.Proxy{Type: model.SidecarProxy, Namespace: ns}
	if we != nil {
		v.Address, v.Labels = we.Address, we.Labels
		refs = append(refs, m.ref(config.KindWorkloadEntry, ns, name, "defines"))
		for _, s := range m.pc.Services() {
			if slices.ContainsFunc(s.Instances, func(in *registry.Instance) bool { return in.Workload == we.Key() }) {
				v.Services = append(v.Services, s.Hostname)
				// The routing toward the workload: its services'
				// VirtualServices and DestinationRules.
				for _, r := range m.routingConfig(s, we.Labels) {
					if !slices.ContainsFunc(refs, func(o ConfigRef) bool {
						return o.Kind == r.Kind && o.Namespace == r.Namespace && o.Name == r.Name
					}) {
						refs = append(refs, r)
					}
				}
			}
		}
	}
	if p := m.proxyOf(ns, name); p != nil {
		pv := proxyViews([]xds.ProxyStatus{*p}, m.now)[0]
		v.Proxy = &pv
		if v.Address == "" {
			v.Address = pv.IP
		}
		if pv.Type == string(xdsapi.Router) {
			proxy.Type = model.RouterProxy
		}
		if pv.Type == string(xdsapi.Router) && v.Labels == nil {
			// A gateway has no WorkloadEntry: its Gateways select it by the
			// labels it connected with, which the node ID does not carry.
			for _, g := range m.pc.Gateways() {
				refs = append(refs, m.ref(config.KindGateway, g.Namespace, g.Name, "gateway"))
			}
		}
	}
	v.App, v.Version = v.Labels["app"], v.Labels["version"]
	if v.App == "" {
		v.App = name
	}
	proxy.Labels = v.Labels
	refs = append(refs, m.workloadPolicies(proxy)...)
	host := ""
	if len(v.Services) == 1 {
		host = v.Services[0]
	}
	v.Warnings = append(m.configErrorsAbout(refs, host), m.proxyWarnings(ns, name)...)
	if full {
		v.Config = refs
	}
	return v
}

// configItems lists every resource of the serving config and every
// resource the config directory's errors name, with its status.
func (m *meshView) configItems() []ConfigItem {
	byKey := map[config.Key]*ConfigItem{}
	var out []*ConfigItem
	for _, r := range m.snap.All() {
		it := &ConfigItem{Kind: string(r.Kind), APIVersion: r.APIVersion, Namespace: r.Namespace, Name: r.Name,
			Source: r.Source.String(), Status: "valid", Serving: true}
		byKey[r.Key()] = it
		out = append(out, it)
	}
	for _, e := range m.errs {
		it := byKey[e.Key]
		if it == nil || e.Key.Kind == "" {
			it = &ConfigItem{Kind: string(e.Key.Kind), Namespace: e.Key.Namespace, Name: e.Key.Name, Source: e.Source.String()}
			if e.Key.Kind != "" {
				byKey[e.Key] = it
			}
			out = append(out, it)
		}
		it.Status = "invalid"
		it.Errors = append(it.Errors, e.Error())
	}
	items := make([]ConfigItem, len(out))
	for i, it := range out {
		items[i] = *it
	}
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return items
}

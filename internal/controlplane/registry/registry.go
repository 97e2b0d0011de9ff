package registry

import (
	"cmp"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// Protocol is a port's application protocol, Istio's names: "HTTP",
// "HTTP2", "GRPC", "TCP", ... Empty means unknown.
type Protocol string

// Protocols Loom distinguishes, spelled as Istio's pkg/config/protocol.
const (
	HTTP      Protocol = "HTTP"
	HTTP2     Protocol = "HTTP2"
	HTTPProxy Protocol = "HTTP_PROXY"
	GRPC      Protocol = "GRPC"
	GRPCWeb   Protocol = "GRPC-Web"
	HTTPS     Protocol = "HTTPS"
	TLS       Protocol = "TLS"
	TCP       Protocol = "TCP"
	UDP       Protocol = "UDP"
	Mongo     Protocol = "Mongo"
	Redis     Protocol = "Redis"
	MySQL     Protocol = "MySQL"
	Unknown   Protocol = ""
)

// parseProtocolName maps one protocol name, case ignored, to its
// Protocol as Istio's protocol.Parse does; false when it names none.
func parseProtocolName(s string) (Protocol, bool) {
	switch strings.ToLower(s) {
	case "http", "http1":
		return HTTP, true
	case "http2":
		return HTTP2, true
	case "http_proxy":
		return HTTPProxy, true
	case "grpc":
		return GRPC, true
	case "grpc-web":
		return GRPCWeb, true
	case "https":
		return HTTPS, true
	case "tls":
		return TLS, true
	case "tcp":
		return TCP, true
	case "udp":
		return UDP, true
	case "mongo":
		return Mongo, true
	case "redis":
		return Redis, true
	case "mysql":
		return MySQL, true
	}
	return Unknown, false
}

// ParseProtocol returns the protocol of a port as Istio's protocol
// selection does: its protocol field (ServiceEntry.ports[].protocol,
// Gateway servers[].port.protocol) when set, else its name's prefix before
// the first '-' ("http-web" is HTTP, "grpc" is GRPC), where a name starting
// with "grpc-web" is GRPC-Web (Istio checks that prefix first, as it holds
// a '-'). Case is ignored. A protocol field Istio does not know is kept,
// upper-cased (validation refuses it before it gets here); a name prefix
// that is no protocol gives Unknown.
func ParseProtocol(protocol, portName string) Protocol {
	if protocol != "" {
		if p, ok := parseProtocolName(protocol); ok {
			return p
		}
		return Protocol(strings.ToUpper(protocol))
	}
	if len(portName) >= len("grpc-web") && strings.EqualFold(portName[:len("grpc-web")], "grpc-web") {
		return GRPCWeb
	}
	prefix, _, _ := strings.Cut(portName, "-")
	p, _ := parseProtocolName(prefix)
	return p
}

// Kubernetes' standard appProtocol values (core/v1 ServicePort.appProtocol).
const (
	// AppProtocolH2C is HTTP/2 with prior knowledge over cleartext.
	AppProtocolH2C = "kubernetes.io/h2c"
	// AppProtocolWS is WebSocket over cleartext.
	AppProtocolWS = "kubernetes.io/ws"
	// AppProtocolWSS is WebSocket over TLS.
	AppProtocolWSS = "kubernetes.io/wss"
)

// wellKnownTCPPorts are the ports Istio's ConvertProtocol makes TCP when
// neither name nor appProtocol says a protocol: SMTP, DNS, MySQL and
// MongoDB, whose servers speak first and break protocol sniffing.
var wellKnownTCPPorts = map[uint32]bool{25: true, 53: true, 3306: true, 27017: true}

// KubernetesProtocol returns the protocol of a Kubernetes Service port
// (core/v1 ServicePort) as Istio's kube registry selects it
// (pkg/config/kube ConvertProtocol):
//
//   - protocol (spec.ports[].protocol) UDP is UDP, whatever the rest says;
//   - else appProtocol when set, where kubernetes.io/h2c is HTTP2,
//     kubernetes.io/ws HTTP and kubernetes.io/wss HTTPS, and any other value
//     is read as a port name is; appProtocol replaces the name entirely;
//   - else the name: "grpc-web" as a prefix is GRPC-Web, then the part
//     before the first '-' names the protocol ("http-web" is HTTP, "tcp" is
//     TCP), case ignored;
//   - nothing recognised is Unknown (Istio's sniffed "auto"), except on
//     the well-known server-first ports 25, 53, 3306 and 27017, which are
//     TCP.
//
// SCTP is not special-cased, as in Istio: it goes through the same rules
// (sidecars capture TCP only, so no SCTP reaches a listener). An
// appProtocol Istio does not know is not an error: it gives Unknown.
// appProtocol "" means unset (Kubernetes refuses an empty one).
func KubernetesProtocol(port uint32, name, protocol, appProtocol string) Protocol {
	if strings.EqualFold(protocol, "UDP") {
		return UDP
	}
	if appProtocol != "" {
		switch appProtocol {
		case AppProtocolH2C:
			return HTTP2
		case AppProtocolWS:
			return HTTP
		case AppProtocolWSS:
			return HTTPS
		}
		name = appProtocol
	}
	p := ParseProtocol("", name)
	if p == Unknown && wellKnownTCPPorts[port] {
		return TCP
	}
	return p
}

// IsHTTP reports whether traffic on the port is HTTP of any version, which
// is what an HTTP connection manager can route. Unknown counts as HTTP: in
// explicit HTTP-proxy mode only HTTP reaches the proxy.
func (p Protocol) IsHTTP() bool {
	switch p {
	case HTTP, HTTP2, HTTPProxy, GRPC, GRPCWeb, Unknown:
		return true
	}
	return false
}

// IsHTTP2 reports whether the upstream speaks HTTP/2 (cleartext h2c here):
// HTTP2, GRPC and GRPC-Web.
func (p Protocol) IsHTTP2() bool {
	return p == HTTP2 || p == GRPC || p == GRPCWeb
}

// Port is a service port (ServiceEntry.ports[]).
type Port struct {
	Number   uint32
	Name     string
	Protocol Protocol
	// TargetPort is the port instances listen on when their entry does not
	// say otherwise; Number when the ServiceEntry leaves it unset.
	TargetPort uint32
}

// Service is one host of a ServiceEntry: Istio's model.Service.
type Service struct {
	// Hostname is the FQDN, as written in ServiceEntry.hosts.
	Hostname  string
	Namespace string
	// Source names the ServiceEntry the service comes from.
	Source config.Key
	// Ports are sorted by number.
	Ports []Port
	// Resolution is kept as written. Only STATIC (and NONE) are served in
	// this version: a DNS service gets no instances from its hosts.
	Resolution networking.ServiceEntry_Resolution
	Location   networking.ServiceEntry_Location
	// Addresses are ServiceEntry.addresses as written: the service's
	// virtual IPs (or CIDRs), which an intercepted client's connection is
	// addressed to. Nil when the entry has none.
	Addresses []string
	// Instances are the inline endpoints and the selected WorkloadEntries,
	// one per service port, sorted by address, service port and target port.
	Instances []*Instance
	// Accounts are the distinct service accounts of Instances, by
	// namespace then name: what Istio's push context indexes as a
	// service's ServiceAccounts, and what clients check the service's
	// certificates against. Computed once with the service.
	Accounts []Account
}

// Account is a service account of a service's instances: Name in
// Namespace (the WorkloadEntry's, else the service's).
type Account struct {
	Namespace, Name string
}

// serviceAccounts lists the distinct Accounts of instances; ns is the
// service's namespace, for inline endpoints.
func serviceAccounts(instances []*Instance, ns string) []Account {
	var out []Account
	for _, in := range instances {
		if in.ServiceAccount == "" {
			continue
		}
		a := Account{Namespace: cmp.Or(in.Workload.Namespace, ns), Name: in.ServiceAccount}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Account) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Port returns the service port numbered n.
func (s *Service) Port(n uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Number == n {
			return p, true
		}
	}
	return Port{}, false
}

// Instance is one endpoint of a service on one service port: Istio's
// ServiceInstance.
type Instance struct {
	// Address is as written in the entry: an IP address, a host name (to
	// be resolved by DNS, not served in this version) or unix://PATH.
	// Consumers that need an IP must check it.
	Address     string
	ServicePort Port
	// TargetPort is the port the workload listens on for ServicePort:
	// the entry's ports[ServicePort.Name], else ServicePort.TargetPort.
	TargetPort     uint32
	Labels         map[string]string
	ServiceAccount string
	// Weight is the load-balancing weight; 0 means the default (1).
	Weight uint32
	// Workload names the WorkloadEntry; its Kind is empty for an endpoint
	// written inline in the ServiceEntry.
	Workload config.Key
	// Locality is the entry's locality field, "region/zone/subzone"
	// (any part may be empty, trailing parts omitted); empty when unset.
	Locality string
	// InterceptionMode is the WorkloadEntry's interception mode
	// (Workload.InterceptionMode); empty for an inline endpoint.
	InterceptionMode string
}

// AnnotationInterceptionMode is Istio's annotation of a workload's
// traffic interception mode ("REDIRECT", "TPROXY" or "NONE"), read here
// from a WorkloadEntry's metadata.annotations.
const AnnotationInterceptionMode = "sidecar.istio.io/interceptionMode"

// InterceptionRedirect is the interception mode of a workload whose
// sidecar iptables REDIRECT feeds: peers address it at its app's own
// ports.
const InterceptionRedirect = "REDIRECT"

// Workload is one WorkloadEntry.
type Workload struct {
	Name           string
	Namespace      string
	Address        string
	Ports          map[string]uint32
	Labels         map[string]string
	ServiceAccount string
	Weight         uint32
	// Locality is WorkloadEntry.locality, "region/zone/subzone"; empty
	// when unset.
	Locality string
	// InterceptionMode is the entry's sidecar.istio.io/interceptionMode
	// annotation as written ("REDIRECT"); empty when absent, which in
	// local mode means NONE (explicit: peers reach HTTP ports through the
	// sidecar's inbound port 15006).
	InterceptionMode string
}

// Key returns the WorkloadEntry's key.
func (w *Workload) Key() config.Key {
	return config.Key{Kind: config.KindWorkloadEntry, Namespace: w.Namespace, Name: w.Name}
}

// Workloads returns the WorkloadEntries of snap, sorted by namespace and
// name. Entries with no address are left out.
func Workloads(snap *config.Snapshot) []*Workload {
	var out []*Workload
	for _, r := range snap.List(config.KindWorkloadEntry) {
		we, ok := r.Spec.(*networking.WorkloadEntry)
		if !ok || we.GetAddress() == "" {
			continue
		}
		out = append(out, &Workload{
			Name:           r.Name,
			Namespace:      r.Namespace,
			Address:        we.GetAddress(),
			Ports:          we.GetPorts(),
			Labels:         we.GetLabels(),
			ServiceAccount: we.GetServiceAccount(),
			Weight:         we.GetWeight(),
			Locality:       we.GetLocality(),
			// Istio reads the annotation from the pod; a WorkloadEntry
			// stands for the pod here.
			InterceptionMode: r.Annotations[AnnotationInterceptionMode],
		})
	}
	return out
}

// Services returns a service per Kubernetes Service (kubeServices) and
// per host of every ServiceEntry of snap, sorted by hostname and
// namespace. Two sources of one namespace that declare the same host give
// one service: a Kubernetes Service wins over a ServiceEntry (Istio
// consults its Kubernetes registry first), then the first ServiceEntry in
// namespace/name order; the other's host is ignored.
//
// A ServiceEntry's instances are its inline endpoints plus the
// WorkloadEntries of its namespace whose labels contain
// workloadSelector.labels.
func Services(snap *config.Snapshot) []*Service {
	workloads := Workloads(snap)
	type hostNS struct{ host, ns string }
	seen := map[hostNS]bool{}
	var out []*Service
	for _, s := range kubeServices(snap, workloads) {
		seen[hostNS{s.Hostname, s.Namespace}] = true
		out = append(out, s)
	}
	for _, r := range snap.List(config.KindServiceEntry) {
		se, ok := r.Spec.(*networking.ServiceEntry)
		if !ok {
			continue
		}
		ports := servicePorts(se)
		instances := seInstances(r, se, ports, workloads)
		accounts := serviceAccounts(instances, r.Namespace)
		for _, h := range se.GetHosts() {
			k := hostNS{h, r.Namespace}
			if h == "" || seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, &Service{
				Hostname:   h,
				Namespace:  r.Namespace,
				Source:     r.Key(),
				Ports:      ports,
				Resolution: se.GetResolution(),
				Location:   se.GetLocation(),
				Addresses:  se.GetAddresses(),
				Instances:  instances,
				Accounts:   accounts,
			})
		}
	}
	slices.SortFunc(out, func(a, b *Service) int {
		return cmp.Or(cmp.Compare(a.Hostname, b.Hostname), cmp.Compare(a.Namespace, b.Namespace))
	})
	return out
}

func servicePorts(se *networking.ServiceEntry) []Port {
	var ports []Port
	for _, p := range se.GetPorts() {
		if p.GetNumber() == 0 || slices.ContainsFunc(ports, func(q Port) bool { return q.Number == p.GetNumber() }) {
			continue
		}
		target := p.GetTargetPort()
		if target == 0 {
			target = p.GetNumber()
		}
		ports = append(ports, Port{
			Number:     p.GetNumber(),
			Name:       p.GetName(),
			Protocol:   ParseProtocol(p.GetProtocol(), p.GetName()),
			TargetPort: target,
		})
	}
	slices.SortFunc(ports, func(a, b Port) int { return cmp.Compare(a.Number, b.Number) })
	return ports
}

// seInstances builds the instances of a ServiceEntry, shared by all its
// hosts (Istio gives every host the same endpoints).
func seInstances(r *config.Resource, se *networking.ServiceEntry, ports []Port, workloads []*Workload) []*Instance {
	var out []*Instance
	add := func(e Instance, portMap map[string]uint32) {
		for _, p := range ports {
			target := p.TargetPort
			if n, ok := portMap[p.Name]; ok && n != 0 {
				target = n
			}
			out = append(out, e.at(p, target))
		}
	}
	for _, ep := range se.GetEndpoints() {
		if ep.GetAddress() == "" {
			continue
		}
		add(Instance{
			Address:        ep.GetAddress(),
			Labels:         ep.GetLabels(),
			ServiceAccount: ep.GetServiceAccount(),
			Weight:         ep.GetWeight(),
			Locality:       ep.GetLocality(),
		}, ep.GetPorts())
	}
	if sel := se.GetWorkloadSelector(); sel != nil {
		for _, w := range workloads {
			if w.Namespace != r.Namespace || !LabelsContain(w.Labels, sel.GetLabels()) {
				continue
			}
			add(workloadInstance(w), w.Ports)
		}
	}
	sortInstances(out)
	return out
}

// workloadInstance is the instance of WorkloadEntry w, its ports unset
// (see at).
func workloadInstance(w *Workload) Instance {
	return Instance{
		Address:          w.Address,
		Labels:           w.Labels,
		ServiceAccount:   w.ServiceAccount,
		Weight:           w.Weight,
		Workload:         w.Key(),
		Locality:         w.Locality,
		InterceptionMode: w.InterceptionMode,
	}
}

// at returns a copy of e for service port p, listening on target.
func (e Instance) at(p Port, target uint32) *Instance {
	e.ServicePort, e.TargetPort = p, target
	return &e
}

// sortInstances orders a service's instances by address, service port
// and target port, stably (entries in the order they were added).
func sortInstances(out []*Instance) {
	slices.SortStableFunc(out, func(a, b *Instance) int {
		return cmp.Or(
			cmp.Compare(a.Address, b.Address),
			cmp.Compare(a.ServicePort.Number, b.ServicePort.Number),
			cmp.Compare(a.TargetPort, b.TargetPort),
		)
	})
}

// LabelsContain reports whether labels has every key of sel with the same
// value. An empty sel is contained in any labels.
func LabelsContain(labels, sel map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// UnixAddressPrefix starts an address that names a unix domain socket: a
// ServiceEntry or WorkloadEntry address, a Sidecar bind or defaultEndpoint
// (Istio's model.UnixAddressPrefix; Envoy's Address.pipe).
const UnixAddressPrefix = "unix://"

package validation

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Sidecar (Istio's ValidateSidecar). Loom serves a Sidecar's
// workloadSelector, egress listeners (at most one without a port; port
// and bind as Istio's validateSidecarEgressPortBindAndCaptureMode, ports
// unique; each listener's hosts scope what its port sees, the port-less
// one's the other ports), ingress listeners (port number, protocol and name,
// bind (an IP), defaultEndpoint, captureMode, connectionPool and tls: they
// replace the services' ports as the workload's inbound ports),
// inboundConnectionPool and outboundTrafficPolicy (mode, and egressProxy:
// a destination of FQDN host and port, under ALLOW_ANY only); connection
// pools are checked as a DestinationRule's. An egress listener's captureMode
// is served as Istio's buildSidecarOutboundListeners: under REDIRECT, NONE
// binds the port's listener (to bind, else 127.0.0.1), DEFAULT and
// IPTABLES leave it reached through iptables; in explicit mode every
// outbound listener is bound whatever the captureMode (Istio's
// interception NONE). The port-less listener's bind and captureMode apply
// to every port it builds. A port of protocol HTTP_PROXY is accepted on
// egress and ingress listeners alike, as Istio's ValidateProtocol: on
// egress it makes the listener an explicit HTTP proxy routing every HTTP
// port of its hosts, on ingress it is HTTP. It refuses as Unsupported what it
// would otherwise ignore: what sidecarTLS refuses of ingress tls, and a
// unix domain socket egress listener (port 0, unix:// bind, pipeEgress)
// of a protocol other than HTTP's. A unix:// defaultEndpoint (an absolute path or @NAME) is
// served: the inbound cluster is STATIC to that socket. An ingress captureMode is served as
// Istio's getBindToPort: IPTABLES, and DEFAULT under REDIRECT, reach the
// port through the inbound listener (virtualInbound, 15006) with no
// listener of its own bound; NONE, and DEFAULT in explicit mode, bind a
// listener to the port.

func (c *checker) sidecar(sc *networking.Sidecar) {
	if ws := sc.WorkloadSelector; ws != nil {
		c.selector("spec.workloadSelector.labels", ws.Labels)
	}
	if len(sc.Egress) == 0 && len(sc.Ingress) == 0 && sc.OutboundTrafficPolicy == nil && sc.InboundConnectionPool == nil {
		c.errf("spec", "Invalid value: sidecar: empty configuration provided")
	}
	c.connectionPool("spec.inboundConnectionPool", sc.InboundConnectionPool)
	ports := map[uint32]bool{}
	endpoints := map[string]int{} // cleaned unix defaultEndpoint path -> ingress index
	for i, in := range sc.Ingress {
		p := fmt.Sprintf("spec.ingress[%d]", i)
		if in == nil {
			c.errf(p, "Required value: sidecar: ingress may not be null")
			continue
		}
		if in.Port == nil {
			c.errf(p+".port", "Required value: sidecar: port is required for ingress listeners")
			continue
		}
		c.sidecarPort(p+".port", in.Port, false)
		if ports[in.Port.Number] {
			c.errf(p+".port.number", "Duplicate value: %d: sidecar: ports on IP bound listeners must be unique", in.Port.Number)
		}
		ports[in.Port.Number] = true
		if in.DefaultEndpoint != "" {
			c.defaultEndpoint(p+".defaultEndpoint", in.DefaultEndpoint)
			if path, ok := strings.CutPrefix(in.DefaultEndpoint, registry.UnixAddressPrefix); ok && unixAddress(path) == "" {
				if _, dup := endpoints[filepath.Clean(path)]; !dup {
					endpoints[filepath.Clean(path)] = i
				}
			}
		}
		if in.Bind != "" && net.ParseIP(in.Bind) == nil {
			// Istio's ValidateIPAddress; unix:// too: ingress listeners
			// bind IPs only.
			c.errf(p+".bind", "Invalid value: %q: %s is not a valid IP", in.Bind, in.Bind)
		}
		if in.Tls != nil {
			c.sidecarTLS(p+".tls", in.Tls)
		}
		c.connectionPool(p+".connectionPool", in.ConnectionPool)
	}
	catchAll := false
	egressPorts := map[uint32]bool{}
	pipes := map[string]bool{}
	for i, eg := range sc.Egress {
		p := fmt.Sprintf("spec.egress[%d]", i)
		if eg == nil {
			c.errf(p, "Required value: egress listener may not be null")
			continue
		}
		if eg.Port == nil {
			switch {
			case catchAll:
				c.errf(p, "Invalid value: sidecar: egress can have only one listener with empty port")
			case i != len(sc.Egress)-1:
				c.errf(p, "Invalid value: sidecar: the egress listener with empty port should be the last listener in the list")
			}
			catchAll = true
		} else {
			// Istio's validateSidecarEgressPortBindAndCaptureMode and
			// its unique ports, before refusing what Loom does not serve.
			c.sidecarPort(p+".port", eg.Port, true)
			if eg.Port.Number == 0 {
				c.pipeEgress(p, eg, pipes, endpoints)
			} else {
				if egressPorts[eg.Port.Number] {
					c.errf(p+".port.number", "Duplicate value: %d: sidecar: ports on IP bound listeners must be unique", eg.Port.Number)
				}
				egressPorts[eg.Port.Number] = true
			}
		}
		if eg.Bind != "" && (eg.Port == nil || eg.Port.Number != 0) && net.ParseIP(eg.Bind) == nil {
			// Istio's ValidateIPAddress: a unix:// bind needs port 0.
			c.errf(p+".bind", "Invalid value: %q: %s is not a valid IP", eg.Bind, eg.Bind)
		}
		if _, ok := networking.CaptureMode_name[int32(eg.CaptureMode)]; !ok {
			c.errf(p+".captureMode", `Unsupported value: %d: supported values: "DEFAULT", "IPTABLES", "NONE"`, eg.CaptureMode)
		}
		if len(eg.Hosts) == 0 {
			c.errf(p+".hosts", "Required value: sidecar: egress listener must contain at least one host")
		}
		for j, h := range eg.Hosts {
			if msg := sidecarHost(h); msg != "" {
				c.errf(fmt.Sprintf("%s.hosts[%d]", p, j), "Invalid value: %q: %s", h, msg)
			}
		}
	}
	if tp := sc.OutboundTrafficPolicy; tp != nil {
		if _, ok := networking.OutboundTrafficPolicy_Mode_name[int32(tp.Mode)]; !ok {
			c.errf("spec.outboundTrafficPolicy.mode", `Unsupported value: %d: supported values: "REGISTRY_ONLY", "ALLOW_ANY"`, tp.Mode)
		}
		if tp.EgressProxy != nil {
			// Istio's validateSidecarOutboundTrafficPolicy: an FQDN
			// host and a port, on ALLOW_ANY only.
			ep, d := "spec.outboundTrafficPolicy.egressProxy", tp.EgressProxy
			switch {
			case tp.Mode != networking.OutboundTrafficPolicy_ALLOW_ANY:
				c.errf(ep, "Invalid value: sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode")
			case d.Host == "":
				c.errf(ep+".host", "Required value: destination.host is required")
			case fqdn(d.Host) != "":
				c.errf(ep+".host", "Invalid value: %q: %s", d.Host, fqdn(d.Host))
			case d.Port == nil:
				c.errf(ep+".port", "Required value: sidecar: egress_proxy port must be non-nil")
			default:
				c.destination(ep, d)
			}
		}
	}
}

// pipeEgress checks egress listener eg at p whose port number is 0, a
// unix domain socket listener, as Istio's
// validateSidecarEgressPortBindAndCaptureMode: its bind is unix://PATH
// (unixAddress), unique among them (pipes, updated), and not the socket
// of an ingress listener's unix defaultEndpoint (endpoints, by cleaned
// path): the proxy would bind the application's socket, or the
// application's bind would fail, and inbound traffic would loop back
// into the proxy's egress listener; its captureMode DEFAULT or NONE. Its protocol must be one an HTTP connection manager
// serves (HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB): Istio routes TCP on
// such a listener to cluster outbound|0||HOST, which no service has, so
// Loom refuses the others as Unsupported.
func (c *checker) pipeEgress(p string, eg *networking.IstioEgressListener, pipes map[string]bool, endpoints map[string]int) {
	path, ok := strings.CutPrefix(eg.Bind, registry.UnixAddressPrefix)
	switch {
	case !ok:
		c.errf(p+".bind", "Invalid value: %q: sidecar: ports with 0 value must have a unix domain socket bind address", eg.Bind)
	case unixAddress(path) != "":
		c.errf(p+".bind", "Invalid value: %q: %s", eg.Bind, unixAddress(path))
	case pipes[eg.Bind]:
		c.errf(p+".bind", "Duplicate value: %q: sidecar: unix domain socket values for listeners must be unique", eg.Bind)
	default:
		if i, ok := endpoints[filepath.Clean(path)]; ok {
			c.errf(p+".bind", "Invalid value: %q: sidecar: the egress listener must not bind the unix domain socket spec.ingress[%d].defaultEndpoint forwards inbound traffic to (the application's socket)", eg.Bind, i)
		}
	}
	pipes[eg.Bind] = true
	if eg.CaptureMode != networking.CaptureMode_DEFAULT && eg.CaptureMode != networking.CaptureMode_NONE {
		c.errf(p+".captureMode", "Invalid value: %q: sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners", eg.CaptureMode)
	}
	proto := strings.ToUpper(eg.Port.Protocol)
	if protocols[proto] && !pipeProtocols[proto] {
		c.errf(p+".port.protocol", "%s: %q on a unix domain socket listener (supported: HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB)", Unsupported, eg.Port.Protocol)
	}
}

// pipeProtocols are the protocols a unix domain socket egress listener
// serves (pipeEgress).
var pipeProtocols = map[string]bool{"HTTP": true, "HTTP2": true, "HTTP_PROXY": true, "GRPC": true, "GRPC-WEB": true}

// sidecarPort checks a Sidecar listener port: an optional port name, a
// known protocol, a number 1-65535 (or 0 when pipe: an egress listener on
// a unix domain socket), and no targetPort.
func (c *checker) sidecarPort(p string, port *networking.SidecarPort, pipe bool) {
	if port.Name != "" && !isPortName(port.Name) {
		c.errf(p+".name", "Invalid value: %q: port name must be a DNS-1123 label", port.Name)
	}
	if !protocols[strings.ToUpper(port.Protocol)] {
		c.errf(p+".protocol", "Unsupported value: %q: supported protocols are %s", port.Protocol, protocolList)
	}
	c.port(p+".number", port.Number, pipe)
	if port.TargetPort > 0 {
		c.errf(p+".targetPort", "Invalid value: %d: targetPort has no impact on Sidecars", port.TargetPort)
	}
}

// sidecarTLS checks an ingress listener's tls. As istio.io/api documents
// it, only SIMPLE and MUTUAL are supported; the proxy reads the
// certificates from files (serverCertificate and privateKey, and
// caCertificates for MUTUAL), so credentialName, caCertCredentialName,
// credentialNames and tlsCertificates are refused as Unsupported (loomd
// serves Secrets to gateways only), as is httpsRedirect (a sidecar does
// not redirect). The shared options are a Gateway server's (tlsOptions).
func (c *checker) sidecarTLS(p string, t *networking.ServerTLSSettings) {
	switch t.Mode {
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL:
		if t.ServerCertificate == "" {
			c.errf(p+".serverCertificate", "Required value: %s mode requires a server certificate file", t.Mode)
		}
		if t.PrivateKey == "" {
			c.errf(p+".privateKey", "Required value: %s mode requires a private key file", t.Mode)
		}
		if t.Mode == networking.ServerTLSSettings_MUTUAL && t.CaCertificates == "" {
			c.errf(p+".caCertificates", "Required value: MUTUAL mode requires a caCertificates file")
		}
	default:
		c.errf(p+".mode", `Unsupported value: %q: sidecar ingress tls supports "SIMPLE", "MUTUAL"`, t.Mode)
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"credentialName", t.CredentialName != ""},
		{"caCertCredentialName", t.CaCertCredentialName != ""},
		{"credentialNames", len(t.CredentialNames) > 0},
		{"tlsCertificates", len(t.TlsCertificates) > 0},
	} {
		if f.set {
			c.errf(p+"."+f.name, "%s on a sidecar (use serverCertificate, privateKey and caCertificates files)", Unsupported)
		}
	}
	if t.HttpsRedirect {
		c.errf(p+".httpsRedirect", "Invalid value: true: a sidecar ingress listener does not redirect")
	}
	c.tlsOptions(p, t)
}

// defaultEndpoint checks an ingress listener's defaultEndpoint:
// 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT, :PORT, or
// unix://PATH with PATH as Istio's ValidateUnixAddress takes it
// (unixAddress).
func (c *checker) defaultEndpoint(p, ep string) {
	if path, ok := strings.CutPrefix(ep, registry.UnixAddressPrefix); ok {
		if msg := unixAddress(path); msg != "" {
			c.errf(p, "Invalid value: %q: %s", ep, msg)
		}
		return
	}
	const form = "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset"
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		c.errf(p, "Invalid value: %q: %s", ep, form)
		return
	}
	switch host {
	case "", "127.0.0.1", "0.0.0.0", "::1", "::":
	default:
		c.errf(p, "Invalid value: %q: %s", ep, form)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		c.errf(p, "Invalid value: %q: sidecar: defaultEndpoint port (%s) is not a number", ep, port)
		return
	}
	if n < 1 || n > 65535 {
		c.errf(p, "Invalid value: %q: port must be between 1-65535", ep)
	}
}

// unixAddress checks the path of a unix:// address as Istio's
// ValidateUnixAddress: not empty, and either "@NAME" (Linux's abstract
// namespace) or an absolute path not ending in "/"; and, as loom-proxy
// and Envoy, at most xdsapi.MaxPipePath bytes: the proxy would NACK a
// longer one, and its config would stop updating. It returns the
// problem, or "".
func unixAddress(path string) string {
	switch {
	case path == "":
		return "unix address must not be empty"
	case len(path) > xdsapi.MaxPipePath:
		return fmt.Sprintf("must be at most %d bytes (a unix socket path)", xdsapi.MaxPipePath)
	case strings.HasPrefix(path, "@"):
		return ""
	case !strings.HasPrefix(path, "/") || strings.HasSuffix(path, "/"):
		return path + " is not an absolute path to a file"
	}
	return ""
}

// sidecarHost checks an egress host "namespace/dnsName" as Istio's
// ValidateNamespaceSlashWildcardHostname does for sidecars: namespace "*",
// ".", "~" or a DNS-1123 label; dnsName "*", "*.suffix" or an FQDN (no
// short names, no partial wildcards).
func sidecarHost(h string) string {
	ns, host, ok := strings.Cut(h, "/")
	if !ok {
		return "host must be of form namespace/dnsName"
	}
	if ns == "" || host == "" {
		return "config namespace and dnsName in host entry cannot be empty"
	}
	if ns != "*" && ns != "." && ns != "~" && !isDNS1123Label(ns) {
		return fmt.Sprintf("invalid namespace value %q in sidecar", ns)
	}
	if host == "*" {
		return ""
	}
	if !strings.Contains(host, ".") {
		return "short names (non FQDN) are not allowed"
	}
	if strings.Contains(strings.TrimPrefix(host, "*"), "*") {
		return fmt.Sprintf("partial wildcard %q not allowed", host)
	}
	return wildcardDomain(host)
}

// checkSidecars refuses a second Sidecar without workloadSelector in one
// namespace (Istio's analyzer IST0109 MultipleSidecarsWithoutWorkloadSelectors):
// which one applies would depend on creation time, which Loom does not
// have.
func checkSidecars(rs []*config.Resource) config.Errors {
	var errs config.Errors
	first := map[string]*config.Resource{}
	for _, r := range rs {
		sc, ok := r.Spec.(*networking.Sidecar)
		if !ok || len(sc.GetWorkloadSelector().GetLabels()) > 0 {
			continue
		}
		if f, dup := first[r.Namespace]; dup {
			errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: "spec.workloadSelector",
				Msg: fmt.Sprintf("Required value: Sidecar %s/%s has no workloadSelector either (%s): a namespace has at most one Sidecar without workloadSelector",
					f.Namespace, f.Name, sourceOrUnknown(f.Source))})
			continue
		}
		first[r.Namespace] = r
	}
	return errs
}

package validation

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// kubernetesService checks a Kubernetes core/v1 Service as the API
// server's ValidateService does, for the fields Loom reads, in its words:
// a DNS-1035 name; type ClusterIP, NodePort or LoadBalancer (ExternalName
// is refused: Loom does not serve it); at least one port unless headless;
// each port's number and targetPort 1-65535 (a named targetPort an IANA
// service name), protocol TCP, UDP or SCTP, name a DNS-1123 label,
// required and unique when there are several ports; no two ports with
// the same number and protocol. appProtocol is not checked: Istio reads
// any value, and one it does not know selects no protocol.
func (c *checker) kubernetesService(s *loomv1alpha1.KubernetesService) {
	if !dns1035LabelRE.MatchString(c.r.Name) || len(c.r.Name) > 63 {
		c.errf("metadata.name", "Invalid value: %q: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character", c.r.Name)
	}
	switch s.GetType() {
	case "", "ClusterIP", "NodePort", "LoadBalancer":
	case "ExternalName":
		c.unsupported("spec.type")
	default:
		c.errf("spec.type", `Unsupported value: %q: supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"`, s.GetType())
	}
	headless := s.GetClusterIp() == "None"
	if ip := s.GetClusterIp(); ip != "" && !headless {
		if _, err := netip.ParseAddr(ip); err != nil {
			c.errf("spec.clusterIP", "Invalid value: %q: must be a valid IP address or \"None\"", ip)
		}
	}
	c.labels("spec.selector", s.GetSelector())
	if len(s.GetPorts()) == 0 && !headless && s.GetType() != "ExternalName" {
		c.errf("spec.ports", "Required value")
	}
	type portProto struct {
		port  int32
		proto string
	}
	names := map[string]bool{}
	seen := map[portProto]bool{}
	for i, p := range s.GetPorts() {
		pp := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case p.GetName() == "" && len(s.GetPorts()) > 1:
			c.errf(pp+".name", "Required value")
		case p.GetName() != "" && !isDNS1123Label(p.GetName()):
			c.errf(pp+".name", "Invalid value: %q: must be a DNS-1123 label", p.GetName())
		case p.GetName() != "" && names[p.GetName()]:
			c.errf(pp+".name", "Duplicate value: %q", p.GetName())
		}
		names[p.GetName()] = true
		if p.GetPort() < 1 || p.GetPort() > 65535 {
			c.errf(pp+".port", "Invalid value: %d: must be between 1 and 65535, inclusive", p.GetPort())
		}
		proto := p.GetProtocol()
		switch proto {
		case "":
			proto = "TCP" // the API server's default
		case "TCP", "UDP", "SCTP":
		default:
			c.errf(pp+".protocol", `Unsupported value: %q: supported values: "SCTP", "TCP", "UDP"`, proto)
		}
		if k := (portProto{p.GetPort(), proto}); seen[k] {
			c.errf(pp, "Duplicate value: {port: %d, protocol: %s}", p.GetPort(), proto)
		} else {
			seen[k] = true
		}
		if n := p.GetTargetPortName(); n != "" {
			if !isIANASvcName(n) {
				c.errf(pp+".targetPort", "Invalid value: %q: must be a port number 1-65535 or an IANA service name (at most 15 lower case letters, digits and '-', with a letter, no '--', not starting or ending with '-')", n)
			}
		} else if t := p.GetTargetPort(); t < 0 || t > 65535 {
			c.errf(pp+".targetPort", "Invalid value: %d: must be between 1 and 65535, inclusive", t)
		}
	}
}

var (
	dns1035LabelRE = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	ianaSvcNameRE  = regexp.MustCompile(`^[-a-z0-9]+$`)
	hasLetterRE    = regexp.MustCompile(`[a-z]`)
)

// isIANASvcName is Kubernetes' IsValidPortName: an IANA service name
// (RFC 6335), as a named targetPort must be.
func isIANASvcName(s string) bool {
	return len(s) <= 15 && ianaSvcNameRE.MatchString(s) && hasLetterRE.MatchString(s) &&
		!strings.Contains(s, "--") && s[0] != '-' && s[len(s)-1] != '-'
}

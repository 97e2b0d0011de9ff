package bookinfo

import (
	"bytes"
	"embed"
	"fmt"
	"maps"
	"slices"
)

// MeshFS holds the local-mode mesh config of Bookinfo for the default subnet
// 127.0.0.0/24: mesh/services.yaml (a ServiceEntry per service) and
// mesh/workloads.yaml (a WorkloadEntry per workload). The ingress Gateway and
// its VirtualService are Istio's bookinfo-gateway.yaml, used unchanged.
//
//go:embed mesh/*.yaml
var MeshFS embed.FS

// ServicePort is the port every Bookinfo service and app listens on.
const ServicePort = 9080

// Namespace is the namespace of every Bookinfo resource.
const Namespace = "default"

// Services lists the Bookinfo services in the order of services.yaml.
var Services = []string{"productpage", "details", "reviews", "ratings"}

// Workload is one Bookinfo workload in local mode: one app process and its
// sidecar on the loopback address SUBNET.HostOctet.
type Workload struct {
	Name           string // WorkloadEntry name and proxy --name: "reviews-v2"
	App            string // app label and service: "reviews"
	Version        string // version label: "v2"
	HostOctet      int    // last octet of the address: 14 for 127.0.0.14
	ServiceAccount string // "bookinfo-reviews"
}

// Address returns the workload's address in the /24 whose first three
// octets and trailing dot are subnetPrefix ("127.0.0.").
func (w Workload) Address(subnetPrefix string) string {
	return fmt.Sprintf("%s%d", subnetPrefix, w.HostOctet)
}

// Labels returns the workload's labels as written in its WorkloadEntry.
func (w Workload) Labels() map[string]string {
	return map[string]string{"app": w.App, "version": w.Version, "security.istio.io/tlsMode": "istio"}
}

// Workloads lists the Bookinfo workloads in the order of workloads.yaml.
var Workloads = []Workload{
	{Name: "productpage-v1", App: "productpage", Version: "v1", HostOctet: 11, ServiceAccount: "bookinfo-productpage"},
	{Name: "details-v1", App: "details", Version: "v1", HostOctet: 12, ServiceAccount: "bookinfo-details"},
	{Name: "reviews-v1", App: "reviews", Version: "v1", HostOctet: 13, ServiceAccount: "bookinfo-reviews"},
	{Name: "reviews-v2", App: "reviews", Version: "v2", HostOctet: 14, ServiceAccount: "bookinfo-reviews"},
	{Name: "reviews-v3", App: "reviews", Version: "v3", HostOctet: 15, ServiceAccount: "bookinfo-reviews"},
	{Name: "ratings-v1", App: "ratings", Version: "v1", HostOctet: 16, ServiceAccount: "bookinfo-ratings"},
}

// WorkloadEntriesYAML renders the WorkloadEntries of Workloads for the /24
// whose first three octets and trailing dot are subnetPrefix ("127.42.0.").
// WorkloadEntriesYAML("127.0.0.") is mesh/workloads.yaml byte for byte.
func WorkloadEntriesYAML(subnetPrefix string) []byte {
	return WorkloadEntriesYAMLAnnotated(subnetPrefix, nil)
}

// WorkloadEntriesYAMLAnnotated is WorkloadEntriesYAML with annotations in
// every entry's metadata, sorted by key (nil: none), e.g. Istio's
// sidecar.istio.io/interceptionMode: REDIRECT for workloads whose sidecar
// iptables feeds.
func WorkloadEntriesYAMLAnnotated(subnetPrefix string, annotations map[string]string) []byte {
	var b bytes.Buffer
	var meta bytes.Buffer
	if len(annotations) > 0 {
		meta.WriteString("  annotations:\n")
		for _, k := range slices.Sorted(maps.Keys(annotations)) {
			fmt.Fprintf(&meta, "    %s: %s\n", k, annotations[k])
		}
		b.WriteString("# Bookinfo workloads in local mode, each in its own network namespace.\n")
		b.WriteString("# The label security.istio.io/tlsMode: istio marks a workload with a sidecar.\n")
	} else {
		b.WriteString("# Bookinfo workloads in local mode: one loopback address per workload.\n")
		b.WriteString("# The label security.istio.io/tlsMode: istio marks a workload with a sidecar,\n")
		b.WriteString("# so peers reach it on its sidecar's inbound port 15006.\n")
	}
	for i, w := range Workloads {
		if i > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: %s
  namespace: %s
%s  labels:
    app: %s
    version: %s
spec:
  address: %s
  labels:
    app: %s
    version: %s
    security.istio.io/tlsMode: istio
  serviceAccount: %s
`, w.Name, Namespace, meta.String(), w.App, w.Version, w.Address(subnetPrefix), w.App, w.Version, w.ServiceAccount)
	}
	return b.Bytes()
}

package registry

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"istio.io/api/annotation"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// DomainSuffix is the cluster's DNS domain: a Kubernetes Service NAME in
// NAMESPACE is the host NAME.NAMESPACE.svc.DomainSuffix, as Istio's
// kube registry names it (its default domain suffix).
const DomainSuffix = "cluster.local"

// KubeServiceHostname is the host of the Kubernetes Service name in ns:
// "reviews.default.svc.cluster.local".
func KubeServiceHostname(name, ns string) string {
	return name + "." + ns + ".svc." + DomainSuffix
}

// KubeExportTo is a Kubernetes Service's exportTo: its
// networking.istio.io/exportTo annotation split at commas, each entry
// trimmed, as Istio's ConvertService reads it; nil (every namespace) when
// the annotation is absent or empty. Entries mean what a ServiceEntry's
// spec.exportTo entries mean, "~" included.
func KubeExportTo(annotations map[string]string) []string {
	v := annotations[annotation.NetworkingExportTo.Name]
	if v == "" {
		return nil
	}
	out := strings.Split(v, ",")
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	return out
}

// kubeServices converts the Kubernetes Services of snap as Istio's kube
// registry does (pilot/pkg/serviceregistry/kube ConvertService): one
// service NAME.NAMESPACE.svc.cluster.local per Service, its ports'
// protocols chosen by KubernetesProtocol, its clusterIP as its address.
//
// Its instances are the WorkloadEntries of its namespace whose labels
// contain spec.selector, as Istio's kube registry makes WorkloadEntries
// selected by a Service its endpoints. A Service with no selector has no
// instances here: on Kubernetes its endpoints come from EndpointSlices
// (or Endpoints) written by hand, which local mode does not read.
//
// type ExternalName is refused by validation and skipped here.
func kubeServices(snap *config.Snapshot, workloads []*Workload) []*Service {
	var out []*Service
	for _, r := range snap.List(config.KindService) {
		ks, ok := r.Spec.(*loomv1alpha1.KubernetesService)
		if !ok || ks.GetType() == "ExternalName" {
			continue
		}
		var ports []Port
		// named maps a port number to the targetPort name of the first
		// Service port of that number that has one.
		named := map[uint32]string{}
		for _, p := range ks.GetPorts() {
			n := uint32(p.GetPort())
			if name := p.GetTargetPortName(); name != "" {
				if _, ok := named[n]; !ok {
					named[n] = name
				}
			}
			if n == 0 || n > 65535 || slices.ContainsFunc(ports, func(q Port) bool { return q.Number == n }) {
				continue
			}
			target := uint32(p.GetTargetPort())
			if target == 0 {
				target = n
			}
			ports = append(ports, Port{
				Number:     n,
				Name:       p.GetName(),
				Protocol:   KubernetesProtocol(n, p.GetName(), p.GetProtocol(), p.GetAppProtocol()),
				TargetPort: target,
			})
		}
		slices.SortFunc(ports, func(a, b Port) int { return cmp.Compare(a.Number, b.Number) })
		instances := kubeInstances(r.Namespace, ks.GetSelector(), ports, named, workloads)
		svc := &Service{
			Hostname:   KubeServiceHostname(r.Name, r.Namespace),
			Namespace:  r.Namespace,
			Source:     r.Key(),
			Ports:      ports,
			Resolution: networking.ServiceEntry_STATIC,
			Location:   networking.ServiceEntry_MESH_INTERNAL,
			Instances:  instances,
			Accounts:   serviceAccounts(instances, r.Namespace),
		}
		if ip := ks.GetClusterIp(); ip == "None" {
			// Headless: Istio's Passthrough, the client's own address.
			svc.Resolution = networking.ServiceEntry_NONE
		} else if _, err := netip.ParseAddr(ip); err == nil {
			svc.Addresses = []string{ip}
		}
		out = append(out, svc)
	}
	return out
}

// kubeInstances are the instances of a Kubernetes Service: per selected
// WorkloadEntry and service port, the endpoint port is, as in Istio's
// kube registry (serviceInstanceFromWorkloadInstance):
//   - for a named targetPort, the entry's ports[targetPort]; an entry
//     without that name is no endpoint of that port;
//   - for a numbered (or defaulted) targetPort, the entry's
//     ports[service port name] when it has one, else targetPort.
//
// named maps a service port number to its targetPort name, if any.
func kubeInstances(ns string, sel map[string]string, ports []Port, named map[uint32]string, workloads []*Workload) []*Instance {
	if len(sel) == 0 {
		return nil
	}
	var out []*Instance
	for _, w := range workloads {
		if w.Namespace != ns || !LabelsContain(w.Labels, sel) {
			continue
		}
		e := workloadInstance(w)
		for _, p := range ports {
			target := p.TargetPort
			if name, ok := named[p.Number]; ok {
				if target = w.Ports[name]; target == 0 {
					continue
				}
			} else if n := w.Ports[p.Name]; n != 0 && p.Name != "" {
				target = n
			}
			out = append(out, e.at(p, target))
		}
	}
	sortInstances(out)
	return out
}

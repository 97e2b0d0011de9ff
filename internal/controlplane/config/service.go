package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"

	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// decodeService reads a Kubernetes Service document (apiVersion v1) with
// k8s.io/api's core/v1 Service type, strictly: every field Kubernetes has
// is accepted (clusterIP, sessionAffinity, ipFamilies, status, ...), a field
// it does not have is refused with its path ("spec.ports[0].nmae"), as
// kubectl's server-side field validation does. What Loom reads is kept in
// a *loomv1alpha1.KubernetesService.
func decodeService(src Source, obj map[string]any, key Key) (*Resource, error) {
	fail := func(field, format string, args ...any) error {
		return &Error{Source: src, Key: key, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, fail("", "%v", err)
	}
	var svc corev1.Service
	strict, err := kjson.UnmarshalStrict(js, &svc)
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fail(te.Field, "must be %s, not %s", kubeTypeName(te.Type.String()), te.Value)
		}
		return nil, fail("", "%v", err)
	}
	if len(strict) > 0 {
		// sigs.k8s.io/json words it `unknown field "spec.ports[0].nmae"`.
		msg := strict[0].Error()
		if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
			return nil, fail(strings.Trim(f, `"`), "unknown field")
		}
		return nil, fail("", "%s", msg)
	}
	if key.Name == "" {
		return nil, fail("metadata.name", "required")
	}
	return &Resource{
		Kind: KindService, APIVersion: "v1", Name: key.Name, Namespace: key.Namespace, Source: src,
		Labels: svc.Labels, Annotations: svc.Annotations,
		Spec: serviceFromKube(&svc.Spec),
	}, nil
}

// kubeTypeName names a Go type of k8s.io/api in a schema's words.
func kubeTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case t == "string", strings.HasSuffix(t, "Protocol"), strings.HasSuffix(t, "Type"):
		return "a string"
	case t == "bool":
		return "a boolean"
	case strings.HasPrefix(t, "map["):
		return "a map"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	}
	return "an object"
}

func serviceFromKube(s *corev1.ServiceSpec) *loomv1alpha1.KubernetesService {
	out := &loomv1alpha1.KubernetesService{
		Type:         string(s.Type),
		ClusterIp:    s.ClusterIP,
		Selector:     s.Selector,
		ExternalName: s.ExternalName,
	}
	for _, p := range s.Ports {
		lp := &loomv1alpha1.KubernetesServicePort{
			Name:     p.Name,
			Protocol: string(p.Protocol),
			Port:     p.Port,
			NodePort: p.NodePort,
		}
		if p.AppProtocol != nil {
			lp.AppProtocol = *p.AppProtocol
		}
		if p.TargetPort.Type == intstr.String {
			lp.TargetPortName = p.TargetPort.StrVal
		} else {
			lp.TargetPort = p.TargetPort.IntVal
		}
		out.Ports = append(out.Ports, lp)
	}
	return out
}

// serviceToKube is serviceFromKube's inverse, for encodeResource.
func serviceToKube(s *loomv1alpha1.KubernetesService) map[string]any {
	spec := corev1.ServiceSpec{
		Type:         corev1.ServiceType(s.GetType()),
		ClusterIP:    s.GetClusterIp(),
		Selector:     s.GetSelector(),
		ExternalName: s.GetExternalName(),
	}
	for _, p := range s.GetPorts() {
		kp := corev1.ServicePort{
			Name:     p.GetName(),
			Protocol: corev1.Protocol(p.GetProtocol()),
			Port:     p.GetPort(),
			NodePort: p.GetNodePort(),
		}
		if p.GetAppProtocol() != "" {
			ap := p.GetAppProtocol()
			kp.AppProtocol = &ap
		}
		switch {
		case p.GetTargetPortName() != "":
			kp.TargetPort = intstr.FromString(p.GetTargetPortName())
		case p.GetTargetPort() != 0:
			kp.TargetPort = intstr.FromInt32(p.GetTargetPort())
		}
		spec.Ports = append(spec.Ports, kp)
	}
	js, _ := json.Marshal(spec) // a ServiceSpec always marshals
	var m map[string]any
	_ = json.Unmarshal(js, &m)
	return m
}

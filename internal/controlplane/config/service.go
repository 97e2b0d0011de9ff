package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
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
			// encoding/json's path has no list indexes ("spec.ports.port"):
			// find the value it means in the document to name it fully.
			field := te.Field
			if p, ok := indexedPath(obj, strings.Split(te.Field, "."), "", te.Value); ok {
				field = p
			}
			want := kubeTypeName(te.Type)
			if strings.HasSuffix(te.Field, ".targetPort") {
				want = "a port number or name" // intstr.IntOrString
			}
			return nil, fail(field, "must be %s, not %s", want, te.Value)
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

// indexedPath finds the first value at the dotted path segs of v (lists
// walked with their indexes) whose JSON kind is what encoding/json's
// UnmarshalTypeError.Value says ("string", "number 1.5", "object", ...),
// and returns its path with indexes: "spec.ports[1].port",
// "spec.selector[app]".
func indexedPath(v any, segs []string, prefix, jsonValue string) (string, bool) {
	if len(segs) == 0 {
		kind, _, _ := strings.Cut(jsonValue, " ")
		if jsonKind(v) == kind {
			return prefix, true
		}
		switch t := v.(type) {
		case []any:
			for i, e := range t {
				if p, ok := indexedPath(e, nil, fmt.Sprintf("%s[%d]", prefix, i), jsonValue); ok {
					return p, true
				}
			}
		case map[string]any:
			for _, k := range sortedKeys(t) {
				if p, ok := indexedPath(t[k], nil, fmt.Sprintf("%s[%s]", prefix, k), jsonValue); ok {
					return p, true
				}
			}
		}
		return "", false
	}
	switch t := v.(type) {
	case []any:
		for i, e := range t {
			if p, ok := indexedPath(e, segs, fmt.Sprintf("%s[%d]", prefix, i), jsonValue); ok {
				return p, true
			}
		}
	case map[string]any:
		if e, ok := t[segs[0]]; ok {
			next := segs[0]
			if prefix != "" {
				next = prefix + "." + segs[0]
			}
			return indexedPath(e, segs[1:], next, jsonValue)
		}
	}
	return "", false
}

// jsonKind is the JSON kind of a decoded YAML value, in encoding/json's
// words.
func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return "number"
}

// kubeTypeName names a Go type of k8s.io/api in a schema's words.
func kubeTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Map:
		return "a map"
	case reflect.Slice, reflect.Array:
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

package config

import (
	"encoding/base64"
	"fmt"
	"strings"

	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// decodeSecret reads a Kubernetes Secret document (apiVersion v1): its
// type, data (base64, as Kubernetes writes it), stringData (merged over
// data, as the API server does) and immutable. It never puts a value in an
// error: errors name the key only, since a Secret's values are keys and
// certificates.
func decodeSecret(src Source, obj map[string]any, key Key, md map[string]any) (*Resource, error) {
	fail := func(field, format string, args ...any) error {
		return &Error{Source: src, Key: key, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	for k := range obj {
		switch k {
		case "apiVersion", "kind", "metadata", "type", "data", "stringData", "immutable":
		default:
			return nil, fail(k, "unknown field")
		}
	}
	if key.Name == "" {
		return nil, fail("metadata.name", "required")
	}
	r := &Resource{Kind: KindSecret, APIVersion: "v1", Name: key.Name, Namespace: key.Namespace, Source: src}
	var err error
	if r.Labels, err = stringMap(md["labels"]); err != nil {
		return nil, fail("metadata.labels", "%v", err)
	}
	if r.Annotations, err = stringMap(md["annotations"]); err != nil {
		return nil, fail("metadata.annotations", "%v", err)
	}
	spec := &loomv1alpha1.KubernetesSecret{Data: map[string][]byte{}}
	if v, ok := obj["type"]; ok && v != nil {
		t, ok := v.(string)
		if !ok {
			return nil, fail("type", "must be a string")
		}
		spec.Type = t
	}
	if v, ok := obj["immutable"]; ok && v != nil {
		b, ok := v.(bool)
		if !ok {
			return nil, fail("immutable", "must be a boolean")
		}
		spec.Immutable = b
	}
	if v, ok := obj["data"]; ok && v != nil {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fail("data", "must be a map of key to base64 value")
		}
		for k, raw := range m {
			s, ok := raw.(string)
			if !ok {
				return nil, fail("data["+k+"]", "must be a base64 string (value not shown)")
			}
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
			if err != nil {
				return nil, fail("data["+k+"]", "invalid base64 (value not shown); put PEM text under stringData instead")
			}
			spec.Data[k] = b
		}
	}
	if v, ok := obj["stringData"]; ok && v != nil {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fail("stringData", "must be a map of key to string")
		}
		for k, raw := range m {
			s, ok := raw.(string)
			if !ok {
				return nil, fail("stringData["+k+"]", "must be a string (value not shown)")
			}
			spec.Data[k] = []byte(s)
		}
	}
	r.Spec = spec
	return r, nil
}

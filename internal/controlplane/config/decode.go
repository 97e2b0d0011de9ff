package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Decode reads every document of a Kubernetes-style multi-document YAML
// file. file names the source in errors and in each Resource's Source.
//
// It returns the resources it could read and an error per document it could
// not: malformed YAML, an unknown apiVersion or kind, a missing name, or an
// unknown field (named by its path, as "spec.http[0].rout"). After a YAML
// syntax error the rest of the file is not read. Empty documents are
// skipped. A document with no namespace gets DefaultNamespace.
//
// Decode does not validate field values; see package validation.
func Decode(file string, data []byte) ([]*Resource, Errors) {
	var out []*Resource
	var errs Errors
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, &Error{Source: Source{File: file}, Msg: "malformed YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")})
			break
		}
		if len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
			continue
		}
		src := Source{File: file, Line: doc.Content[0].Line}
		r, err := decodeDoc(src, doc.Content[0])
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				e = &Error{Source: src, Msg: err.Error()}
			}
			errs = append(errs, e)
			continue
		}
		out = append(out, r)
	}
	return out, errs
}

// DecodeObject decodes one document already read into a generic map (the
// shape json.Unmarshal or yaml.Unmarshal give), as Decode does for each
// document of a file.
func DecodeObject(src Source, obj map[string]any) (*Resource, error) {
	return decodeMap(src, obj)
}

func decodeDoc(src Source, n *yaml.Node) (*Resource, error) {
	if n.Kind != yaml.MappingNode {
		return nil, &Error{Source: src, Msg: "document is not a mapping with apiVersion, kind, metadata and spec"}
	}
	var raw any
	if err := n.Decode(&raw); err != nil {
		return nil, &Error{Source: src, Msg: "malformed YAML: " + err.Error()}
	}
	obj, _ := normalize(raw).(map[string]any)
	return decodeMap(src, obj)
}

func decodeMap(src Source, obj map[string]any) (*Resource, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kindStr, _ := obj["kind"].(string)
	if kindStr == "" {
		return nil, &Error{Source: src, Field: "kind", Msg: "required"}
	}
	kind := Kind(kindStr)
	md, _ := obj["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	ns, _ := md["namespace"].(string)
	if ns == "" {
		ns = DefaultNamespace
	}
	key := Key{Kind: kind, Namespace: ns, Name: name}
	fail := func(field, format string, args ...any) error {
		return &Error{Source: src, Key: key, Field: field, Msg: fmt.Sprintf(format, args...)}
	}

	info, ok := kinds[kind]
	if !ok {
		return nil, fail("kind", "unknown kind %q: Loom reads %s", kindStr, kindList())
	}
	if kind == KindSecret {
		if apiVersion != "v1" {
			return nil, fail("apiVersion", "%q: Secret is served as v1", apiVersion)
		}
		return decodeSecret(src, obj, key, md)
	}
	if kind == KindService {
		if apiVersion != "v1" {
			return nil, fail("apiVersion", "%q: Service is served as v1", apiVersion)
		}
		return decodeService(src, obj, key)
	}
	group, version, _ := strings.Cut(apiVersion, "/")
	if group != info.group || !contains(info.versions, version) {
		return nil, fail("apiVersion", "%q: %s is served as %s/{%s}", apiVersion, kind, info.group, strings.Join(info.versions, ","))
	}
	for k := range obj {
		switch k {
		case "apiVersion", "kind", "metadata", "spec", "status":
		default:
			return nil, fail(k, "unknown field")
		}
	}
	if name == "" {
		return nil, fail("metadata.name", "required")
	}
	r := &Resource{Kind: kind, APIVersion: apiVersion, Name: name, Namespace: ns, Source: src}
	var err error
	if r.Labels, err = stringMap(md["labels"]); err != nil {
		return nil, fail("metadata.labels", "%v", err)
	}
	if r.Annotations, err = stringMap(md["annotations"]); err != nil {
		return nil, fail("metadata.annotations", "%v", err)
	}

	spec := info.newSpec()
	rawSpec := obj["spec"]
	if rawSpec == nil {
		rawSpec = map[string]any{}
	}
	if path, msg := checkFields("spec", rawSpec, spec.ProtoReflect().Descriptor()); path != "" {
		return nil, fail(path, "%s", msg)
	}
	js, err := json.Marshal(rawSpec)
	if err != nil {
		return nil, fail("spec", "%v", err)
	}
	if err := protojson.Unmarshal(js, spec); err != nil {
		return nil, fail("spec", "%s", ProtoErrorText(err))
	}
	r.Spec = spec
	return r, nil
}

// checkFields walks v against the message descriptor md and returns the
// path of the first field md does not have, or of a value of the wrong
// shape, so that the error points at the line a user must fix (protojson
// alone says only 'unknown field "x"', and refuses two members of one
// oneof, such as loadBalancer's simple and consistentHash, at path "spec").
// Well-known types are left to
// protojson, except that Go-style durations are rewritten in place
// (protoDuration).
func checkFields(path string, v any, md protoreflect.MessageDescriptor) (string, string) {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return "", ""
	}
	m, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			return "", ""
		}
		return path, fmt.Sprintf("must be an object, not %s", describe(v))
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// oneofSet is the key that set each oneof so far. A null member sets
	// nothing (protojson skips it, so Istio accepts `simple:` left empty
	// beside `consistentHash`).
	var oneofSet map[protoreflect.FullName]string
	for _, k := range keys {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(k))
		}
		fp := path + "." + k
		if fd == nil {
			return fp, "unknown field"
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && m[k] != nil {
			if prev, ok := oneofSet[od.FullName()]; ok {
				return path, fmt.Sprintf("Invalid value: %s and %s are both set: only one of %s may be set", prev, k, oneofNames(od))
			}
			if oneofSet == nil {
				oneofSet = map[protoreflect.FullName]string{}
			}
			oneofSet[od.FullName()] = k
		}
		val := m[k]
		switch {
		case fd.IsMap():
			mm, ok := val.(map[string]any)
			if !ok {
				if val == nil {
					continue
				}
				return fp, fmt.Sprintf("must be a map, not %s", describe(val))
			}
			if msg, ok := minProperties[fd.FullName()]; ok && len(mm) == 0 {
				return fp, msg
			}
			if p, msg := checkMapKeys(fp, mm, fd.MapKey()); p != "" {
				return p, msg
			}
			if fd.MapValue().Kind() == protoreflect.EnumKind {
				for _, k := range sortedKeys(mm) {
					if p, msg := checkEnum(fmt.Sprintf("%s[%s]", fp, k), mm[k], fd.MapValue().Enum()); p != "" {
						return p, msg
					}
				}
			}
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				mk := make([]string, 0, len(mm))
				for k := range mm {
					mk = append(mk, k)
				}
				sort.Strings(mk)
				for _, k := range mk {
					if p, msg := checkFields(fmt.Sprintf("%s[%s]", fp, k), mm[k], fd.MapValue().Message()); p != "" {
						return p, msg
					}
				}
			}
		case fd.IsList():
			l, ok := val.([]any)
			if !ok {
				if val == nil {
					continue
				}
				return fp, fmt.Sprintf("must be a list, not %s", describe(val))
			}
			for i, e := range l {
				ep := fmt.Sprintf("%s[%d]", fp, i)
				switch {
				case fd.Kind() == protoreflect.MessageKind && e == nil:
					// Kubernetes' schema refuses a null list item ("in body
					// must be of type object"); protojson would only say
					// "unexpected token null" about the whole spec.
					return ep, `Invalid value: "null": must be of type object`
				case fd.Kind() == protoreflect.MessageKind:
					if p, msg := checkFields(ep, e, fd.Message()); p != "" {
						return p, msg
					}
				case fd.Kind() == protoreflect.EnumKind:
					if p, msg := checkEnum(ep, e, fd.Enum()); p != "" {
						return p, msg
					}
				}
			}
		case fd.Kind() == protoreflect.EnumKind:
			if p, msg := checkEnum(fp, val, fd.Enum()); p != "" {
				return p, msg
			}
		case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Duration":
			if s, ok := val.(string); ok {
				d := protoDuration(s)
				if !isProtoDuration(d) {
					// Istio's CRDs give every duration this rule and message.
					return fp, fmt.Sprintf("Invalid value: %q: must be a valid duration greater than 1ms", s)
				}
				m[k] = d
			}
		case fd.Kind() == protoreflect.MessageKind:
			if p, msg := checkFields(fp, val, fd.Message()); p != "" {
				return p, msg
			}
		}
	}
	return "", ""
}

// oneofNames lists the JSON names of oneof od's fields: "a, b or c".
func oneofNames(od protoreflect.OneofDescriptor) string {
	n := od.Fields().Len()
	names := make([]string, n)
	for i := range n {
		names[i] = od.Fields().Get(i).JSONName()
	}
	if n < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:n-1], ", ") + " or " + names[n-1]
}

// minProperties are the map fields whose CRD schema says
// MinProperties=1: written as an empty map ({}) they are refused, where
// protojson alone would take {} as unset.
var minProperties = map[protoreflect.FullName]string{
	"istio.security.v1beta1.PeerAuthentication.port_level_mtls": "Invalid value: {}: port level mTLS, if defined, must have at least one element",
}

// checkEnum refuses an enum value written as a name the enum does not
// have, with the Kubernetes schema's words ('Unsupported value: "BLAH":
// supported values: ...'); numbers and other shapes are left to protojson.
func checkEnum(path string, v any, ed protoreflect.EnumDescriptor) (string, string) {
	s, ok := v.(string)
	if !ok || ed.Values().ByName(protoreflect.Name(s)) != nil {
		return "", ""
	}
	names := make([]string, ed.Values().Len())
	for i := range names {
		names[i] = strconv.Quote(string(ed.Values().Get(i).Name()))
	}
	return path, fmt.Sprintf("Unsupported value: %q: supported values: %s", s, strings.Join(names, ", "))
}

// checkMapKeys refuses a key of an integer-keyed map (PeerAuthentication's
// portLevelMtls) that is not a number of the key's type, with the
// Kubernetes schema's words.
func checkMapKeys(path string, m map[string]any, kd protoreflect.FieldDescriptor) (string, string) {
	bits := 0
	signed := false
	switch kd.Kind() {
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		bits = 32
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		bits = 64
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		bits, signed = 32, true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		bits, signed = 64, true
	default:
		return "", ""
	}
	for _, k := range sortedKeys(m) {
		var err error
		if signed {
			_, err = strconv.ParseInt(k, 10, bits)
		} else {
			_, err = strconv.ParseUint(k, 10, bits)
		}
		if err != nil {
			return fmt.Sprintf("%s[%s]", path, k), fmt.Sprintf("Invalid value: %q: type conversion error from string to %s", k, kd.Kind())
		}
	}
	return "", ""
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// protoDuration rewrites a Go-style duration ("3m", "1h30m", "8ms") to
// protojson's seconds form ("180s"), because Istio's own decoder
// (jsonpb's time.ParseDuration) accepts both and its tasks use the Go
// style. Anything else is returned as it is, for protojson to judge.
func protoDuration(s string) string {
	if strings.HasSuffix(s, "s") && !strings.HasSuffix(s, "ms") && !strings.HasSuffix(s, "us") && !strings.HasSuffix(s, "ns") && !strings.HasSuffix(s, "µs") {
		if _, err := strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64); err == nil {
			return s // already protojson's form
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// isProtoDuration reports whether s is protojson's form of a
// google.protobuf.Duration: decimal seconds with an "s" suffix.
func isProtoDuration(s string) bool {
	num, ok := strings.CutSuffix(s, "s")
	if !ok || num == "" || strings.ContainsAny(num, "eE") {
		return false
	}
	_, err := strconv.ParseFloat(num, 64)
	return err == nil
}

func describe(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a number"
}

// normalize turns the map[any]any that YAML gives for non-string keys into
// map[string]any, so the document can be marshalled to JSON.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = normalize(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = normalize(e)
		}
		return t
	}
	return v
}

func stringMap(v any) (map[string]string, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("must be a map of strings, not %s", describe(v))
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%s: must be a string, not %s", k, describe(e))
		}
		out[k] = s
	}
	return out, nil
}

// ProtoErrorText is a protojson error without its "proto: (line L:C): "
// prefix, whose offset is into JSON Loom made rather than the user's file
// and whose spacing protojson varies on purpose from run to run.
func ProtoErrorText(err error) string {
	s := err.Error()
	rest, ok := strings.CutPrefix(s, "proto:")
	if !ok {
		return s
	}
	rest = strings.TrimLeft(rest, " \u00a0")
	if strings.HasPrefix(rest, "(line") {
		if _, after, found := strings.Cut(rest, "): "); found {
			return after
		}
	}
	return rest
}

func kindList() string {
	ks := Kinds()
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

func contains(l []string, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

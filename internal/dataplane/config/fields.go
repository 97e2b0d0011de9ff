package config

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// onlyFields refuses the first field set in m whose name is not in
// allowed, as "path.field: not supported": a message this version reads
// only in part is never half-applied by ignoring what it cannot serve.
// Fields are visited in field-number order, so the error is stable. A nil
// m has no field set.
func onlyFields(path string, m proto.Message, allowed ...string) error {
	if m == nil {
		return nil
	}
	r := m.ProtoReflect()
	if !r.IsValid() {
		return nil
	}
	var (
		bad    protoreflect.FieldDescriptor
		badVal protoreflect.Value
	)
	r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if slices.Contains(allowed, string(fd.Name())) {
			return true
		}
		if bad == nil || fd.Number() < bad.Number() {
			bad, badVal = fd, v
		}
		return true
	})
	if bad == nil {
		return nil
	}
	p := string(bad.Name())
	if path != "" {
		p = path + "." + p
	}
	if bad.IsList() || bad.IsMap() {
		return ferr(p, "not supported")
	}
	switch bad.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return ferr(p, "not supported")
	case protoreflect.EnumKind:
		if ev := bad.Enum().Values().ByNumber(badVal.Enum()); ev != nil {
			return verr(p, string(ev.Name()), "not supported")
		}
	case protoreflect.BytesKind:
		return ferr(p, "not supported")
	}
	return verr(p, fmt.Sprint(badVal.Interface()), "not supported")
}

package matcher

import (
	"fmt"
	"math"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Metadata is Envoy's dynamic metadata as filters keep it: one namespace
// per filter name, holding values as encoding/json decodes them
// (map[string]any, []any, string, float64, bool, nil). It is the shape of
// filter.State.Metadata.
type Metadata = map[string]map[string]any

// valueKind says what a Value matches.
type valueKind uint8

const (
	valueNull valueKind = iota
	valueDouble
	valueString
	valueBool
	valuePresent
	valueList
	valueOr
)

// Value is a compiled envoy.type.matcher.v3.ValueMatcher. It is immutable
// and safe for concurrent use.
type Value struct {
	kind valueKind
	// Double: exact (when isRange is false) or [start, end).
	exact, start, end float64
	isRange           bool
	str               String
	b                 bool    // Bool, Present
	elem              *Value  // List: one_of
	or                []Value // Or
}

// NewValue compiles m. It fails on a matcher without a pattern or with an
// invalid string or regex; the error names the field within m.
func NewValue(m *matcherv3.ValueMatcher) (Value, error) {
	var v Value
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		v.kind = valueNull
	case *matcherv3.ValueMatcher_DoubleMatch:
		v.kind = valueDouble
		switch d := p.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Exact:
			v.exact = d.Exact
		case *matcherv3.DoubleMatcher_Range:
			v.isRange, v.start, v.end = true, d.Range.GetStart(), d.Range.GetEnd()
		default:
			return v, fmt.Errorf("double_match.match_pattern: must be range or exact")
		}
	case *matcherv3.ValueMatcher_StringMatch:
		s, err := NewString(p.StringMatch)
		if err != nil {
			return v, fmt.Errorf("string_match.%w", err)
		}
		v.kind, v.str = valueString, s
	case *matcherv3.ValueMatcher_BoolMatch:
		v.kind, v.b = valueBool, p.BoolMatch
	case *matcherv3.ValueMatcher_PresentMatch:
		v.kind, v.b = valuePresent, p.PresentMatch
	case *matcherv3.ValueMatcher_ListMatch:
		one, ok := p.ListMatch.GetMatchPattern().(*matcherv3.ListMatcher_OneOf)
		if !ok {
			return v, fmt.Errorf("list_match.match_pattern: must be one_of")
		}
		e, err := NewValue(one.OneOf)
		if err != nil {
			return v, fmt.Errorf("list_match.one_of.%w", err)
		}
		v.kind, v.elem = valueList, &e
	case *matcherv3.ValueMatcher_OrMatch:
		if len(p.OrMatch.GetValueMatchers()) < 2 {
			return v, fmt.Errorf("or_match.value_matchers: must have at least 2 matchers")
		}
		v.kind = valueOr
		for i, vm := range p.OrMatch.GetValueMatchers() {
			e, err := NewValue(vm)
			if err != nil {
				return v, fmt.Errorf("or_match.value_matchers[%d].%w", i, err)
			}
			v.or = append(v.or, e)
		}
	default:
		return v, fmt.Errorf("match_pattern: must be null_match, double_match, string_match, bool_match, present_match, list_match or or_match")
	}
	return v, nil
}

// missing is the value of a metadata path that does not exist: Envoy's
// Value with no kind set, which only an inverted matcher matches.
type missing struct{}

// Match reports whether x, a value as encoding/json decodes it, matches,
// as Envoy's ValueMatcher does for a google.protobuf.Value: a string
// matcher matches only strings, a double matcher only numbers, a list
// matcher a list with any element matching.
func (v *Value) Match(x any) bool {
	switch v.kind {
	case valueNull:
		return x == nil
	case valueDouble:
		f, ok := number(x)
		if !ok {
			return false
		}
		if v.isRange {
			return v.start <= f && f < v.end
		}
		return f == v.exact
	case valueString:
		s, ok := x.(string)
		return ok && v.str.Match(s)
	case valueBool:
		b, ok := x.(bool)
		return ok && b == v.b
	case valuePresent:
		_, absent := x.(missing)
		return v.b && !absent
	case valueList:
		l, ok := x.([]any)
		if !ok {
			return false
		}
		for _, e := range l {
			if v.elem.Match(e) {
				return true
			}
		}
		return false
	case valueOr:
		for i := range v.or {
			if v.or[i].Match(x) {
				return true
			}
		}
	}
	return false
}

func number(x any) (float64, bool) {
	switch n := x.(type) {
	case float64:
		return n, !math.IsNaN(n)
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	}
	return 0, false
}

// MetadataMatch is a compiled envoy.type.matcher.v3.MetadataMatcher: the
// value at Path (keys into nested objects) of namespace Filter must match
// Value, the result inverted by Invert.
type MetadataMatch struct {
	Filter string
	Path   []string
	Value  Value
	Invert bool
}

// NewMetadata compiles m. It fails on an empty filter or path, a path
// segment that is not a key, or an invalid value matcher.
func NewMetadata(m *matcherv3.MetadataMatcher) (MetadataMatch, error) {
	mm := MetadataMatch{Filter: m.GetFilter(), Invert: m.GetInvert()}
	if mm.Filter == "" {
		return mm, fmt.Errorf("filter: must not be empty")
	}
	if len(m.GetPath()) == 0 {
		return mm, fmt.Errorf("path: must not be empty")
	}
	for i, seg := range m.GetPath() {
		k, ok := seg.GetSegment().(*matcherv3.MetadataMatcher_PathSegment_Key)
		if !ok || k.Key == "" {
			return mm, fmt.Errorf("path[%d].key: must be set", i)
		}
		mm.Path = append(mm.Path, k.Key)
	}
	if m.GetValue() == nil {
		return mm, fmt.Errorf("value: must be set")
	}
	v, err := NewValue(m.GetValue())
	if err != nil {
		return mm, fmt.Errorf("value.%w", err)
	}
	mm.Value = v
	return mm, nil
}

// Match reports whether md matches, as Envoy's Metadata::metadataValue and
// ValueMatcher do: a path that does not lead to a value matches only
// present_match false (and inverted matchers).
func (m *MetadataMatch) Match(md Metadata) bool {
	return m.Value.Match(Lookup(md, m.Filter, m.Path)) != m.Invert
}

// Lookup returns the value at path in namespace ns of md, or a value of
// the unexported type missing when there is none.
func Lookup(md Metadata, ns string, path []string) any {
	obj, ok := md[ns]
	if !ok {
		return missing{}
	}
	var cur any = obj
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return missing{}
		}
		if cur, ok = m[k]; !ok {
			return missing{}
		}
	}
	return cur
}

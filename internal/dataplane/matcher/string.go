package matcher

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Kind says how a String compares.
type Kind uint8

// String match kinds (envoy.type.matcher.v3.StringMatcher.match_pattern).
const (
	Exact Kind = iota
	Prefix
	Suffix
	Contains
	Regex
)

// String is a compiled envoy.type.matcher.v3.StringMatcher. The zero value
// matches only "". It is immutable and safe for concurrent use.
type String struct {
	kind  Kind
	value string // lower-cased when ignoreCase
	re    *regexp.Regexp
	// ignoreCase compares ASCII letters case-insensitively for Exact,
	// Prefix, Suffix and Contains (ignore_case); Envoy ignores it for
	// safe_regex, and so does String.
	ignoreCase bool
}

// NewString compiles m. It fails when m has no pattern, a custom
// (extension) pattern, or a safe_regex that is not RE2; the error names the
// field within m.
func NewString(m *matcherv3.StringMatcher) (String, error) {
	s := String{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.kind, s.value = Exact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.kind, s.value = Prefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.kind, s.value = Suffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.kind, s.value = Contains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := NewRegex(p.SafeRegex)
		if err != nil {
			return s, fmt.Errorf("safe_regex.%w", err)
		}
		s.kind, s.re, s.ignoreCase = Regex, re, false
	case *matcherv3.StringMatcher_Custom:
		return s, fmt.Errorf("custom: not supported")
	default:
		return s, fmt.Errorf("match_pattern: must be exact, prefix, suffix, contains or safe_regex")
	}
	if s.ignoreCase {
		s.value = strings.ToLower(s.value)
	}
	return s, nil
}

// MustString is NewString for patterns known to be valid; it panics
// otherwise. For tests and constant matchers.
func MustString(m *matcherv3.StringMatcher) String {
	s, err := NewString(m)
	if err != nil {
		panic(err)
	}
	return s
}

// NewRegex compiles an Envoy safe_regex (RE2), anchored to match the whole
// input as Envoy's RegexMatcher does. The error starts with "regex".
func NewRegex(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m == nil {
		return nil, fmt.Errorf("regex: must be set")
	}
	if _, err := regexp.Compile(m.GetRegex()); err != nil {
		return nil, fmt.Errorf("regex = %q: must be RE2: %v", m.GetRegex(), err)
	}
	return regexp.MustCompile(`^(?:` + m.GetRegex() + `)$`), nil
}

// Match reports whether v matches. It does not allocate, ignore_case
// included.
func (s *String) Match(v string) bool {
	switch s.kind {
	case Exact:
		if s.ignoreCase {
			return len(v) == len(s.value) && hasPrefixFold(v, s.value)
		}
		return v == s.value
	case Prefix:
		if s.ignoreCase {
			return hasPrefixFold(v, s.value)
		}
		return strings.HasPrefix(v, s.value)
	case Suffix:
		if s.ignoreCase {
			return len(v) >= len(s.value) && hasPrefixFold(v[len(v)-len(s.value):], s.value)
		}
		return strings.HasSuffix(v, s.value)
	case Contains:
		if s.ignoreCase {
			for i := 0; i+len(s.value) <= len(v); i++ {
				if hasPrefixFold(v[i:], s.value) {
					return true
				}
			}
			return false
		}
		return strings.Contains(v, s.value)
	case Regex:
		return s.re.MatchString(v)
	}
	return false
}

// Exact returns the pattern of an exact matcher (ASCII-lower-cased when
// ignore_case) and true; "" and false for every other kind. Envoy's SAN
// check needs it: a DNS SAN and an exact pattern compare by DNS wildcard
// rules (dnsNameMatch), not as text.
func (s *String) Exact() (string, bool) {
	if s.kind != Exact {
		return "", false
	}
	return s.value, true
}

// hasPrefixFold reports whether v starts with lower, an ASCII-lower-cased
// string, comparing ASCII letters of v case-insensitively.
func hasPrefixFold(v, lower string) bool {
	if len(v) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		c := v[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// StringList is a compiled envoy.type.matcher.v3.ListStringMatcher: it
// matches when any of its patterns does.
type StringList []String

// NewStringList compiles l; nil for an absent or empty list.
func NewStringList(l *matcherv3.ListStringMatcher) (StringList, error) {
	var out StringList
	for i, p := range l.GetPatterns() {
		s, err := NewString(p)
		if err != nil {
			return nil, fmt.Errorf("patterns[%d].%w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Match reports whether any pattern matches v; false for an empty list.
func (l StringList) Match(v string) bool {
	for i := range l {
		if l[i].Match(v) {
			return true
		}
	}
	return false
}

// NewCIDR compiles an envoy.config.core.v3.CidrRange into a prefix with
// its host bits cleared, as Envoy's CidrRange does.
func NewCIDR(c *corev3.CidrRange) (netip.Prefix, error) {
	a, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address_prefix = %q: must be an IP address", c.GetAddressPrefix())
	}
	bits := int(c.GetPrefixLen().GetValue())
	if bits > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix_len = %q: must be at most %d", strconv.Itoa(bits), a.BitLen())
	}
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// CIDRContains reports whether a is in p, comparing IPv4-mapped IPv6
// addresses as IPv4, as Envoy does for a dual-stack socket's peer.
func CIDRContains(p netip.Prefix, a netip.Addr) bool {
	return a.IsValid() && p.Contains(a.Unmap())
}

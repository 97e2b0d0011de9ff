package v1alpha1

import "strings"

// Scopes of a RateLimit.
const (
	ScopeLocal  = "local"
	ScopeGlobal = "global"
)

// UnitSeconds are the units a RateLimit takes, with their windows in
// seconds (envoyproxy/ratelimit's units and UnitToDivider).
var UnitSeconds = map[string]int64{"second": 1, "minute": 60, "hour": 3600, "day": 86400}

// NormalUnit returns unit lower case, and whether it is one of
// UnitSeconds (read case-insensitively, as envoyproxy/ratelimit reads its
// config).
func NormalUnit(unit string) (string, bool) {
	u := strings.ToLower(unit)
	_, ok := UnitSeconds[u]
	return u, ok
}

// NormalScope returns scope lower case with its default, local, and
// whether it is local or global.
func NormalScope(scope string) (string, bool) {
	switch s := strings.ToLower(scope); s {
	case "", ScopeLocal:
		return ScopeLocal, true
	case ScopeGlobal:
		return s, true
	}
	return scope, false
}

package config

import (
	"math/bits"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http/httpguts"
)

// HashPolicyKind says which request property a HashPolicy reads.
type HashPolicyKind int

// Hash policy kinds (RouteAction.HashPolicy.policy_specifier).
const (
	HashHeader         HashPolicyKind = iota + 1 // header.header_name
	HashCookie                                   // cookie
	HashSourceIP                                 // connection_properties.source_ip: true
	HashQueryParameter                           // query_parameter.name
)

// HashPolicy is one envoy.config.route.v3.RouteAction.HashPolicy: where a
// consistent-hash load balancer (RING_HASH, MAGLEV) takes its key from.
// Istio's DestinationRule consistentHash (httpHeaderName, httpCookie,
// useSourceIp, httpQueryParameterName) becomes one of these.
type HashPolicy struct {
	Kind HashPolicyKind
	// Name is the header (canonical; ":authority", ":method", ":path" and
	// ":scheme" read the request line), the cookie or the query parameter.
	Name string
	// CookiePath is cookie.path, the Path of a generated cookie ("" for none).
	CookiePath string
	// CookieTTL is cookie.ttl in whole seconds (Envoy drops the nanos);
	// with CookieGenerate, a request without the cookie gets a generated
	// one, with Max-Age CookieTTL (0: a session cookie).
	CookieTTL      time.Duration
	CookieGenerate bool
	// CookieAttributes are cookie.attributes (Istio's httpCookie
	// attributes, e.g. SameSite=Lax), added to a generated cookie in order.
	CookieAttributes []CookieAttribute
	// Terminal stops the evaluation of the route's later policies once a
	// hash has been produced.
	Terminal bool
}

// CookieAttribute is one envoy.config.route.v3.RouteAction.HashPolicy.
// CookieAttribute: Name (a token) and Value ("" for a flag such as Secure),
// written as "; Name=Value" or "; Name" in a generated Set-Cookie.
type CookieAttribute struct {
	Name, Value string
}

// buildHashPolicies parses RouteAction.hash_policy at path. filter_state
// and header.regex_rewrite are refused.
// connection_properties with source_ip false produces nothing, as in Envoy.
func buildHashPolicies(path string, hps []*routev3.RouteAction_HashPolicy) ([]HashPolicy, error) {
	var out []HashPolicy
	for i, hp := range hps {
		p := idx(path, i)
		pol := HashPolicy{Terminal: hp.GetTerminal()}
		switch s := hp.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			h := s.Header
			name := strings.ToLower(h.GetHeaderName())
			switch {
			case name == "":
				return nil, ferr(p+".header.header_name", "must not be empty")
			case name == "host":
				name = ":authority"
			case strings.HasPrefix(name, ":"):
				switch name {
				case ":authority", ":method", ":path", ":scheme":
				default:
					return nil, verr(p+".header.header_name", h.GetHeaderName(), "must be a header or :authority, :method, :path or :scheme")
				}
			default:
				name = http.CanonicalHeaderKey(name)
			}
			if h.GetRegexRewrite() != nil {
				return nil, ferr(p+".header.regex_rewrite", "not supported")
			}
			pol.Kind, pol.Name = HashHeader, name
		case *routev3.RouteAction_HashPolicy_Cookie_:
			c := s.Cookie
			if c.GetName() == "" {
				return nil, ferr(p+".cookie.name", "must not be empty")
			}
			for j, a := range c.GetAttributes() {
				ap := idx(p+".cookie.attributes", j)
				if !httpguts.ValidHeaderFieldName(a.GetName()) {
					return nil, verr(ap+".name", a.GetName(), "must be a non-empty token")
				}
				// A ';' would start another attribute of the Set-Cookie.
				if !httpguts.ValidHeaderFieldValue(a.GetValue()) || strings.ContainsRune(a.GetValue(), ';') {
					return nil, verr(ap+".value", a.GetValue(), "must be a header value without ';'")
				}
				pol.CookieAttributes = append(pol.CookieAttributes, CookieAttribute{Name: a.GetName(), Value: a.GetValue()})
			}
			pol.Kind, pol.Name, pol.CookiePath = HashCookie, c.GetName(), c.GetPath()
			if ttl := c.GetTtl(); ttl != nil {
				if ttl.GetSeconds() < 0 || ttl.GetNanos() < 0 {
					return nil, verr(p+".cookie.ttl", ttl.AsDuration().String(), "must not be negative")
				}
				pol.CookieGenerate = true
				pol.CookieTTL = time.Duration(ttl.GetSeconds()) * time.Second
			}
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			if !s.ConnectionProperties.GetSourceIp() {
				continue
			}
			pol.Kind = HashSourceIP
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			if s.QueryParameter.GetName() == "" {
				return nil, ferr(p+".query_parameter.name", "must not be empty")
			}
			pol.Kind, pol.Name = HashQueryParameter, s.QueryParameter.GetName()
		case *routev3.RouteAction_HashPolicy_FilterState_:
			return nil, ferr(p+".filter_state", "not supported")
		default:
			return nil, ferr(p+".policy_specifier", "must be header, cookie, connection_properties or query_parameter")
		}
		out = append(out, pol)
	}
	return out, nil
}

// RequestHash computes the request's hash from r.HashPolicies, as Envoy
// does: ok is false when no policy produced a key (the load balancer then
// picks at random). downstreamIP is the client's address for
// connection_properties.source_ip. setCookie is non-empty when a cookie
// policy with a ttl found no cookie and generated one: it is the value of
// the Set-Cookie header the caller adds to the response.
//
// Every key is hashed with XXHash64 (seed 0), Envoy's HashUtil::xxHash64;
// several policies combine as Envoy's HashPolicyImpl::generateHash does:
// hash = rotl(hash, 1) ^ next. A generated cookie's value is the 16 hex
// digits of XXHash64(downstream remote address + local address), so every
// request of one connection gets the same cookie (Envoy's
// Router::Filter::addDownstreamSetCookie); it is HttpOnly and quoted, and
// carries the policy's cookie attributes before HttpOnly, as Envoy's
// Http::Utility::makeSetCookieValue writes them.
// Header, source IP and query parameter keys allocate nothing (except a
// header with several values); cookies are parsed by net/http.
func (r *Route) RequestHash(req *http.Request, downstreamIP string) (hash uint64, ok bool, setCookie string) {
	for i := range r.HashPolicies {
		p := &r.HashPolicies[i]
		var (
			h   uint64
			got bool
		)
		switch p.Kind {
		case HashHeader:
			h, got = headerHash(req, p.Name)
		case HashCookie:
			if c, err := req.Cookie(p.Name); err == nil && c.Value != "" {
				h, got = XXHash64(c.Value, 0), true
			} else if p.CookieGenerate {
				var value string
				value, setCookie = generatedCookie(req, p)
				h, got = XXHash64(value, 0), true
			}
		case HashSourceIP:
			if downstreamIP != "" {
				h, got = sourceIPHash(downstreamIP), true
			}
		case HashQueryParameter:
			var v string
			if v, got = firstQueryValue(req.URL.RawQuery, p.Name); got {
				h = XXHash64(v, 0)
			}
		}
		if got {
			// Rotating keeps two equal policies from cancelling out.
			hash, ok = bits.RotateLeft64(hash, 1)^h, true
		}
		if p.Terminal && ok {
			break
		}
	}
	return hash, ok, setCookie
}

// sourceIPHash is the key of a connection_properties.source_ip (HTTP) or
// source_ip (tcp_proxy) hash policy: XXHash64 of the client's IP address
// as text without port, as Envoy hashes Address::Ip::addressAsString().
func sourceIPHash(ip string) uint64 { return XXHash64(ip, 0) }

// headerHash hashes the values of header name, sorted so that their order
// does not matter, as one concatenated key (Envoy's HeaderHashMethod).
func headerHash(req *http.Request, name string) (uint64, bool) {
	if strings.HasPrefix(name, ":") {
		v, ok := headerValue(req, name)
		if !ok {
			return 0, false
		}
		return XXHash64(v, 0), true
	}
	vs := req.Header[name]
	switch len(vs) {
	case 0:
		return 0, false
	case 1:
		return XXHash64(vs[0], 0), true
	}
	sorted := slices.Clone(vs)
	slices.Sort(sorted)
	return XXHash64(strings.Join(sorted, ""), 0), true
}

// generatedCookie makes the cookie of policy p for a request without one:
// its value and its Set-Cookie header value.
func generatedCookie(req *http.Request, p *HashPolicy) (value, setCookie string) {
	key := req.RemoteAddr
	if la, ok := req.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		key += la.String()
	}
	var buf [16]byte
	v := strconv.AppendUint(buf[:0], XXHash64(key, 0), 16)
	value = strings.Repeat("0", 16-len(v)) + string(v)
	c := &http.Cookie{
		Name:   p.Name,
		Value:  value,
		Quoted: true,
		Path:   p.CookiePath,
		MaxAge: int(p.CookieTTL / time.Second),
	}
	base := c.String()
	if base == "" {
		// net/http refuses the name: no cookie rather than a broken one.
		return value, ""
	}
	var b strings.Builder
	b.WriteString(base)
	for _, a := range p.CookieAttributes {
		b.WriteString("; ")
		b.WriteString(a.Name)
		if a.Value != "" {
			b.WriteByte('=')
			b.WriteString(a.Value)
		}
	}
	b.WriteString("; HttpOnly")
	return value, b.String()
}

// XXH64's primes.
const (
	xxPrime1 uint64 = 0x9E3779B185EBCA87
	xxPrime2 uint64 = 0xC2B2AE3D27D4EB4F
	xxPrime3 uint64 = 0x165667B19E3779F9
	xxPrime4 uint64 = 0x85EBCA77C2B2AE63
	xxPrime5 uint64 = 0x27D4EB2F165667C5
)

// XXHash64 is the 64-bit xxHash (XXH64) of s with seed: the hash Envoy
// uses for hash policies, ring hash and Maglev (HashUtil::xxHash64), so
// Loom places keys and hosts where Envoy would. It is pure and allocates
// nothing.
func XXHash64(s string, seed uint64) uint64 {
	n := len(s)
	var h uint64
	if n >= 32 {
		v1 := seed + xxPrime1 + xxPrime2
		v2 := seed + xxPrime2
		v3 := seed
		v4 := seed - xxPrime1
		for len(s) >= 32 {
			v1 = xxRound(v1, le64(s[0:8]))
			v2 = xxRound(v2, le64(s[8:16]))
			v3 = xxRound(v3, le64(s[16:24]))
			v4 = xxRound(v4, le64(s[24:32]))
			s = s[32:]
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = xxMerge(h, v1)
		h = xxMerge(h, v2)
		h = xxMerge(h, v3)
		h = xxMerge(h, v4)
	} else {
		h = seed + xxPrime5
	}
	h += uint64(n)
	for ; len(s) >= 8; s = s[8:] {
		h ^= xxRound(0, le64(s[:8]))
		h = bits.RotateLeft64(h, 27)*xxPrime1 + xxPrime4
	}
	if len(s) >= 4 {
		h ^= uint64(le32(s[:4])) * xxPrime1
		h = bits.RotateLeft64(h, 23)*xxPrime2 + xxPrime3
		s = s[4:]
	}
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i]) * xxPrime5
		h = bits.RotateLeft64(h, 11) * xxPrime1
	}
	h ^= h >> 33
	h *= xxPrime2
	h ^= h >> 29
	h *= xxPrime3
	h ^= h >> 32
	return h
}

func xxRound(acc, in uint64) uint64 {
	acc += in * xxPrime2
	return bits.RotateLeft64(acc, 31) * xxPrime1
}

func xxMerge(acc, v uint64) uint64 {
	acc ^= xxRound(0, v)
	return acc*xxPrime1 + xxPrime4
}

func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

func le32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

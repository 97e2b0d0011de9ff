package rbac

import (
	"strings"
)

// NormalizePath returns the :path p (with its query) as Envoy's
// connection manager hands it to filters under Istio's default path
// normalization (meshConfig pathNormalization BASE, Envoy's
// normalize_path: RFC 3986 normalization by Chromium's URL library):
//
//   - percent-encoded unreserved characters (letters, digits, "-", ".",
//     "_", "~") are decoded, and the hex digits of other escapes are
//     upper-cased;
//   - "\" becomes "/";
//   - bytes Chromium escapes in a path (controls, space, '"', '<', '>',
//     '`', '{', '}' and non-ASCII) are percent-encoded;
//   - "." and ".." segments are removed (RFC 3986 section 5.2.4), a
//     trailing one leaving a "/".
//
// The query is kept as it is. Slashes are not merged (Istio's BASE).
// Loom's connection manager forwards the path as received; the RBAC
// filter decides on the normalized one, so that a policy decides as it
// would in Envoy ("/public/../admin" is "/admin").
func NormalizePath(p string) string {
	path, query, hasQuery := strings.Cut(p, "?")
	if !needsNormalizing(path) {
		return p
	}
	var b strings.Builder
	b.Grow(len(path) + 8)
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '%' && i+2 < len(path) && isHex(path[i+1]) && isHex(path[i+2]):
			d := unhex(path[i+1])<<4 | unhex(path[i+2])
			if isUnreserved(d) {
				b.WriteByte(d)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex(path[i+1]))
				b.WriteByte(upperHex(path[i+2]))
			}
			i += 2
		case c == '\\':
			b.WriteByte('/')
		case escapedInPath(c):
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		default:
			b.WriteByte(c)
		}
	}
	out := removeDotSegments(b.String())
	if hasQuery {
		return out + "?" + query
	}
	return out
}

// needsNormalizing reports whether path has anything NormalizePath would
// change, so that the common path costs no allocation.
func needsNormalizing(path string) bool {
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c == '%' || c == '\\' || escapedInPath(c) {
			return true
		}
		if c == '.' && (i == 0 || path[i-1] == '/') {
			return true
		}
	}
	return false
}

func escapedInPath(c byte) bool {
	switch {
	case c <= ' ' || c >= 0x7f:
		return true
	case c == '"' || c == '<' || c == '>' || c == '`' || c == '{' || c == '}':
		return true
	}
	return false
}

// removeDotSegments is RFC 3986 section 5.2.4 for an absolute path.
func removeDotSegments(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

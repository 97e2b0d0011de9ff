package accesslog

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
)

// EnvoyDefaultFormat is Envoy's default access log format, used when an
// access logger has no log_format.
const EnvoyDefaultFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// IstioTextFormat is Istio's default text access log format
// (EnvoyTextLogFormat), which AppendEntry writes without parsing.
const IstioTextFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% ` +
	`%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

// Formatter renders an Entry as one access log line: Envoy's substitution
// format string (text) or a JSON object whose values are format strings
// (json_format). It is immutable and safe for concurrent use.
type Formatter struct {
	istio  bool      // the text format is IstioTextFormat: AppendEntry
	text   []segment // text format
	isJSON bool      // json_format (json may be empty: "{}")
	json   []jsonField
	// omitEmpty is SubstitutionFormatString.omit_empty_values: an empty
	// operator prints "" instead of "-" in text (and inside a JSON string
	// of several parts), and a JSON key whose whole value is one empty
	// operator is left out instead of being null.
	omitEmpty bool
}

// FormatOptions are the SubstitutionFormatString fields besides the
// format itself.
type FormatOptions struct {
	// OmitEmptyValues is Envoy's omit_empty_values (see Formatter).
	OmitEmptyValues bool
}

// segment is literal text or one command.
type segment struct {
	lit string
	op  *command
}

type jsonField struct {
	// key is the field's name; writing uses prefix, the tests' encoding/json
	// oracle (json_test.go) the key.
	key string
	// prefix is the key as JSON with its colon, `"key":`, encoded once by
	// encoding/json when the format is parsed.
	prefix []byte
	segs   []segment
	// single: the value is exactly one command, whose type Envoy keeps
	// (a number stays a number, a missing value is null).
	single bool
}

// command is one %COMMAND(ARG):MAX% of Envoy's substitution format.
type command struct {
	name    string
	header  string // REQ/RESP: the header, lower case
	alt     string // REQ/RESP: the header after "?"
	timefmt string // START_TIME: Go layout, "" for Envoy's default
	max     int    // :N truncation, 0 none
}

// ParseTextFormat parses an Envoy text format string. Every command must be
// one this version implements (see commands); the error names the first
// that is not.
func ParseTextFormat(s string, opts FormatOptions) (*Formatter, error) {
	if s == IstioTextFormat && !opts.OmitEmptyValues {
		return &Formatter{istio: true}, nil
	}
	segs, err := parseSegments(s)
	if err != nil {
		return nil, err
	}
	return &Formatter{text: segs, omitEmpty: opts.OmitEmptyValues}, nil
}

// ParseJSONFormat parses an Envoy json_format: each value is a format
// string (other JSON values are refused). Keys are written sorted (as
// Envoy does), one compact object per line.
func ParseJSONFormat(fields map[string]string, opts FormatOptions) (*Formatter, error) {
	f := &Formatter{isJSON: true, omitEmpty: opts.OmitEmptyValues}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		segs, err := parseSegments(fields[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		kj, err := json.Marshal(k)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		f.json = append(f.json, jsonField{key: k, prefix: append(kj, ':'), segs: segs, single: len(segs) == 1 && segs[0].op != nil})
	}
	return f, nil
}

func parseSegments(s string) ([]segment, error) {
	var segs []segment
	var lit strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' { // "%%" is a literal %
			lit.WriteByte('%')
			i += 2
			continue
		}
		// COMMAND, then an optional (ARG) that may hold '%' (START_TIME's
		// strftime), an optional :N, and the closing '%'.
		j := i + 1
		for j < len(s) && (s[j] == '_' || (s[j] >= 'A' && s[j] <= 'Z') || (s[j] >= '0' && s[j] <= '9')) {
			j++
		}
		if j < len(s) && s[j] == '(' {
			k := strings.IndexByte(s[j:], ')')
			if k < 0 {
				return nil, fmt.Errorf("unbalanced ( at %q", s[i:])
			}
			j += k + 1
		}
		k := strings.IndexByte(s[j:], '%')
		if j == i+1 || k < 0 {
			return nil, fmt.Errorf("not a command at %q", s[i:])
		}
		j += k
		op, err := parseCommand(s[i+1 : j])
		if err != nil {
			return nil, err
		}
		if lit.Len() > 0 {
			segs = append(segs, segment{lit: lit.String()})
			lit.Reset()
		}
		segs = append(segs, segment{op: op})
		i = j + 1
	}
	if lit.Len() > 0 {
		segs = append(segs, segment{lit: lit.String()})
	}
	return segs, nil
}

// commands are the commands this version implements, with Envoy's names.
var commands = map[string]bool{
	"START_TIME": true, "REQ": true, "RESP": true, "PROTOCOL": true, "RESPONSE_CODE": true,
	"RESPONSE_FLAGS": true, "RESPONSE_CODE_DETAILS": true, "CONNECTION_TERMINATION_DETAILS": true,
	"UPSTREAM_TRANSPORT_FAILURE_REASON": true, "BYTES_RECEIVED": true, "BYTES_SENT": true, "DURATION": true,
	"UPSTREAM_HOST": true, "UPSTREAM_CLUSTER": true, "UPSTREAM_CLUSTER_RAW": true, "UPSTREAM_LOCAL_ADDRESS": true,
	"DOWNSTREAM_LOCAL_ADDRESS": true, "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": true,
	"DOWNSTREAM_REMOTE_ADDRESS": true, "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": true,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS": true, "REQUESTED_SERVER_NAME": true, "ROUTE_NAME": true,
	"HOSTNAME": true, "METHOD": true, "PATH": true, "UPSTREAM_REMOTE_ADDRESS": true,
}

func parseCommand(s string) (*command, error) {
	c := &command{}
	name := s
	if i := strings.IndexByte(s, '('); i >= 0 {
		j := strings.LastIndexByte(s, ')')
		if j < i {
			return nil, fmt.Errorf("%%%s%%: unbalanced (", s)
		}
		name = s[:i]
		arg := s[i+1 : j]
		rest := s[j+1:]
		if rest != "" {
			n, err := strconv.Atoi(strings.TrimPrefix(rest, ":"))
			if !strings.HasPrefix(rest, ":") || err != nil || n <= 0 {
				return nil, fmt.Errorf("%%%s%%: bad length %q", s, rest)
			}
			c.max = n
		}
		switch name {
		case "REQ", "RESP":
			h, alt, _ := strings.Cut(arg, "?")
			if h == "" {
				return nil, fmt.Errorf("%%%s%%: a header name is required", s)
			}
			c.header, c.alt = strings.ToLower(h), strings.ToLower(alt)
		case "START_TIME":
			layout, err := strftime(arg)
			if err != nil {
				return nil, fmt.Errorf("%%%s%%: %v", s, err)
			}
			c.timefmt = layout
		default:
			return nil, fmt.Errorf("%%%s%%: command %s takes no argument in this version of Loom", s, name)
		}
	} else if name == "REQ" || name == "RESP" {
		return nil, fmt.Errorf("%%%s%%: a header name is required", s)
	}
	if !commands[name] {
		return nil, fmt.Errorf("%%%s%%: unknown or unsupported command", s)
	}
	c.name = name
	return c, nil
}

// strftime turns the strftime specifiers Envoy's START_TIME takes into a
// Go layout; "" stays "" (Envoy's default, %Y-%m-%dT%H:%M:%E3SZ in UTC).
func strftime(f string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			b.WriteByte(f[i])
			continue
		}
		i++
		if i >= len(f) {
			return "", fmt.Errorf("trailing %%")
		}
		switch f[i] {
		case 'Y':
			b.WriteString("2006")
		case 'm':
			b.WriteString("01")
		case 'd':
			b.WriteString("02")
		case 'H':
			b.WriteString("15")
		case 'M':
			b.WriteString("04")
		case 'S':
			b.WriteString("05")
		case 'z':
			b.WriteString("-0700")
		case 'Z':
			b.WriteString("MST")
		case 'E':
			if i+2 < len(f) && f[i+1] >= '1' && f[i+1] <= '9' && f[i+2] == 'S' {
				b.WriteString("05." + strings.Repeat("0", int(f[i+1]-'0')))
				i += 2
				continue
			}
			return "", fmt.Errorf("unsupported specifier %%E%s", f[i+1:])
		case '%':
			b.WriteByte('%')
		default:
			return "", fmt.Errorf("unsupported specifier %%%c", f[i])
		}
	}
	return b.String(), nil
}

var hostname, _ = os.Hostname()

// number is c's value for e when c is a number (RESPONSE_CODE,
// BYTES_RECEIVED, BYTES_SENT, DURATION in ms), so that writers append it
// without making a string.
func (c *command) number(e *Entry) (n int64, ok bool) {
	switch c.name {
	case "RESPONSE_CODE":
		return int64(e.ResponseCode), true
	case "BYTES_RECEIVED":
		return e.BytesReceived, true
	case "BYTES_SENT":
		return e.BytesSent, true
	case "DURATION":
		return e.Duration.Milliseconds(), true
	}
	return 0, false
}

// appendTime appends START_TIME for e in c's format (Envoy's default
// 2006-01-02T15:04:05.000Z).
func (c *command) appendTime(b []byte, e *Entry) []byte {
	f := c.timefmt
	if f == "" {
		f = "2006-01-02T15:04:05.000Z"
	}
	return e.StartTime.UTC().AppendFormat(b, f)
}

// appendText appends c's text for e as value gives it, numbers and times
// without an intermediate string; empty is true when there is none.
func (c *command) appendText(b []byte, e *Entry) (out []byte, empty bool) {
	if n, ok := c.number(e); ok {
		return strconv.AppendInt(b, n, 10), false
	}
	if c.name == "START_TIME" {
		return c.appendTime(b, e), false
	}
	s, _, _ := c.value(e)
	return append(b, s...), s == ""
}

// value renders c for e: the text ("" when missing) and, for a number, ok.
func (c *command) value(e *Entry) (s string, num int64, isNum bool) {
	if n, ok := c.number(e); ok {
		return strconv.FormatInt(n, 10), n, true
	}
	switch c.name {
	case "START_TIME":
		return string(c.appendTime(nil, e)), 0, false
	case "REQ":
		s = reqHeader(e, c.header)
		if s == "" && c.alt != "" {
			s = reqHeader(e, c.alt)
		}
	case "RESP":
		s = respHeader(e, c.header)
		if s == "" && c.alt != "" {
			s = respHeader(e, c.alt)
		}
	case "PROTOCOL":
		s = e.Protocol
	case "RESPONSE_FLAGS":
		s = e.ResponseFlags
	case "RESPONSE_CODE_DETAILS":
		s = e.ResponseCodeDetails
	case "UPSTREAM_TRANSPORT_FAILURE_REASON":
		s = e.UpstreamFailureReason
	case "UPSTREAM_HOST", "UPSTREAM_REMOTE_ADDRESS":
		s = e.UpstreamHost
	case "UPSTREAM_CLUSTER", "UPSTREAM_CLUSTER_RAW":
		s = e.UpstreamCluster
	case "UPSTREAM_LOCAL_ADDRESS":
		s = e.UpstreamLocalAddress
	case "DOWNSTREAM_LOCAL_ADDRESS":
		s = e.DownstreamLocalAddress
	case "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
		s = withoutPort(e.DownstreamLocalAddress)
	case "DOWNSTREAM_REMOTE_ADDRESS", "DOWNSTREAM_DIRECT_REMOTE_ADDRESS":
		s = e.DownstreamRemoteAddress
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		s = withoutPort(e.DownstreamRemoteAddress)
	case "REQUESTED_SERVER_NAME":
		s = e.RequestedServerName
	case "ROUTE_NAME":
		s = e.RouteName
	case "HOSTNAME":
		s = hostname
	case "METHOD":
		s = e.Method
	case "PATH":
		s = e.Path
	}
	if c.max > 0 && len(s) > c.max {
		s = s[:c.max]
	}
	return s, 0, false
}

func withoutPort(hp string) string {
	if h, _, err := net.SplitHostPort(hp); err == nil {
		return h
	}
	return hp
}

func reqHeader(e *Entry, h string) string {
	switch h {
	case ":method":
		return e.Method
	case ":path":
		if e.RequestURI != "" {
			return e.RequestURI
		}
		return e.Path
	case ":authority", "host":
		return e.Authority
	case "x-envoy-original-path":
		return e.RequestHeader.Get("X-Envoy-Original-Path")
	case "x-forwarded-for":
		return e.ForwardedFor
	case "user-agent":
		return e.UserAgent
	case "x-request-id":
		return e.RequestID
	}
	return headerGet(e.RequestHeader, h)
}

func respHeader(e *Entry, h string) string {
	if h == "x-envoy-upstream-service-time" && e.UpstreamServiceTime >= 0 {
		return strconv.FormatInt(e.UpstreamServiceTime.Milliseconds(), 10)
	}
	return headerGet(e.ResponseHeader, h)
}

func headerGet(hd http.Header, h string) string {
	if hd == nil {
		return ""
	}
	return hd.Get(h)
}

// Append appends e's line (with a trailing newline for JSON; a text
// format carries its own) to b.
func (f *Formatter) Append(b []byte, e *Entry) []byte {
	switch {
	case f.istio:
		return AppendEntry(b, e)
	case f.isJSON:
		return f.appendJSON(b, e)
	}
	for _, sg := range f.text {
		if sg.op == nil {
			b = append(b, sg.lit...)
			continue
		}
		if n, ok := sg.op.number(e); ok {
			b = strconv.AppendInt(b, n, 10)
			continue
		}
		s, _, _ := sg.op.value(e) // START_TIME too: appendStr sanitizes it
		if s == "" && f.omitEmpty {
			continue
		}
		b = appendStr(b, s)
	}
	return b
}

// appendJSON writes the object in the fields' precomputed (sorted) order:
// the same bytes json.Marshal of a map of them gives, without building
// the map. A value that is exactly one command keeps its type (a number
// stays a number; an empty one is null, or left out with omitEmpty); any
// other value is a string in which an empty command is "-" ("" with
// omitEmpty).
func (f *Formatter) appendJSON(b []byte, e *Entry) []byte {
	b = append(b, '{')
	first := true
	var scratch [256]byte
	for i := range f.json {
		jf := &f.json[i]
		if jf.single {
			op := jf.segs[0].op
			n, isNum := op.number(e)
			var s string
			isTime := op.name == "START_TIME"
			if !isNum && !isTime {
				s, _, _ = op.value(e)
				if s == "" && f.omitEmpty {
					continue
				}
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, jf.prefix...)
			switch {
			case isNum:
				b = strconv.AppendInt(b, n, 10)
			case isTime:
				b = appendJSONBytes(b, op.appendTime(scratch[:0], e))
			case s == "":
				b = append(b, "null"...)
			default:
				b = appendJSONString(b, s)
			}
			continue
		}
		v := scratch[:0]
		for _, sg := range jf.segs {
			if sg.op == nil {
				v = append(v, sg.lit...)
				continue
			}
			var empty bool
			if v, empty = sg.op.appendText(v, e); empty && !f.omitEmpty {
				v = append(v, '-')
			}
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, jf.prefix...)
		b = appendJSONBytes(b, v)
	}
	return append(b, '}', '\n')
}

// jsonPlain reports whether c is written as itself inside a JSON string
// by encoding/json (with its default HTML escaping): printable ASCII but
// the quote, the backslash and <, >, &.
func jsonPlain(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// appendJSONString appends s as a JSON string. A string that needs no
// escaping is copied between quotes; any other is encoded by
// encoding/json, so escaping (control characters, invalid UTF-8,
// U+2028/9, HTML characters) is exactly json.Marshal's.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !jsonPlain(s[i]) {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONBytes is appendJSONString for the bytes of v.
func appendJSONBytes(b, v []byte) []byte {
	for _, c := range v {
		if !jsonPlain(c) {
			return appendJSONString(b, string(v))
		}
	}
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}

package accesslog

import (
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
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
	// needs is what the format reads that costs the connection manager
	// per request (Needs).
	needs Needs
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
	op      op
	header  string // REQ/RESP: the header, lower case
	alt     string // REQ/RESP: the header after "?"
	timefmt string // START_TIME: Go layout, "" for Envoy's default
	// underscores: whitespace in the value is written as "_", as Envoy
	// writes UPSTREAM_TRANSPORT_FAILURE_REASON and RESPONSE_CODE_DETAILS
	// (unless RESPONSE_CODE_DETAILS(ALLOW_WHITESPACES)).
	underscores bool
	max         int // :N truncation, 0 none
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
	return &Formatter{text: segs, omitEmpty: opts.OmitEmptyValues, needs: needsOf(segs)}, nil
}

// Needs are the values an access log reads that the connection manager
// records only on request, as they cost it per request.
type Needs uint8

const (
	// NeedsUpstreamTx: REQUEST_TX_DURATION (a request trace per attempt).
	NeedsUpstreamTx Needs = 1 << iota
	// NeedsUpstreamConnectionID: UPSTREAM_CONNECTION_ID.
	NeedsUpstreamConnectionID
)

// Needs reports what f reads of Needs; 0 for nil.
func (f *Formatter) Needs() Needs {
	if f == nil {
		return 0
	}
	return f.needs
}

func needsOf(segs []segment) Needs {
	var n Needs
	for _, sg := range segs {
		switch {
		case sg.op == nil:
		case sg.op.op == opRequestTxDuration:
			n |= NeedsUpstreamTx
		case sg.op.op == opUpstreamConnectionID:
			n |= NeedsUpstreamConnectionID
		}
	}
	return n
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
		f.needs |= needsOf(segs)
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

// op is a command, resolved from its name once, when the format is
// parsed.
type op uint8

const (
	opNone op = iota
	opStartTime
	opReq
	opResp
	opProtocol
	opUpstreamProtocol
	opResponseCode
	opResponseFlags
	opResponseCodeDetails
	opConnectionTerminationDetails
	opUpstreamTransportFailureReason
	opBytesReceived
	opBytesSent
	opDuration
	opRequestDuration
	opRequestTxDuration
	opResponseDuration
	opResponseTxDuration
	opDownstreamHandshakeDuration
	opUpstreamRequestAttemptCount
	opConnectionID
	opUpstreamConnectionID
	opUpstreamHost
	opUpstreamCluster
	opUpstreamLocalAddress
	opUpstreamLocalAddressWithoutPort
	opUpstreamLocalPort
	opUpstreamRemoteAddressWithoutPort
	opUpstreamRemotePort
	opDownstreamLocalAddress
	opDownstreamLocalAddressWithoutPort
	opDownstreamLocalPort
	opDownstreamRemoteAddress
	opDownstreamRemoteAddressWithoutPort
	opDownstreamRemotePort
	opRequestedServerName
	opRouteName
	opHostname
	opMethod
	opPath
	opDownstreamPeerURISAN
	opDownstreamLocalURISAN
	opDownstreamTLSVersion
	opDownstreamTLSCipher
	opFilterChainName
	opTraceID
)

// commands are the commands this version implements, by Envoy's names.
// The upstream's remote address is the upstream host's; the downstream's
// remote address is always the connection's peer (Loom does not take it
// from x-forwarded-for or the PROXY protocol), so the DIRECT ones are the
// same.
var commands = map[string]op{
	"START_TIME":                                    opStartTime,
	"REQ":                                           opReq,
	"RESP":                                          opResp,
	"PROTOCOL":                                      opProtocol,
	"UPSTREAM_PROTOCOL":                             opUpstreamProtocol,
	"RESPONSE_CODE":                                 opResponseCode,
	"RESPONSE_FLAGS":                                opResponseFlags,
	"RESPONSE_CODE_DETAILS":                         opResponseCodeDetails,
	"CONNECTION_TERMINATION_DETAILS":                opConnectionTerminationDetails,
	"UPSTREAM_TRANSPORT_FAILURE_REASON":             opUpstreamTransportFailureReason,
	"BYTES_RECEIVED":                                opBytesReceived,
	"BYTES_SENT":                                    opBytesSent,
	"DURATION":                                      opDuration,
	"REQUEST_DURATION":                              opRequestDuration,
	"REQUEST_TX_DURATION":                           opRequestTxDuration,
	"RESPONSE_DURATION":                             opResponseDuration,
	"RESPONSE_TX_DURATION":                          opResponseTxDuration,
	"DOWNSTREAM_HANDSHAKE_DURATION":                 opDownstreamHandshakeDuration,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT":                opUpstreamRequestAttemptCount,
	"CONNECTION_ID":                                 opConnectionID,
	"UPSTREAM_CONNECTION_ID":                        opUpstreamConnectionID,
	"UPSTREAM_HOST":                                 opUpstreamHost,
	"UPSTREAM_CLUSTER":                              opUpstreamCluster,
	"UPSTREAM_CLUSTER_RAW":                          opUpstreamCluster,
	"UPSTREAM_LOCAL_ADDRESS":                        opUpstreamLocalAddress,
	"UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":           opUpstreamLocalAddressWithoutPort,
	"UPSTREAM_LOCAL_PORT":                           opUpstreamLocalPort,
	"UPSTREAM_REMOTE_ADDRESS":                       opUpstreamHost,
	"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":          opUpstreamRemoteAddressWithoutPort,
	"UPSTREAM_REMOTE_PORT":                          opUpstreamRemotePort,
	"DOWNSTREAM_LOCAL_ADDRESS":                      opDownstreamLocalAddress,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         opDownstreamLocalAddressWithoutPort,
	"DOWNSTREAM_LOCAL_PORT":                         opDownstreamLocalPort,
	"DOWNSTREAM_REMOTE_ADDRESS":                     opDownstreamRemoteAddress,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":        opDownstreamRemoteAddressWithoutPort,
	"DOWNSTREAM_REMOTE_PORT":                        opDownstreamRemotePort,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":              opDownstreamRemoteAddress,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": opDownstreamRemoteAddressWithoutPort,
	"DOWNSTREAM_DIRECT_REMOTE_PORT":                 opDownstreamRemotePort,
	"REQUESTED_SERVER_NAME":                         opRequestedServerName,
	"ROUTE_NAME":                                    opRouteName,
	"HOSTNAME":                                      opHostname,
	"METHOD":                                        opMethod,
	"PATH":                                          opPath,
	"DOWNSTREAM_PEER_URI_SAN":                       opDownstreamPeerURISAN,
	"DOWNSTREAM_LOCAL_URI_SAN":                      opDownstreamLocalURISAN,
	"TRACE_ID":                                      opTraceID,
	"DOWNSTREAM_TLS_VERSION":                        opDownstreamTLSVersion,
	"DOWNSTREAM_TLS_CIPHER":                         opDownstreamTLSCipher,
	"FILTER_CHAIN_NAME":                             opFilterChainName,
}

func parseCommand(s string) (*command, error) {
	c := &command{}
	name := s
	allowWhitespaces := false
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
		case "RESPONSE_CODE_DETAILS":
			if arg != "ALLOW_WHITESPACES" {
				return nil, fmt.Errorf("%%%s%%: the argument can only be ALLOW_WHITESPACES", s)
			}
			allowWhitespaces = true
		default:
			return nil, fmt.Errorf("%%%s%%: command %s takes no argument in this version of Loom", s, name)
		}
	} else if name == "REQ" || name == "RESP" {
		return nil, fmt.Errorf("%%%s%%: a header name is required", s)
	} else if n, _, ok := strings.Cut(name, ":"); ok && commands[n] != opNone {
		// Envoy: only commands with an argument take a length.
		return nil, fmt.Errorf("%%%s%%: command %s takes no length", s, n)
	}
	c.op = commands[name]
	if c.op == opNone {
		return nil, fmt.Errorf("%%%s%%: unknown or unsupported command", s)
	}
	c.underscores = c.op == opUpstreamTransportFailureReason || c.op == opResponseCodeDetails && !allowWhitespaces
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

// kind is what a command gives for an entry.
type kind uint8

const (
	kindNone    kind = iota // no value: "-" in text, null in JSON (Envoy's unspecified value)
	kindStr                 // a string
	kindNum                 // a number, which a JSON value of this command alone keeps
	kindTime                // START_TIME, appended by appendTime
	kindTraceID             // TRACE_ID, appended by appendTraceID
)

// eval is c's value for e, without allocating: the string s (kindStr) or
// the number n (kindNum); kindTime and kindTraceID are appended by their
// writers.
func (c *command) eval(e *Entry) (s string, n int64, k kind) {
	switch c.op {
	case opResponseCode:
		return "", int64(e.ResponseCode), kindNum
	case opBytesReceived:
		return "", e.BytesReceived, kindNum
	case opBytesSent:
		return "", e.BytesSent, kindNum
	case opDuration:
		return "", e.Duration.Milliseconds(), kindNum
	case opUpstreamRequestAttemptCount:
		return "", int64(e.UpstreamRequestAttemptCount), kindNum
	case opConnectionID:
		return "", int64(e.ConnectionID), kindNum
	case opUpstreamConnectionID:
		return "", int64(e.UpstreamConnectionID), kindNum
	case opRequestDuration:
		return millis(e.LastDownstreamRxByteReceived)
	case opRequestTxDuration:
		return millis(e.LastUpstreamTxByteSent)
	case opResponseDuration:
		return millis(e.FirstUpstreamRxByteReceived)
	case opResponseTxDuration:
		if e.FirstUpstreamRxByteReceived > 0 && e.LastDownstreamTxByteSent > 0 {
			return "", (e.LastDownstreamTxByteSent - e.FirstUpstreamRxByteReceived).Milliseconds(), kindNum
		}
		return "", 0, kindNone
	case opDownstreamHandshakeDuration:
		return millis(e.DownstreamHandshakeDuration)
	case opUpstreamLocalPort:
		return port(e.UpstreamLocalAddress)
	case opUpstreamRemotePort:
		return port(e.UpstreamHost)
	case opDownstreamLocalPort:
		return port(e.DownstreamLocalAddress)
	case opDownstreamRemotePort:
		return port(e.DownstreamRemoteAddress)
	case opStartTime:
		return "", 0, kindTime
	case opTraceID:
		if e.TraceID.IsValid() {
			return "", 0, kindTraceID
		}
		return "", 0, kindNone
	case opReq:
		s = reqHeader(e, c.header)
		if s == "" && c.alt != "" {
			s = reqHeader(e, c.alt)
		}
	case opResp:
		s = respHeader(e, c.header)
		if s == "" && c.alt != "" {
			s = respHeader(e, c.alt)
		}
	case opProtocol:
		s = e.Protocol
	case opUpstreamProtocol:
		s = e.UpstreamProtocol
	case opResponseFlags:
		// Envoy's toShortString: "-" for none, in JSON as in text.
		s = e.ResponseFlags
		if s == "" {
			s = "-"
		}
	case opResponseCodeDetails:
		s = e.ResponseCodeDetails
	case opUpstreamTransportFailureReason:
		s = e.UpstreamFailureReason
	case opUpstreamHost:
		s = e.UpstreamHost
	case opUpstreamCluster:
		s = e.UpstreamCluster
	case opUpstreamLocalAddress:
		s = e.UpstreamLocalAddress
	case opUpstreamLocalAddressWithoutPort:
		s = withoutPort(e.UpstreamLocalAddress)
	case opUpstreamRemoteAddressWithoutPort:
		s = withoutPort(e.UpstreamHost)
	case opDownstreamLocalAddress:
		s = e.DownstreamLocalAddress
	case opDownstreamLocalAddressWithoutPort:
		s = withoutPort(e.DownstreamLocalAddress)
	case opDownstreamRemoteAddress:
		s = e.DownstreamRemoteAddress
	case opDownstreamRemoteAddressWithoutPort:
		s = withoutPort(e.DownstreamRemoteAddress)
	case opRequestedServerName:
		s = e.RequestedServerName
	case opRouteName:
		s = e.RouteName
	case opHostname:
		s = hostname
	case opMethod:
		s = e.Method
	case opPath:
		s = e.Path
	case opDownstreamPeerURISAN:
		s = e.DownstreamPeerURISAN
	case opDownstreamLocalURISAN:
		s = e.DownstreamLocalURISAN
	case opDownstreamTLSVersion:
		if e.DownstreamTLS != nil {
			s = tlsVersionName(e.DownstreamTLS.Version)
		}
	case opDownstreamTLSCipher:
		if e.DownstreamTLS != nil {
			s = cipherName(e.DownstreamTLS.CipherSuite)
		}
	case opFilterChainName:
		s = e.FilterChainName
	}
	// CONNECTION_TERMINATION_DETAILS: none in this version.
	if s == "" {
		return "", 0, kindNone
	}
	if c.max > 0 && len(s) > c.max {
		s = s[:c.max]
	}
	return s, 0, kindStr
}

// tlsVersionName is BoringSSL's name of a TLS version, which Envoy logs
// ("TLSv1.2"); "" for another.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return ""
}

// cipherNames are BoringSSL's (OpenSSL's) names of the cipher suites Go
// negotiates, which Envoy logs; TLS 1.3's are the IANA names, as Go's.
var cipherNames = map[uint16]string{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:       "ECDHE-ECDSA-AES128-GCM-SHA256",
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:         "ECDHE-RSA-AES128-GCM-SHA256",
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:       "ECDHE-ECDSA-AES256-GCM-SHA384",
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:         "ECDHE-RSA-AES256-GCM-SHA384",
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-ECDSA-CHACHA20-POLY1305",
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:   "ECDHE-RSA-CHACHA20-POLY1305",
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA:          "ECDHE-ECDSA-AES128-SHA",
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA:            "ECDHE-RSA-AES128-SHA",
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA:          "ECDHE-ECDSA-AES256-SHA",
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA:            "ECDHE-RSA-AES256-SHA",
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256:               "AES128-GCM-SHA256",
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384:               "AES256-GCM-SHA384",
	tls.TLS_RSA_WITH_AES_128_CBC_SHA:                  "AES128-SHA",
	tls.TLS_RSA_WITH_AES_256_CBC_SHA:                  "AES256-SHA",
}

// cipherName is a cipher suite's name as Envoy logs it.
func cipherName(id uint16) string {
	if n, ok := cipherNames[id]; ok {
		return n
	}
	return tls.CipherSuiteName(id)
}

// millis is a duration operator's value: whole milliseconds, truncated
// as Envoy's duration_cast; none when d is 0 (the event did not happen).
func millis(d time.Duration) (string, int64, kind) {
	if d <= 0 {
		return "", 0, kindNone
	}
	return "", d.Milliseconds(), kindNum
}

// port is a *_PORT operator's value: the port of host:port, a number;
// none when hp has no port.
func port(hp string) (string, int64, kind) {
	_, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, kindNone
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, kindNone
	}
	return "", int64(n), kindNum
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

// appendTraceID appends e's trace id as the active span's getTraceId
// gives it: 32 lower-case hex digits, or 16 for a 64-bit (Zipkin
// trace_id_128bit false) id, whose high half is zero.
func appendTraceID(b []byte, e *Entry) []byte {
	id := e.TraceID[:]
	if [8]byte(id[:8]) == [8]byte{} {
		id = id[8:]
	}
	return hex.AppendEncode(b, id)
}

// appendValue appends c's text for e, a string sanitized (appendStr's
// replacements) when sanitize is set; ok is false, with nothing
// appended, when there is no value.
func (c *command) appendValue(b []byte, e *Entry, sanitize bool) (out []byte, ok bool) {
	s, n, k := c.eval(e)
	switch k {
	case kindNum:
		return strconv.AppendInt(b, n, 10), true
	case kindStr:
		switch {
		case c.underscores:
			return appendUnderscored(b, s, sanitize), true
		case sanitize:
			return appendStr(b, s), true
		}
		return append(b, s...), true
	case kindTime:
		start := len(b)
		b = c.appendTime(b, e)
		if sanitize {
			sanitizeBytes(b[start:])
		}
		return b, true
	case kindTraceID:
		return appendTraceID(b, e), true
	}
	return b, false
}

// value renders c for e as a string ("" when missing) and, for a number,
// the number; it allocates (tests, and the JSON oracle).
func (c *command) value(e *Entry) (s string, num int64, isNum bool) {
	s, n, k := c.eval(e)
	switch k {
	case kindNum:
		return strconv.FormatInt(n, 10), n, true
	case kindTime, kindTraceID:
		b, _ := c.appendValue(nil, e, false)
		return string(b), 0, false
	case kindStr:
		if c.underscores {
			return string(appendUnderscored(nil, s, false)), 0, false
		}
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
// format carries its own) to b. It allocates nothing but b's growth.
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
		var ok bool
		if b, ok = sg.op.appendValue(b, e, true); !ok && !f.omitEmpty {
			b = append(b, '-')
		}
	}
	return b
}

// appendJSON writes the object in the fields' precomputed (sorted) order:
// the same bytes json.Marshal of a map of them gives, without building
// the map. A value that is exactly one command keeps its type (a number
// stays a number; a missing one is null, or left out with omitEmpty); any
// other value is a string in which a missing command is "-" ("" with
// omitEmpty).
func (f *Formatter) appendJSON(b []byte, e *Entry) []byte {
	b = append(b, '{')
	first := true
	var scratch [256]byte
	for i := range f.json {
		jf := &f.json[i]
		if jf.single {
			op := jf.segs[0].op
			s, n, k := op.eval(e)
			if k == kindNone && f.omitEmpty {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, jf.prefix...)
			switch k {
			case kindNum:
				b = strconv.AppendInt(b, n, 10)
			case kindStr:
				if op.underscores {
					v, _ := op.appendValue(scratch[:0], e, false)
					b = appendJSONBytes(b, v)
				} else {
					b = appendJSONString(b, s)
				}
			case kindTime, kindTraceID:
				v, _ := op.appendValue(scratch[:0], e, false)
				b = appendJSONBytes(b, v)
			default:
				b = append(b, "null"...)
			}
			continue
		}
		v := scratch[:0]
		for _, sg := range jf.segs {
			if sg.op == nil {
				v = append(v, sg.lit...)
				continue
			}
			var ok bool
			if v, ok = sg.op.appendValue(v, e, false); !ok && !f.omitEmpty {
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

// appendUnderscored appends s with its whitespace (Envoy's
// replaceAllEmptySpace: space, \t, \n, \v, \f, \r) written as "_", and
// with appendStr's replacements when sanitize is set.
func appendUnderscored(b []byte, s string, sanitize bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c >= '\t' && c <= '\r':
			c = '_'
		case sanitize && (c < 0x20 || c == '"' || c == 0x7f):
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

// sanitizeBytes makes appendStr's replacements in b.
func sanitizeBytes(b []byte) {
	for i, c := range b {
		if c < 0x20 || c == '"' || c == 0x7f {
			b[i] = '_'
		}
	}
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

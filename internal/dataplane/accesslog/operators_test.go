package accesslog

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// operatorEntry has every field the operators below read set; the
// durations have sub-millisecond parts that Envoy's duration_cast
// truncates.
func operatorEntry() *Entry {
	return &Entry{StartTime: time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC), Method: "GET", Path: "/p", Protocol: "HTTP/1.1",
		ResponseCode: 200, UpstreamServiceTime: -1,
		LastDownstreamRxByteReceived: 1500 * time.Microsecond, LastUpstreamTxByteSent: 2999999 * time.Nanosecond,
		FirstUpstreamRxByteReceived: 10999 * time.Microsecond, LastDownstreamTxByteSent: 25001 * time.Microsecond,
		DownstreamHandshakeDuration: 7900 * time.Microsecond, UpstreamRequestAttemptCount: 3, ConnectionID: 42, UpstreamConnectionID: 43,
		UpstreamProtocol: "HTTP/2", UpstreamLocalAddress: "10.0.0.9:41000", UpstreamHost: "10.0.0.1:8080",
		DownstreamLocalAddress: "[fd00::3]:80", DownstreamRemoteAddress: "10.0.0.2:5555", RouteName: "r1",
		RequestedServerName: "svc.example", UpstreamFailureReason: "TLS_error",
		DownstreamPeerURISAN: "spiffe://cluster.local/ns/default/sa/a,spiffe://other/x", DownstreamLocalURISAN: "spiffe://cluster.local/ns/default/sa/b",
		DownstreamTLS:   &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256},
		FilterChainName: "inbound-tls",
		TraceID:         trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
	}
}

// TestOperators: each command operator in text (its value, and "-" or
// Envoy's 0 for an entry without it) and as the one command of a JSON
// value (a number stays a number, a missing value is null).
func TestOperators(t *testing.T) {
	full, empty := operatorEntry(), &Entry{UpstreamServiceTime: -1}
	tests := []struct {
		op                   string
		text, json           string // for full
		emptyText, emptyJSON string // for empty
	}{
		{"REQUEST_DURATION", "1", "1", "-", "null"},
		{"REQUEST_TX_DURATION", "2", "2", "-", "null"},
		{"RESPONSE_DURATION", "10", "10", "-", "null"},
		{"RESPONSE_TX_DURATION", "14", "14", "-", "null"}, // 25.001ms - 10.999ms
		{"DOWNSTREAM_HANDSHAKE_DURATION", "7", "7", "-", "null"},
		{"UPSTREAM_REQUEST_ATTEMPT_COUNT", "3", "3", "0", "0"},
		{"CONNECTION_ID", "42", "42", "0", "0"},
		{"UPSTREAM_CONNECTION_ID", "43", "43", "0", "0"},
		{"UPSTREAM_PROTOCOL", "HTTP/2", `"HTTP/2"`, "-", "null"},
		{"UPSTREAM_LOCAL_ADDRESS", "10.0.0.9:41000", `"10.0.0.9:41000"`, "-", "null"},
		{"UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", "10.0.0.9", `"10.0.0.9"`, "-", "null"},
		{"UPSTREAM_LOCAL_PORT", "41000", "41000", "-", "null"},
		{"UPSTREAM_REMOTE_ADDRESS", "10.0.0.1:8080", `"10.0.0.1:8080"`, "-", "null"},
		{"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "10.0.0.1", `"10.0.0.1"`, "-", "null"},
		{"UPSTREAM_REMOTE_PORT", "8080", "8080", "-", "null"},
		{"DOWNSTREAM_LOCAL_ADDRESS", "[fd00::3]:80", `"[fd00::3]:80"`, "-", "null"},
		{"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", "fd00::3", `"fd00::3"`, "-", "null"},
		{"DOWNSTREAM_LOCAL_PORT", "80", "80", "-", "null"},
		{"DOWNSTREAM_REMOTE_ADDRESS", "10.0.0.2:5555", `"10.0.0.2:5555"`, "-", "null"},
		{"DOWNSTREAM_REMOTE_PORT", "5555", "5555", "-", "null"},
		{"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", "10.0.0.2:5555", `"10.0.0.2:5555"`, "-", "null"},
		{"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", "10.0.0.2", `"10.0.0.2"`, "-", "null"},
		{"DOWNSTREAM_DIRECT_REMOTE_PORT", "5555", "5555", "-", "null"},
		{"DOWNSTREAM_PEER_URI_SAN", "spiffe://cluster.local/ns/default/sa/a,spiffe://other/x",
			`"spiffe://cluster.local/ns/default/sa/a,spiffe://other/x"`, "-", "null"},
		{"DOWNSTREAM_LOCAL_URI_SAN", "spiffe://cluster.local/ns/default/sa/b", `"spiffe://cluster.local/ns/default/sa/b"`, "-", "null"},
		{"TRACE_ID", "4bf92f3577b34da6a3ce929d0e0e4736", `"4bf92f3577b34da6a3ce929d0e0e4736"`, "-", "null"},
		{"DOWNSTREAM_TLS_VERSION", "TLSv1.3", `"TLSv1.3"`, "-", "null"},
		{"DOWNSTREAM_TLS_CIPHER", "TLS_AES_128_GCM_SHA256", `"TLS_AES_128_GCM_SHA256"`, "-", "null"},
		{"FILTER_CHAIN_NAME", "inbound-tls", `"inbound-tls"`, "-", "null"},
		{"ROUTE_NAME", "r1", `"r1"`, "-", "null"},
		{"REQUESTED_SERVER_NAME", "svc.example", `"svc.example"`, "-", "null"},
		{"UPSTREAM_TRANSPORT_FAILURE_REASON", "TLS_error", `"TLS_error"`, "-", "null"},
		{"HOSTNAME", hostname, `"` + hostname + `"`, hostname, `"` + hostname + `"`},
		{"DURATION", "0", "0", "0", "0"},
		{"START_TIME", "2026-01-02T03:04:05.678Z", `"2026-01-02T03:04:05.678Z"`, "0001-01-01T00:00:00.000Z", `"0001-01-01T00:00:00.000Z"`},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			tf, err := ParseTextFormat("%"+tt.op+"%", FormatOptions{})
			if err != nil {
				t.Fatal(err)
			}
			jf, err := ParseJSONFormat(map[string]string{"v": "%" + tt.op + "%", "s": "[%" + tt.op + "%]"}, FormatOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name       string
				e          *Entry
				text, json string
			}{{"full", full, tt.text, tt.json}, {"empty", empty, tt.emptyText, tt.emptyJSON}} {
				if got := string(tf.Append(nil, c.e)); got != c.text {
					t.Errorf("%s text: got %q, want %q", c.name, got, c.text)
				}
				// A command among other text is a string, "-" when missing.
				want := `{"s":"[` + c.text + `]","v":` + c.json + "}\n"
				if got := string(jf.Append(nil, c.e)); got != want {
					t.Errorf("%s json: got %s, want %s", c.name, got, want)
				}
				if got := mapJSON(t, jf, c.e); got != want {
					t.Errorf("%s json oracle: got %s, want %s", c.name, got, want)
				}
			}
		})
	}
}

// TestOperatorEdges: Envoy's rules for a partial timing, a 64-bit trace
// id, an address without a port, omit_empty_values, and the whitespace
// Envoy writes as "_" in a transport failure reason and code details.
func TestOperatorEdges(t *testing.T) {
	for _, tt := range []struct {
		name, format string
		e            *Entry
		omit         bool
		want         string
	}{
		{"response tx needs both ends", "%RESPONSE_DURATION%|%RESPONSE_TX_DURATION%",
			&Entry{FirstUpstreamRxByteReceived: 3 * time.Millisecond}, false, "3|-"},
		{"sub-millisecond is 0", "%REQUEST_DURATION%", &Entry{LastDownstreamRxByteReceived: time.Microsecond}, false, "0"},
		{"TLS 1.2 in OpenSSL's names", "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER%",
			&Entry{DownstreamTLS: &tls.ConnectionState{Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}},
			false, "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256"},
		{"64-bit trace id", "%TRACE_ID%", &Entry{TraceID: trace.TraceID{8: 0xa3, 15: 0x36}}, false, "a300000000000036"},
		{"no port", "%DOWNSTREAM_REMOTE_PORT%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
			&Entry{DownstreamRemoteAddress: "/run/app.sock"}, false, "-|/run/app.sock"},
		{"omit empty", "[%REQUEST_DURATION%][%UPSTREAM_PROTOCOL%][%TRACE_ID%][%CONNECTION_ID%]", &Entry{}, true, "[][][][0]"},
		{"sanitized", `%DOWNSTREAM_PEER_URI_SAN%`, &Entry{DownstreamPeerURISAN: "spiffe://a/\"b\n"}, false, "spiffe://a/_b_"},
		{"failure reason spaces", `"%UPSTREAM_TRANSPORT_FAILURE_REASON%"`,
			&Entry{UpstreamFailureReason: "TLS_error: secret \"x\" not\tavailable"}, false, `"TLS_error:_secret__x__not_available"`},
		{"details spaces", `%RESPONSE_CODE_DETAILS%`, &Entry{ResponseCodeDetails: "ext_authz denied\r\n"}, false, "ext_authz_denied__"},
		{"details allow whitespaces", `%RESPONSE_CODE_DETAILS(ALLOW_WHITESPACES)%`, &Entry{ResponseCodeDetails: "ext_authz denied"}, false, "ext_authz denied"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseTextFormat(tt.format, FormatOptions{OmitEmptyValues: tt.omit})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(f.Append(nil, tt.e)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// JSON gets the underscores too; Istio's text format (AppendEntry)
	// as well.
	e := &Entry{UpstreamFailureReason: "TLS_error: no secret", ResponseCodeDetails: "a b"}
	u, err := ParseJSONFormat(map[string]string{"r": "%UPSTREAM_TRANSPORT_FAILURE_REASON%", "d": "%RESPONSE_CODE_DETAILS%"}, FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(u.Append(nil, e)), `{"d":"a_b","r":"TLS_error:_no_secret"}`+"\n"; got != want || mapJSON(t, u, e) != want {
		t.Errorf("json: got %s, oracle %s, want %s", got, mapJSON(t, u, e), want)
	}
	if got := string(AppendEntry(nil, e)); !strings.Contains(got, ` a_b - "TLS_error:_no_secret" `) {
		t.Errorf("Istio's format: %s", got)
	}
	j, err := ParseJSONFormat(map[string]string{"d": "%RESPONSE_DURATION%", "p": "%UPSTREAM_PORT_NONE%"}, FormatOptions{})
	if err == nil || !strings.Contains(err.Error(), "UPSTREAM_PORT_NONE") {
		t.Errorf("unknown command in json_format: %v, %v", j, err)
	}
	o, _ := ParseJSONFormat(map[string]string{"d": "%RESPONSE_DURATION%", "c": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"}, FormatOptions{OmitEmptyValues: true})
	if got := string(o.Append(nil, &Entry{})); got != `{"c":0}`+"\n" {
		t.Errorf("json omit_empty_values: %s", got)
	}
}

// TestOperatorErrors: an unknown command, or a length or argument on a
// command that takes none, is refused at config time with the command
// named, as Envoy's parser does.
func TestOperatorErrors(t *testing.T) {
	for _, tt := range []struct{ format, want string }{
		{"%VIRTUAL_CLUSTER_NAME%", "%VIRTUAL_CLUSTER_NAME%: unknown or unsupported command"},
		{"%REQUEST_DURATIONS%", "%REQUEST_DURATIONS%: unknown or unsupported command"},
		{"%UPSTREAM_HOST:10%", "%UPSTREAM_HOST:10%: command UPSTREAM_HOST takes no length"},
		{"%REQUEST_DURATION(ms)%", "%REQUEST_DURATION(ms)%: command REQUEST_DURATION takes no argument"},
		{"%RESPONSE_CODE_DETAILS(X)%", "%RESPONSE_CODE_DETAILS(X)%: the argument can only be ALLOW_WHITESPACES"},
		{"a %TRACE_ID b", `not a command at "%TRACE_ID b"`},
	} {
		_, err := ParseTextFormat(tt.format, FormatOptions{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.format, err, tt.want)
		}
	}
}

// BenchmarkFormatOperators: a line of the timing, attempt, connection,
// port, SAN and trace id operators, text and JSON.
func BenchmarkFormatOperators(b *testing.B) {
	ops := []string{"REQUEST_DURATION", "REQUEST_TX_DURATION", "RESPONSE_DURATION", "RESPONSE_TX_DURATION",
		"UPSTREAM_REQUEST_ATTEMPT_COUNT", "CONNECTION_ID", "UPSTREAM_PROTOCOL", "UPSTREAM_LOCAL_PORT",
		"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_PEER_URI_SAN", "TRACE_ID", "START_TIME"}
	var text strings.Builder
	fields := map[string]string{}
	for _, op := range ops {
		text.WriteString("%" + op + "% ")
		fields[strings.ToLower(op)] = "%" + op + "%"
	}
	tf, err := ParseTextFormat(text.String(), FormatOptions{})
	if err != nil {
		b.Fatal(err)
	}
	jf, err := ParseJSONFormat(fields, FormatOptions{})
	if err != nil {
		b.Fatal(err)
	}
	e := operatorEntry()
	buf := make([]byte, 0, 2048)
	for _, f := range []struct {
		name string
		f    *Formatter
	}{{"text", tf}, {"json", jf}} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf = f.f.Append(buf[:0], e)
			}
		})
	}
}

// TestLoggersNeed: only a logger whose format reads REQUEST_TX_DURATION
// or UPSTREAM_CONNECTION_ID asks the connection manager to observe the
// upstream transport for it.
func TestLoggersNeed(t *testing.T) {
	text := func(s string) *Formatter {
		f, err := ParseTextFormat(s, FormatOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	js, err := ParseJSONFormat(map[string]string{"a": "%DURATION%", "tx": "tx=%REQUEST_TX_DURATION%", "c": "%UPSTREAM_CONNECTION_ID%"}, FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	istio := text(IstioTextFormat)
	for _, tt := range []struct {
		name string
		ls   []*AccessLogger
		want Needs
	}{
		{"none", nil, 0},
		{"istio", []*AccessLogger{{Format: istio}}, 0},
		{"text", []*AccessLogger{{Format: istio}, {Format: text("%REQUEST_DURATION% %REQUEST_TX_DURATION%")}}, NeedsUpstreamTx},
		{"json", []*AccessLogger{{Format: js}}, NeedsUpstreamTx | NeedsUpstreamConnectionID},
		{"otel body", []*AccessLogger{{OTel: &OTelLog{Body: text("%UPSTREAM_CONNECTION_ID%")}}}, NeedsUpstreamConnectionID},
		{"otel attribute", []*AccessLogger{{OTel: &OTelLog{Attributes: []OTelAttribute{{Key: "k", Value: text("%REQUEST_TX_DURATION%")}}}}}, NeedsUpstreamTx},
		{"otel other", []*AccessLogger{{OTel: &OTelLog{Body: text("%RESPONSE_DURATION% %CONNECTION_ID%")}}}, 0},
	} {
		if got := LoggersNeed(tt.ls); got != tt.want {
			t.Errorf("%s: %b, want %b", tt.name, got, tt.want)
		}
	}
}

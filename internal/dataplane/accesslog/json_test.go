package accesslog

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// mapJSON is the JSON line as a map marshalled by encoding/json gives it:
// the formatter's output before it wrote fields in a precomputed order,
// kept as the oracle that output must equal byte for byte.
func mapJSON(t *testing.T, f *Formatter, e *Entry) string {
	t.Helper()
	obj := map[string]any{}
	for _, jf := range f.json {
		if jf.single {
			s, n, isNum := jf.segs[0].op.value(e)
			switch {
			case isNum:
				obj[jf.key] = n
			case s == "" && f.omitEmpty:
			case s == "":
				obj[jf.key] = nil
			default:
				obj[jf.key] = s
			}
			continue
		}
		var sb strings.Builder
		for _, sg := range jf.segs {
			if sg.op == nil {
				sb.WriteString(sg.lit)
				continue
			}
			s, _, _ := sg.op.value(e)
			if s == "" && !f.omitEmpty {
				s = "-"
			}
			sb.WriteString(s)
		}
		obj[jf.key] = sb.String()
	}
	js, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(js) + "\n"
}

// TestJSONFormatEqualsMarshal: the JSON line is exactly json.Marshal's
// (sorted keys, numbers kept, null for a missing value, the same escaping)
// for values that need escaping of every kind, with and without
// omit_empty_values, and it parses back to the values logged.
func TestJSONFormatEqualsMarshal(t *testing.T) {
	fields := map[string]string{
		"ua": "%REQ(USER-AGENT)%", "code": "%RESPONSE_CODE%", "bytes": "%BYTES_SENT%", "xff": "%REQ(X-FORWARDED-FOR)%",
		"both": "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%", "lit": "constant <&>",
		"up": "%UPSTREAM_HOST%", `we"ird\key<`: "%REQ(X-USER)%", "é": "%ROUTE_NAME%", "multi_empty": "[%UPSTREAM_HOST%]",
	}
	values := []string{"", "plain", `q"uote`, `back\slash`, "<script>&", "tab\there", "nl\nline", "\x00\x1f\x7f",
		"héllo", "bad\xffutf8", "sep\u2028\u2029", strings.Repeat("long-", 100)}
	for _, omit := range []bool{false, true} {
		f, err := ParseJSONFormat(fields, FormatOptions{OmitEmptyValues: omit})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			e := &Entry{Method: "GET", RequestURI: "/p?" + v, Protocol: "HTTP/1.1", ResponseCode: 503, BytesSent: 42,
				UserAgent: v, ForwardedFor: v, RouteName: v, RequestHeader: http.Header{"X-User": {v}}}
			got := string(f.Append(nil, e))
			if want := mapJSON(t, f, e); got != want {
				t.Errorf("omit=%v value %q:\n got %s\nwant %s", omit, v, got, want)
			}
			var back map[string]any
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatalf("omit=%v value %q: %s does not parse: %v", omit, v, got, err)
			}
			if back["code"] != float64(503) || back["bytes"] != float64(42) || back["lit"] != "constant <&>" {
				t.Errorf("omit=%v: typed values lost: %s", omit, got)
			}
			_, hasUA := back["ua"]
			switch {
			case v == "" && omit && hasUA:
				t.Errorf("omit_empty_values: empty ua present: %s", got)
			case v == "" && !omit && (!hasUA || back["ua"] != nil):
				t.Errorf("empty ua is not null: %s", got)
			case v != "" && strings.ToValidUTF8(v, "\ufffd") != back["ua"]:
				t.Errorf("ua %q came back as %q", v, back["ua"])
			}
		}
	}
	if f, _ := ParseJSONFormat(map[string]string{}, FormatOptions{}); string(f.Append(nil, &Entry{})) != "{}\n" {
		t.Errorf("empty json_format: %q", f.Append(nil, &Entry{}))
	}
}

// TestOmitEmptyValues: Envoy's omit_empty_values. Text: an empty operator
// prints nothing instead of "-". JSON: a key whose value is one empty
// operator is left out instead of null; inside a string of several parts
// the empty operator is "" instead of "-".
func TestOmitEmptyValues(t *testing.T) {
	e := &Entry{StartTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Method: "GET", Path: "/a", RequestURI: "/a",
		Protocol: "HTTP/1.1", ResponseCode: 200, UpstreamServiceTime: -1}
	for _, tt := range []struct {
		format string
		omit   bool
		want   string
	}{
		{"%REQ(X-NONE)%|%UPSTREAM_HOST%|%RESPONSE_CODE%|%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", false, "-|-|200|-"},
		{"%REQ(X-NONE)%|%UPSTREAM_HOST%|%RESPONSE_CODE%|%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", true, "||200|"},
		// Envoy's response flags are "-" for none, never empty.
		{"%REQ(:METHOD)% %PROTOCOL% %RESPONSE_FLAGS%", true, "GET HTTP/1.1 -"},
	} {
		f, err := ParseTextFormat(tt.format, FormatOptions{OmitEmptyValues: tt.omit})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(f.Append(nil, e)); got != tt.want {
			t.Errorf("%q omit=%v: got %q, want %q", tt.format, tt.omit, got, tt.want)
		}
	}
	// Istio's default format is written by AppendEntry unless empty
	// values are omitted; then it is parsed like any other.
	plain, _ := ParseTextFormat(IstioTextFormat, FormatOptions{})
	omit, _ := ParseTextFormat(IstioTextFormat, FormatOptions{OmitEmptyValues: true})
	if got := string(plain.Append(nil, e)); !strings.Contains(got, `"GET /a HTTP/1.1" 200 - - - "-" 0 0 0 - "-" "-" "-" "-" "-" - - - - - -`) {
		t.Errorf("Istio format: %q", got)
	}
	if got := string(omit.Append(nil, e)); !strings.Contains(got, `"GET /a HTTP/1.1" 200 -   "" 0 0 0  "" "" "" "" ""      `+"\n") {
		t.Errorf("Istio format, omit_empty_values: %q", got)
	}
	j, _ := ParseJSONFormat(map[string]string{"up": "%UPSTREAM_HOST%", "m": "%REQ(:METHOD)%", "s": "[%UPSTREAM_HOST%]"}, FormatOptions{OmitEmptyValues: true})
	if got := string(j.Append(nil, e)); got != `{"m":"GET","s":"[]"}`+"\n" {
		t.Errorf("json, omit_empty_values: %q", got)
	}
	j, _ = ParseJSONFormat(map[string]string{"up": "%UPSTREAM_HOST%", "m": "%REQ(:METHOD)%", "s": "[%UPSTREAM_HOST%]"}, FormatOptions{})
	if got := string(j.Append(nil, e)); got != `{"m":"GET","s":"[-]","up":null}`+"\n" {
		t.Errorf("json: %q", got)
	}
}

package filter

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// AppendAction is envoy.config.core.v3.HeaderValueOption.HeaderAppendAction.
type AppendAction int

// Header append actions.
const (
	// AppendIfExistsOrAdd appends the value to the header's values, or
	// adds the header (the default, and append: true).
	AppendIfExistsOrAdd AppendAction = iota
	// AddIfAbsent adds the header only when it is not there.
	AddIfAbsent
	// OverwriteIfExistsOrAdd replaces the header's values, or adds it
	// (append: false).
	OverwriteIfExistsOrAdd
	// OverwriteIfExists replaces the header's values only when it is
	// there.
	OverwriteIfExists
)

// HeaderOption is one envoy.config.core.v3.HeaderValueOption of a
// *_headers_to_add field (a route's, a virtual host's, a route
// configuration's, a rate limit filter's): a literal value for the
// canonical header Key, with Envoy's append_action and keep_empty_value.
// It is immutable.
type HeaderOption struct {
	Key    string // canonical
	Value  string // literal: "%%" already unescaped
	Action AppendAction
	// KeepEmpty adds the header even when Value is "" (keep_empty_value);
	// otherwise an empty value adds nothing, as Envoy drops it.
	KeepEmpty bool
}

// Apply adds h to hdr as its append action says. New values are fresh
// slices: hdr never shares memory with the config.
func (h *HeaderOption) Apply(hdr http.Header) {
	if h.Value == "" && !h.KeepEmpty {
		return
	}
	vs, present := hdr[h.Key]
	switch h.Action {
	case AppendIfExistsOrAdd:
		hdr[h.Key] = append(vs[:len(vs):len(vs)], h.Value)
	case AddIfAbsent:
		if !present {
			hdr[h.Key] = []string{h.Value}
		}
	case OverwriteIfExistsOrAdd:
		hdr[h.Key] = []string{h.Value}
	case OverwriteIfExists:
		if present {
			hdr[h.Key] = []string{h.Value}
		}
	}
}

// ParseHeaderOptions validates the HeaderValueOptions of the field at path
// (such as "response_headers_to_add") as Envoy's HeaderParser does: a
// header name that may be modified (CheckMutableHeader), value or
// raw_value (not both), a literal value ("%%" is a percent sign; a
// %COMMAND% substitution is refused, as Loom implements none), and append
// or append_action, not both. Errors are *FieldError, as
// `response_headers_to_add[0].header.value = "%START_TIME%": must be a literal: ...`.
// Nil opts give nil.
func ParseHeaderOptions(path string, opts []*corev3.HeaderValueOption) ([]HeaderOption, error) {
	var out []HeaderOption
	for i, o := range opts {
		p := path + "[" + strconv.Itoa(i) + "]"
		hv := o.GetHeader()
		if hv == nil {
			return nil, FieldErr(p+".header", "must be set")
		}
		if err := CheckMutableHeader(p+".header.key", hv.GetKey()); err != nil {
			return nil, err
		}
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			if v != "" {
				return nil, FieldErr(p+".header", "only one of value and raw_value may be set")
			}
			v = string(hv.GetRawValue())
		}
		lit, err := literalHeaderValue(v)
		if err != nil {
			return nil, ValueErr(p+".header.value", v, "%s", err)
		}
		h := HeaderOption{Key: http.CanonicalHeaderKey(hv.GetKey()), Value: lit, KeepEmpty: o.GetKeepEmptyValue()}
		//nolint:staticcheck // append is deprecated but still sent by control planes.
		if ap := o.GetAppend(); ap != nil {
			if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, FieldErr(p, "append and append_action must not both be set")
			}
			if !ap.GetValue() {
				h.Action = OverwriteIfExistsOrAdd
			}
		} else {
			switch o.GetAppendAction() {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				h.Action = AppendIfExistsOrAdd
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				h.Action = AddIfAbsent
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				h.Action = OverwriteIfExistsOrAdd
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				h.Action = OverwriteIfExists
			default:
				return nil, ValueErr(p+".append_action", o.GetAppendAction().String(), "unknown append action")
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// CheckMutableHeader refuses, at path, a header name Envoy refuses to add
// or remove (Http::HeaderUtility::isModifiableHeader, and the name rules
// of HeaderValue.key): an empty or invalid name, a ":"-pseudo-header and
// host. The error is a *FieldError.
func CheckMutableHeader(path, k string) error {
	switch {
	case k == "":
		return FieldErr(path, "must not be empty")
	case strings.HasPrefix(k, ":") || strings.EqualFold(k, "host"):
		return ValueErr(path, k, "must not be a pseudo-header or host")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return ValueErr(path, k, "must be a valid header name")
		}
	}
	return nil
}

// literalHeaderValue returns v with "%%" unescaped; a value that uses a
// %COMMAND% (Envoy's substitution formatter) is an error, as this version
// implements none, and so is a value with a control character.
func literalHeaderValue(v string) (string, error) {
	if strings.ContainsAny(v, "\r\n\x00") {
		return "", errString("must not contain CR, LF or NUL")
	}
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", errString("must be a literal: %COMMAND% substitutions are not supported (write %% for a percent sign)")
	}
	return b.String(), nil
}

type errString string

func (e errString) Error() string { return string(e) }

// FieldError is a validation failure at a field path inside one xDS
// resource, printed `path = "value": msg`, or `path: msg` without Value.
// Whoever parses the enclosing message prefixes Path with its own fields
// (config's under), so the error names the whole path.
type FieldError struct {
	Path  string
	Value *string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Value != nil {
		return fmt.Sprintf("%s = %q: %s", e.Path, *e.Value, e.Msg)
	}
	return e.Path + ": " + e.Msg
}

// FieldErr is a *FieldError at path without a value.
func FieldErr(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// ValueErr is a *FieldError at path that quotes value.
func ValueErr(path, value, format string, args ...any) error {
	return &FieldError{Path: path, Value: &value, Msg: fmt.Sprintf(format, args...)}
}

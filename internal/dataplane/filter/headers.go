package filter

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// HeaderOption is one envoy.config.core.v3.HeaderValueOption a filter adds
// (response_headers_to_add and the like): a literal value. It is
// immutable.
type HeaderOption struct {
	Key, Value string // Key is canonical
	// Overwrite replaces existing values (OVERWRITE_IF_EXISTS_OR_ADD, or
	// the deprecated append: false); otherwise the value is appended.
	Overwrite bool
	// IfAbsent adds the header only when it is not there (ADD_IF_ABSENT).
	IfAbsent bool
	// IfExists sets it only when it is there (OVERWRITE_IF_EXISTS).
	IfExists bool
}

// Apply adds h to hdr as its append action says.
func (h HeaderOption) Apply(hdr http.Header) {
	_, present := hdr[h.Key]
	switch {
	case h.IfAbsent && present, h.IfExists && !present:
		return
	case h.Overwrite || h.IfExists:
		hdr[h.Key] = []string{h.Value}
	default:
		hdr[h.Key] = append(hdr[h.Key], h.Value)
	}
}

// ParseHeaderOptions validates the HeaderValueOptions at path (such as
// "response_headers_to_add"): a header name that is not a pseudo-header, a
// literal value (%COMMAND% substitution is refused), and append or
// append_action, not both. Errors name the field, as
// "response_headers_to_add[0].header.value = "%START_TIME%": must be literal ...".
func ParseHeaderOptions(path string, opts []*corev3.HeaderValueOption) ([]HeaderOption, error) {
	var out []HeaderOption
	for i, o := range opts {
		p := path + "[" + strconv.Itoa(i) + "]"
		hv := o.GetHeader()
		k := http.CanonicalHeaderKey(hv.GetKey())
		switch {
		case hv == nil:
			return nil, fmt.Errorf("%s.header: must be set", p)
		case k == "" || strings.HasPrefix(k, ":"):
			return nil, fmt.Errorf("%s.header.key = %q: must be a header name (not empty, not a pseudo-header)", p, hv.GetKey())
		case len(hv.GetRawValue()) > 0:
			return nil, fmt.Errorf("%s.header.raw_value: not supported (use value)", p)
		case strings.Contains(hv.GetValue(), "%"):
			return nil, fmt.Errorf("%s.header.value = %q: must be literal (%%COMMAND%% substitution is not supported)", p, hv.GetValue())
		}
		h := HeaderOption{Key: k, Value: hv.GetValue()}
		if ap := o.GetAppend(); ap != nil {
			if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, fmt.Errorf("%s: append and append_action must not both be set", p)
			}
			h.Overwrite = !ap.GetValue()
		} else {
			switch o.GetAppendAction() {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				h.IfAbsent = true
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				h.Overwrite = true
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				h.IfExists = true
			default:
				return nil, fmt.Errorf("%s.append_action = %s: unknown append action", p, o.GetAppendAction())
			}
		}
		out = append(out, h)
	}
	return out, nil
}

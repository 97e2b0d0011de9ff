package bookinfo

import (
	"net/http"
)

// PropagatedHeaders lists the incoming request headers every service copies
// to its outgoing calls, as Istio's Bookinfo services do: the request ID, W3C
// trace context, B3 (multi and single header), Lightstep span context, and the
// application headers end-user and user-agent.
var PropagatedHeaders = []string{
	"x-request-id",
	"traceparent",
	"tracestate",
	"x-b3-traceid",
	"x-b3-spanid",
	"x-b3-parentspanid",
	"x-b3-sampled",
	"x-b3-flags",
	"b3",
	"x-ot-span-context",
	"end-user",
	"user-agent",
}

// forwardHeaders returns the headers of in that are in PropagatedHeaders.
func forwardHeaders(in http.Header) http.Header {
	out := make(http.Header, len(PropagatedHeaders))
	for _, name := range PropagatedHeaders {
		if vs := in.Values(name); len(vs) > 0 {
			out[http.CanonicalHeaderKey(name)] = append([]string(nil), vs...)
		}
	}
	return out
}

package filter

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// IsGRPC reports whether h's content-type is gRPC's, as Envoy's
// Grpc::Common::hasGrpcContentType: "application/grpc" alone or followed
// by '+' or ';' ("application/grpc+proto"). gRPC-Web is not gRPC here.
func IsGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	rest, ok := strings.CutPrefix(ct[0], "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// GRPCStatusForHTTP is the grpc-status Envoy gives a local reply of HTTP
// status code sent to a gRPC client (Grpc::Utility::httpToGrpcStatus).
func GRPCStatusForHTTP(code int) int {
	switch code {
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// LocalReply answers r itself, as Envoy's Http::Utility::sendLocalReply:
// code with body as text/plain (unless a content-type is already set).
// A gRPC request (IsGRPC) gets a trailers-only gRPC response instead:
// HTTP 200, application/grpc, grpc-status grpcStatus (GRPCStatusForHTTP of
// code when grpcStatus < 0) and body, percent-encoded, as grpc-message, so
// gRPC clients see a status rather than a protocol error. It returns the
// HTTP status written and the body bytes written.
func LocalReply(w http.ResponseWriter, r *http.Request, code, grpcStatus int, body string) (int, int64) {
	h := w.Header()
	if r != nil && IsGRPC(r.Header) {
		if grpcStatus < 0 {
			grpcStatus = GRPCStatusForHTTP(code)
		}
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{strconv.Itoa(grpcStatus)}
		if body != "" {
			h["Grpc-Message"] = []string{grpcMessage(body)}
		}
		h["Content-Length"] = []string{"0"}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK, 0
	}
	if body != "" && len(h["Content-Type"]) == 0 {
		h["Content-Type"] = []string{"text/plain"}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(code)
	if body == "" {
		return code, 0
	}
	n, _ := io.WriteString(w, body)
	return code, int64(n)
}

// grpcMessage percent-encodes s as the gRPC HTTP/2 protocol asks of
// grpc-message: every byte outside printable ASCII, and '%', as %XX.
func grpcMessage(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

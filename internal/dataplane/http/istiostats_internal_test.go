package http

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"testing"

	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
)

// TestTotalSizes checks Envoy's request.total_size and response.total_size
// as totalSizes counts them (header maps' byteSize plus body) on the
// shapes TestIstioStatsSizes does not send, and that counting them does
// not allocate.
func TestTotalSizes(t *testing.T) {
	get := func(uri string) *http.Request {
		u, err := url.ParseRequestURI(uri)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Request{Method: "GET", RequestURI: uri, URL: u, Header: http.Header{"A": {"bc"}}}
	}
	reqHeaders := len(":method") + len("GET") + len(":path") + len("/x") + len(":authority") + len("svc") +
		len(":scheme") + len("http") + len("A") + len("bc")
	for _, tc := range []struct {
		name              string
		r                 *http.Request
		resp              http.Header
		code              int
		recv, sent        int64
		wantReq, wantResp int64
	}{
		{name: "origin form", r: get("/x"), resp: http.Header{"B": {"1", "22"}}, code: 200, recv: 3, sent: 4,
			wantReq: int64(reqHeaders) + 3, wantResp: int64(len(":status")+len("200")+len("B")+len("1")+len("B")+len("22")) + 4},
		// An explicit proxy's absolute-form request: :path is its path.
		{name: "absolute form", r: get("http://svc/x"), code: 204,
			wantReq: int64(reqHeaders), wantResp: int64(len(":status") + len("204"))},
		{name: "absolute form without path", r: get("http://svc"), code: 200,
			wantReq: int64(reqHeaders - len("/x") + len("/")), wantResp: int64(len(":status") + len("200"))},
		{name: "tls", r: func() *http.Request { r := get("/x"); r.TLS = &tls.ConnectionState{}; return r }(), code: 200,
			wantReq: int64(reqHeaders - len("http") + len("https")), wantResp: int64(len(":status") + len("200"))},
		// net/http's trailer announcement is not a header; trailers count
		// by their own names.
		{name: "trailers", r: get("/x"), code: 200, sent: 5,
			resp:    http.Header{"Trailer": {"Grpc-Status"}, http.TrailerPrefix + "Grpc-Status": {"0"}},
			wantReq: int64(reqHeaders), wantResp: int64(len(":status")+len("200")+len("Grpc-Status")+len("0")) + 5},
		// The client went away before any response: no response headers.
		{name: "no response", r: get("/x"), resp: http.Header{"X-Set-Early": {"v"}}, code: 0, recv: 7,
			wantReq: int64(reqHeaders) + 7, wantResp: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &telemetry.Entry{Authority: "svc", BytesReceived: tc.recv, BytesSent: tc.sent, ResponseCode: tc.code}
			req, resp := totalSizes(tc.r, tc.resp, e)
			if req != tc.wantReq || resp != tc.wantResp {
				t.Errorf("totalSizes = %d, %d; want %d, %d", req, resp, tc.wantReq, tc.wantResp)
			}
			if n := testing.AllocsPerRun(100, func() { totalSizes(tc.r, tc.resp, e) }); n != 0 {
				t.Errorf("totalSizes allocates %v times", n)
			}
		})
	}
}

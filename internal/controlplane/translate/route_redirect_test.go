package translate

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	networking "istio.io/api/networking/v1alpha3"
)

func TestRedirectAction(t *testing.T) {
	tests := []struct {
		name string
		in   *networking.HTTPRedirect
		want *routev3.RedirectAction
	}{
		{"uri and authority, 301 by default", &networking.HTTPRedirect{Uri: "/new", Authority: "example.com"}, &routev3.RedirectAction{
			HostRedirect:         "example.com",
			PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"},
			ResponseCode:         routev3.RedirectAction_MOVED_PERMANENTLY}},
		{"prefixRewrite, scheme and 308", &networking.HTTPRedirect{PrefixRewrite: "/v2", Scheme: "https", RedirectCode: 308}, &routev3.RedirectAction{
			PathRewriteSpecifier:   &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/v2"},
			SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"},
			ResponseCode:           routev3.RedirectAction_PERMANENT_REDIRECT}},
		{"port", &networking.HTTPRedirect{Authority: "a", RedirectPort: &networking.HTTPRedirect_Port{Port: 8443}, RedirectCode: 302}, &routev3.RedirectAction{
			HostRedirect: "a", PortRedirect: 8443, ResponseCode: routev3.RedirectAction_FOUND}},
		{"derivePort FROM_REQUEST_PORT is the listener's", &networking.HTTPRedirect{Uri: "/x", RedirectCode: 303,
			RedirectPort: &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_REQUEST_PORT}}, &routev3.RedirectAction{
			PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/x"},
			PortRedirect:         9080, ResponseCode: routev3.RedirectAction_SEE_OTHER}},
		{"derivePort FROM_PROTOCOL_DEFAULT sets none", &networking.HTTPRedirect{Uri: "/x", RedirectCode: 307,
			RedirectPort: &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_PROTOCOL_DEFAULT}}, &routev3.RedirectAction{
			PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/x"},
			ResponseCode:         routev3.RedirectAction_TEMPORARY_REDIRECT}},
		{"http default port dropped", &networking.HTTPRedirect{Authority: "a", RedirectPort: &networking.HTTPRedirect_Port{Port: 80}}, &routev3.RedirectAction{
			HostRedirect: "a", ResponseCode: routev3.RedirectAction_MOVED_PERMANENTLY}},
		{"https default port dropped", &networking.HTTPRedirect{Scheme: "https", RedirectPort: &networking.HTTPRedirect_Port{Port: 443}}, &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"},
			ResponseCode:           routev3.RedirectAction_MOVED_PERMANENTLY}},
		{"https to port 80 kept", &networking.HTTPRedirect{Scheme: "https", RedirectPort: &networking.HTTPRedirect_Port{Port: 80}}, &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"},
			PortRedirect:           80, ResponseCode: routev3.RedirectAction_MOVED_PERMANENTLY}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, redirectAction(tt.in, 9080), protocmp.Transform()); diff != "" {
				t.Errorf("redirectAction (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDirectResponseAction(t *testing.T) {
	tests := []struct {
		name string
		in   *networking.HTTPDirectResponse
		want *routev3.DirectResponseAction
	}{
		{"status only", &networking.HTTPDirectResponse{Status: 503}, &routev3.DirectResponseAction{Status: 503}},
		{"string body", &networking.HTTPDirectResponse{Status: 200, Body: &networking.HTTPBody{Specifier: &networking.HTTPBody_String_{String_: "ok"}}},
			&routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok"}}}},
		{"bytes body", &networking.HTTPDirectResponse{Status: 418, Body: &networking.HTTPBody{Specifier: &networking.HTTPBody_Bytes{Bytes: []byte{0, 1}}}},
			&routev3.DirectResponseAction{Status: 418, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte{0, 1}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, directResponseAction(tt.in), protocmp.Transform()); diff != "" {
				t.Errorf("directResponseAction (-want +got):\n%s", diff)
			}
		})
	}
}

package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// redirectCodes maps HTTPRedirect.redirectCode to Envoy's
// RedirectAction.response_code; 0 is Istio's default, 301. Validation
// refuses the other 3xx codes, which Envoy cannot send (Istio drops the
// route's action for them).
var redirectCodes = map[uint32]routev3.RedirectAction_RedirectResponseCode{
	0:   routev3.RedirectAction_MOVED_PERMANENTLY,
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

// redirectAction translates HTTPRoute.redirect as Istio's ApplyRedirect
// for a plain-text listener on port: uri to path_redirect (an empty uri
// keeps the request's path, as an empty path_redirect does in Envoy, so it
// is left unset), prefixRewrite to prefix_rewrite, authority to
// host_redirect, scheme to scheme_redirect, port to port_redirect and
// derivePort FROM_REQUEST_PORT to the listener's port (FROM_PROTOCOL_DEFAULT
// sets none). A port that is the scheme's default (80 for http, the scheme
// when none is given) is dropped, as Istio does. redirectCode maps to
// response_code; an unknown code gives 301.
func redirectAction(r *networking.HTTPRedirect, listenerPort uint32) *routev3.RedirectAction {
	out := &routev3.RedirectAction{HostRedirect: r.GetAuthority()}
	switch {
	case r.GetUri() != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.GetUri()}
	case r.GetPrefixRewrite() != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: r.GetPrefixRewrite()}
	}
	if s := r.GetScheme(); s != "" {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: s}
	}
	if r.GetRedirectPort() != nil {
		switch p := r.GetRedirectPort().(type) {
		case *networking.HTTPRedirect_DerivePort:
			if p.DerivePort == networking.HTTPRedirect_FROM_REQUEST_PORT {
				// Envoy cannot derive the port from the request, but a
				// route table is built for one listener port.
				out.PortRedirect = listenerPort
			}
		case *networking.HTTPRedirect_Port:
			out.PortRedirect = p.Port
		}
		scheme := r.GetScheme()
		if scheme == "" {
			scheme = "http" // Loom serves no TLS listener yet.
		}
		if (out.PortRedirect == 80 && scheme == "http") || (out.PortRedirect == 443 && scheme == "https") {
			out.PortRedirect = 0
		}
	}
	out.ResponseCode = redirectCodes[r.GetRedirectCode()]
	return out
}

// directResponseAction translates HTTPRoute.directResponse: status, and
// body.string as an inline string or body.bytes as inline bytes.
func directResponseAction(d *networking.HTTPDirectResponse) *routev3.DirectResponseAction {
	out := &routev3.DirectResponseAction{Status: d.GetStatus()}
	switch b := d.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: b.String_}}
	case *networking.HTTPBody_Bytes:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b.Bytes}}
	}
	return out
}

package http_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter/jwtauthn"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const jwtSamples = "../../../../shared/istio-samples/jwt/"

func readJWTSample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(jwtSamples + name)
	if err != nil {
		t.Fatalf("Istio's JWT samples are missing (%v)", err)
	}
	return strings.TrimSpace(string(b))
}

// jwtListener is httpListener with the jwt_authn filter Istio makes of a
// RequestAuthentication for issuer with inline jwks, outputPayloadToHeader
// x-jwt-payload, forwardOriginalToken forward.
func jwtListener(t *testing.T, name, addr, route, issuer, jwks string, forward bool) *listenerv3.Listener {
	return jwtProviderListener(t, name, addr, route, &jwtv3.JwtProvider{
		Issuer: issuer, Forward: forward, ForwardPayloadHeader: "x-jwt-payload", PayloadInMetadata: "payload",
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}},
	})
}

// jwtProviderListener is httpListener with a jwt_authn filter of one
// provider "origins-0", required unless the token is missing.
func jwtProviderListener(t *testing.T, name, addr, route string, p *jwtv3.JwtProvider) *listenerv3.Listener {
	l := httpListener(t, name, addr, route)
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	cfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": p},
		Rules: []*jwtv3.RequirementRule{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{
				RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{
					{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}},
					{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}},
				}}}}},
		}},
		BypassCorsPreflight: true,
	}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: jwtauthn.Name,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, cfg)}}}, hcm.HttpFilters...)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
	return l
}

// TestJWTOverSockets runs Istio's JWT task through a proxy on real
// sockets: an invalid, expired or foreign token gets 401 with Envoy's text
// and www-authenticate, demo.jwt and no token reach the upstream, the
// verified payload is carried upstream in outputPayloadToHeader, the token
// is stripped unless forwardOriginalToken, and the access log has the
// reply's details but never a token.
func TestJWTOverSockets(t *testing.T) {
	be := startBackend(t, "be", false, nil)
	issuer, jwks := "testing@secure.istio.io", readJWTSample(t, "jwks.json")
	demo := readJWTSample(t, "demo.jwt")
	var tokens struct {
		Tokens []struct{ Name, Token string } `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(readJWTSample(t, "e2e/tokens.json")), &tokens); err != nil {
		t.Fatal(err)
	}
	foreign := tokens.Tokens[0].Token
	lAddr := closedAddr(t)
	start1 := func(forward bool) *proxy {
		g := build(t, nil, []*listenerv3.Listener{jwtListener(t, "l", lAddr, "rt", issuer, jwks, forward)},
			[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "be")))},
			[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)})
		return startProxy(t, g)
	}
	p := start1(false)
	tests := []struct {
		name, auth string
		wantCode   int
		wantBody   string
	}{
		{"invalid", "Bearer invalidToken", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"foreign issuer", "Bearer " + foreign, 401, "Jwt issuer is not configured"},
		{"valid", "Bearer " + demo, 200, "be"},
		{"missing", "", 200, "be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rid := "jwt-" + strings.ReplaceAll(tt.name, " ", "-")
			hdr := map[string]string{"X-Request-Id": rid}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			before := be.hits.Load()
			r := p.do("GET", "httpbin", "/headers", hdr, nil)
			if r.code != tt.wantCode || r.body != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", r.code, r.body, tt.wantCode, tt.wantBody)
			}
			line := p.logLine(rid)
			if strings.Contains(line, "invalidToken") || strings.Contains(line, demo) || strings.Contains(line, foreign) {
				t.Fatalf("the access log has the token: %s", line)
			}
			if tt.wantCode == 401 {
				if be.hits.Load() != before {
					t.Fatal("a refused request reached the upstream")
				}
				if got := r.header.Get("Www-Authenticate"); got != `Bearer realm="http://httpbin/headers", error="invalid_token"` {
					t.Fatalf("www-authenticate %q", got)
				}
				if !strings.Contains(line, " 401 ") || !strings.Contains(line, "jwt_authn_access_denied{") {
					t.Fatalf("access log line %q lacks 401 and the details", line)
				}
				return
			}
			up := be.last.Load()
			if up.Header.Get("Authorization") != "" {
				t.Fatal("the token went upstream although forwardOriginalToken is false")
			}
			if tt.name == "valid" {
				payload, err := base64.RawURLEncoding.DecodeString(up.Header.Get("X-Jwt-Payload"))
				if err != nil || !strings.Contains(string(payload), `"foo":"bar"`) {
					t.Fatalf("x-jwt-payload %q (%v): want demo.jwt's payload", up.Header.Get("X-Jwt-Payload"), err)
				}
			} else if up.Header.Get("X-Jwt-Payload") != "" {
				t.Fatal("x-jwt-payload without a token")
			}
		})
	}

	// forwardOriginalToken: the upstream gets the token too.
	p.apply(build(t, nil, []*listenerv3.Listener{jwtListener(t, "l", lAddr, "rt", issuer, jwks, true)},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "be")))},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)}))
	// A kept-alive connection of the changed chain drains: its next
	// request may still be served by the old chain (as in Envoy), so poll.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r := p.do("GET", "httpbin", "/headers", map[string]string{"Authorization": "Bearer " + demo}, nil); r.code != 200 {
			t.Fatalf("forward: %d %q", r.code, r.body)
		}
		got := be.last.Load().Header.Get("Authorization")
		if got == "Bearer "+demo {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("forward: upstream Authorization %q 5 s after the update", got)
		}
	}
}

package rbac

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// buildHTTP parses and builds an HTTP RBAC filter from m.
func buildHTTP(t testing.TB, m *rbachttpv3.RBAC) filter.Filter {
	t.Helper()
	cfg, err := Factory{}.Parse(mustAny(t, m))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Factory{}.Build(cfg, filter.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// serve runs fs in order in front of a 200 handler, as the connection
// manager does, and returns the recorder, the State and whether the
// request got through.
func serve(fs []filter.Filter, r *http.Request, override filter.Config) (*httptest.ResponseRecorder, *filter.State, bool) {
	return serveWith(fs, r, override, &filter.State{})
}

// serveWith is serve with st as the request's State.
func serveWith(fs []filter.Filter, r *http.Request, override filter.Config, st *filter.State) (*httptest.ResponseRecorder, *filter.State, bool) {
	r = r.WithContext(filter.NewContext(r.Context(), st))
	w := httptest.NewRecorder()
	passed := false
	var next func(i int) http.Handler
	next = func(i int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if i == len(fs) {
				passed = true
				w.WriteHeader(http.StatusOK)
				return
			}
			st.Override = override
			fs[i].ServeHTTP(w, r, next(i+1))
		})
	}
	next(0).ServeHTTP(w, r)
	return w, st, passed
}

func getPolicy() *rbacv3.Policy {
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{permHeader(":method", exact("GET"))}, Principals: []*rbacv3.Principal{princAny()}}
}

func TestHTTPFilterDenies(t *testing.T) {
	deny := buildHTTP(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY,
		Policies: map[string]*rbacv3.Policy{"ns[foo]-policy[deny-get]-rule[0]": getPolicy()}}})
	w, st, passed := serve([]filter.Filter{deny}, httptest.NewRequest("GET", "/", nil), nil)
	if passed || w.Code != http.StatusForbidden || w.Body.String() != "RBAC: access denied" || w.Header().Get("Content-Type") != "text/plain" {
		t.Fatalf("denied GET: passed %v, %d %q %v", passed, w.Code, w.Body.String(), w.Header())
	}
	if st.ReplyCode != 403 || st.ReplyDetails != "rbac_access_denied_matched_policy[ns[foo]-policy[deny-get]-rule[0]]" || st.ReplyBytes != 19 {
		t.Errorf("state = %+v", st)
	}
	if _, _, passed := serve([]filter.Filter{deny}, httptest.NewRequest("POST", "/", nil), nil); !passed {
		t.Error("POST denied by a GET-only DENY policy")
	}

	allowNothing := buildHTTP(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}})
	_, st, passed = serve([]filter.Filter{allowNothing}, httptest.NewRequest("GET", "/", nil), nil)
	if passed || st.ReplyDetails != "rbac_access_denied_matched_policy[none]" {
		t.Errorf("allow-nothing: passed %v, details %q", passed, st.ReplyDetails)
	}

	// A gRPC client gets the denial as a gRPC status.
	r := httptest.NewRequest("POST", "/pkg.Svc/Method", nil)
	r.Header.Set("Content-Type", "application/grpc")
	w, _, _ = serve([]filter.Filter{allowNothing}, r, nil)
	if w.Code != 200 || w.Header().Get("Grpc-Status") != "7" || w.Header().Get("Grpc-Message") != "RBAC: access denied" {
		t.Errorf("gRPC denial: %d %v", w.Code, w.Header())
	}
}

// TestDenyBeforeAllow: Istio's chain has the DENY filter before the ALLOW
// one; a request a DENY policy matches never reaches the ALLOW filter,
// whatever it allows.
func TestDenyBeforeAllow(t *testing.T) {
	deny := buildHTTP(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"deny": getPolicy()}}})
	allowAll := buildHTTP(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"all": {
		Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{princAny()}}}}})
	chain := []filter.Filter{deny, allowAll}
	if _, st, passed := serve(chain, httptest.NewRequest("GET", "/", nil), nil); passed || st.ReplyDetails != "rbac_access_denied_matched_policy[deny]" {
		t.Errorf("GET: passed %v (%q)", passed, st.ReplyDetails)
	}
	if _, _, passed := serve(chain, httptest.NewRequest("PUT", "/", nil), nil); !passed {
		t.Error("PUT denied")
	}
}

func TestShadowAndLog(t *testing.T) {
	// Istio's CUSTOM shape: DENY shadow rules whose match enables ext_authz.
	custom := buildHTTP(t, &rbachttpv3.RBAC{ShadowRulesStatPrefix: "istio_ext_authz_", ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY,
		Policies: map[string]*rbacv3.Policy{"istio-ext-authz-default-ns[foo]-policy[a]-rule[0]": getPolicy()}}})
	_, st, passed := serve([]filter.Filter{custom}, httptest.NewRequest("GET", "/", nil), nil)
	want := map[string]map[string]any{"envoy.filters.http.rbac": {
		"istio_ext_authz_shadow_effective_policy_id": "istio-ext-authz-default-ns[foo]-policy[a]-rule[0]",
		"istio_ext_authz_shadow_engine_result":       "denied",
	}}
	if !passed {
		t.Error("shadow rules denied a request")
	}
	if diff := cmp.Diff(want, st.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	_, st, _ = serve([]filter.Filter{custom}, httptest.NewRequest("PUT", "/", nil), nil)
	if diff := cmp.Diff(map[string]map[string]any{"envoy.filters.http.rbac": {"istio_ext_authz_shadow_engine_result": "allowed"}}, st.Metadata); diff != "" {
		t.Errorf("unmatched metadata (-want +got):\n%s", diff)
	}

	audit := buildHTTP(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{"audit": getPolicy()}}})
	for method, hint := range map[string]bool{"GET": true, "PUT": false} {
		_, st, passed := serve([]filter.Filter{audit}, httptest.NewRequest(method, "/", nil), nil)
		if !passed || st.Metadata["envoy.common"]["access_log_hint"] != hint {
			t.Errorf("%s audit: passed %v, metadata %v", method, passed, st.Metadata)
		}
	}
}

func TestPerRouteOverride(t *testing.T) {
	allowNothing := buildHTTP(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}})
	disabled, err := Factory{}.ParseOverride(mustAny(t, &rbachttpv3.RBACPerRoute{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, passed := serve([]filter.Filter{allowNothing}, httptest.NewRequest("GET", "/", nil), disabled); !passed {
		t.Error("a route without rbac still enforced")
	}
	denyGet, err := Factory{}.ParseOverride(mustAny(t, &rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{
		Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"g": getPolicy()}}}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, passed := serve([]filter.Filter{allowNothing}, httptest.NewRequest("PUT", "/", nil), denyGet); !passed {
		t.Error("the route's own rbac did not replace the listener's")
	}
	if _, err := (Factory{}).ParseOverride(mustAny(t, &rbachttpv3.RBAC{})); err == nil {
		t.Error("an RBAC accepted as an override")
	}
}

func TestHTTPParseRefuses(t *testing.T) {
	if _, err := (Factory{}).Parse(mustAny(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{permHeader("", exact("x"))}, Principals: []*rbacv3.Principal{princAny()}}}}})); err == nil {
		t.Error("invalid rules accepted")
	}
	if _, err := (Factory{}).Parse(mustAny(t, &rbacnetv3.RBAC{})); err == nil {
		t.Error("a network RBAC accepted by the HTTP filter")
	}
	if cfg, err := (Factory{}).Parse(nil); err != nil || cfg.(*Config).Rules != nil {
		t.Errorf("Parse(nil) = %v, %v", cfg, err)
	}
}

// TestRemoteIPFromXFF: remote_ip is the trusted client address under the
// connection manager's X-Forwarded-For settings.
func TestRemoteIPFromXFF(t *testing.T) {
	f := buildHTTP(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {
		Permissions: []*rbacv3.Permission{permAny()},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("203.0.113.0", 24)}}},
	}}}})
	tests := []struct {
		xff    string
		x      filter.XFF
		passed bool
	}{
		{"", filter.XFF{}, false},
		{"203.0.113.7", filter.XFF{}, true},
		{"203.0.113.7, 10.0.0.9", filter.XFF{}, false},
		{"203.0.113.7, 10.0.0.9", filter.XFF{TrustedHops: 1}, true},
		{"203.0.113.7", filter.XFF{UseRemoteAddress: true}, false},
		{"198.51.100.1, 203.0.113.7", filter.XFF{UseRemoteAddress: true, TrustedHops: 1}, true},
		{"not-an-ip", filter.XFF{}, false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.1.1.1:5000"
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		st := &filter.State{XFF: tt.x}
		r = r.WithContext(filter.NewContext(r.Context(), st))
		passed := false
		f.ServeHTTP(httptest.NewRecorder(), r, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { passed = true }))
		if passed != tt.passed {
			t.Errorf("XFF %q under %+v: passed %v, want %v", tt.xff, tt.x, passed, tt.passed)
		}
	}
}

func TestNetworkFilter(t *testing.T) {
	build := func(m *rbacnetv3.RBAC) filter.NetworkFilter {
		t.Helper()
		cfg, err := NetworkFactory{}.Parse(mustAny(t, m))
		if err != nil {
			t.Fatal(err)
		}
		f, err := NetworkFactory{}.Build(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	port := func(p uint32) *rbacv3.Policy {
		return &rbacv3.Policy{Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: p}}}, Principals: []*rbacv3.Principal{princAny()}}
	}
	conn := func(dst string) *filter.Connection {
		return &filter.Connection{Source: netip.MustParseAddrPort("10.0.0.1:4000"), Destination: netip.MustParseAddrPort(dst)}
	}
	// Istio's TCP task: ALLOW ports 9000 and 9001.
	allow := build(&rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 9000}}, {Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 9001}}}}}}},
		Principals: []*rbacv3.Principal{princAny()}}}}})
	for dst, ok := range map[string]bool{"10.0.0.2:9000": true, "10.0.0.2:9001": true, "10.0.0.2:9002": false} {
		err := allow.OnConnection(context.Background(), conn(dst))
		var de *DeniedError
		if ok != (err == nil) || (!ok && (!errors.As(err, &de) || err.Error() != "rbac_access_denied_matched_policy[none]")) {
			t.Errorf("%s: %v", dst, err)
		}
	}
	// An HTTP-only matcher never matches a connection: an ALLOW on a
	// method allows nothing.
	method := build(&rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"get": getPolicy()}}})
	if err := method.OnConnection(context.Background(), conn("10.0.0.2:9000")); err == nil {
		t.Error("an HTTP-only ALLOW rule allowed a connection")
	}
	// Shadow result and ext_authz's trigger through NetworkChain.
	shadow := build(&rbacnetv3.RBAC{StatPrefix: "tcp.", ShadowRulesStatPrefix: "istio_ext_authz_",
		ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"istio-ext-authz-x": port(9000)}}})
	var seen any
	probe := networkFunc(func(ctx context.Context, _ *filter.Connection) error {
		seen = filter.StateFromContext(ctx).Metadata["envoy.filters.network.rbac"]["istio_ext_authz_shadow_effective_policy_id"]
		return nil
	})
	if _, err := filter.NetworkChain(context.Background(), conn("10.0.0.2:9000"), nil, []filter.NetworkFilter{shadow, probe}); err != nil || seen != "istio-ext-authz-x" {
		t.Errorf("chain: %v, ext_authz saw %v", err, seen)
	}
	deny := build(&rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"d": port(9000)}}})
	if _, err := filter.NetworkChain(context.Background(), conn("10.0.0.2:9000"), nil, []filter.NetworkFilter{deny, probe}); err == nil || err.Error() != "rbac_access_denied_matched_policy[d]" {
		t.Errorf("deny: %v", err)
	}

	for name, m := range map[string]*rbacnetv3.RBAC{
		"stat_prefix":      {},
		"enforcement_type": {StatPrefix: "tcp.", EnforcementType: rbacnetv3.RBAC_CONTINUOUS},
		"delay_deny":       {StatPrefix: "tcp.", DelayDeny: durationpb.New(1)},
	} {
		if _, err := (NetworkFactory{}).Parse(mustAny(t, m)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

type networkFunc func(context.Context, *filter.Connection) error

func (f networkFunc) OnConnection(ctx context.Context, c *filter.Connection) error { return f(ctx, c) }

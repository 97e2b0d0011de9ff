package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"path/filepath"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
)

// istioSamples is Istio's samples/bookinfo/networking, used unchanged.
const istioSamples = "../../../../shared/istio-samples/bookinfo/networking"

func million(n uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_MILLION}
}

func hundred(n uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}
}

func fixedDelay(d time.Duration, p *typev3.FractionalPercent) *commonfaultv3.FaultDelay {
	return &commonfaultv3.FaultDelay{
		FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)},
		Percentage:         p,
	}
}

func httpAbort(status uint32, p *typev3.FractionalPercent) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: status}, Percentage: p}
}

func grpcAbort(code uint32, p *typev3.FractionalPercent) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}, Percentage: p}
}

func TestTranslateFault(t *testing.T) {
	pct := func(v float64) *networking.Percent { return &networking.Percent{Value: v} }
	fixed := func(d time.Duration) *networking.HTTPFaultInjection_Delay_FixedDelay {
		return &networking.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: durationpb.New(d)}
	}
	tests := []struct {
		name string
		in   *networking.HTTPFaultInjection
		want *faultv3.HTTPFault
	}{
		{"none", nil, nil},
		{"abort 500 at 100%",
			&networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
				ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 500}, Percentage: pct(100)}},
			&faultv3.HTTPFault{Abort: httpAbort(500, million(1000000))}},
		{"abort percentage as parts per million",
			&networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
				ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 503}, Percentage: pct(0.1)}},
			&faultv3.HTTPFault{Abort: httpAbort(503, million(1000))}},
		{"abort without percentage aborts nothing, written out",
			&networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
				ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 503}}},
			&faultv3.HTTPFault{Abort: httpAbort(503, hundred(0))}},
		{"abort grpc name",
			&networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
				ErrorType: &networking.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: "UNAVAILABLE"}, Percentage: pct(50)}},
			&faultv3.HTTPFault{Abort: grpcAbort(14, million(500000))}},
		{"abort grpc code",
			&networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
				ErrorType: &networking.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: "5"}, Percentage: pct(100)}},
			&faultv3.HTTPFault{Abort: grpcAbort(5, million(1000000))}},
		{"abort grpc unknown is dropped",
			&networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
				ErrorType: &networking.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: "NOPE"}}},
			nil},
		{"abort http2Error is dropped",
			&networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
				ErrorType: &networking.HTTPFaultInjection_Abort_Http2Error{Http2Error: "CANCEL"}}},
			nil},
		{"delay 7s at 100%",
			&networking.HTTPFaultInjection{Delay: &networking.HTTPFaultInjection_Delay{HttpDelayType: fixed(7 * time.Second), Percentage: pct(100)}},
			&faultv3.HTTPFault{Delay: fixedDelay(7*time.Second, million(1000000))}},
		{"delay deprecated percent as parts per hundred",
			&networking.HTTPFaultInjection{Delay: &networking.HTTPFaultInjection_Delay{HttpDelayType: fixed(time.Second), Percent: 25}},
			&faultv3.HTTPFault{Delay: fixedDelay(time.Second, hundred(25))}},
		{"delay percentage wins over percent",
			&networking.HTTPFaultInjection{Delay: &networking.HTTPFaultInjection_Delay{HttpDelayType: fixed(time.Second), Percent: 25, Percentage: pct(12.5)}},
			&faultv3.HTTPFault{Delay: fixedDelay(time.Second, million(125000))}},
		{"delay without percentage delays nothing",
			&networking.HTTPFaultInjection{Delay: &networking.HTTPFaultInjection_Delay{HttpDelayType: fixed(time.Second)}},
			&faultv3.HTTPFault{Delay: fixedDelay(time.Second, hundred(0))}},
		{"delay exponential is dropped",
			&networking.HTTPFaultInjection{Delay: &networking.HTTPFaultInjection_Delay{
				HttpDelayType: &networking.HTTPFaultInjection_Delay_ExponentialDelay{ExponentialDelay: durationpb.New(time.Second)}}},
			nil},
		{"both",
			&networking.HTTPFaultInjection{
				Delay: &networking.HTTPFaultInjection_Delay{HttpDelayType: fixed(2 * time.Second), Percentage: pct(10)},
				Abort: &networking.HTTPFaultInjection_Abort{ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 429}, Percentage: pct(20)}},
			&faultv3.HTTPFault{Delay: fixedDelay(2*time.Second, million(100000)), Abort: httpAbort(429, million(200000))}},
		{"exponential delay dropped, abort kept",
			&networking.HTTPFaultInjection{
				Delay: &networking.HTTPFaultInjection_Delay{HttpDelayType: &networking.HTTPFaultInjection_Delay_ExponentialDelay{ExponentialDelay: durationpb.New(time.Second)}},
				Abort: &networking.HTTPFaultInjection_Abort{ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 500}, Percentage: pct(100)}},
			&faultv3.HTTPFault{Abort: httpAbort(500, million(1000000))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := translateFault(tt.in)
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("translateFault (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHTTPFilters checks that every HTTP connection manager lists the
// fault and CORS filters, empty, then the router (Istio's order since 1.20:
// a fault abort carries no CORS headers, and a preflight can be delayed),
// after Istio's ALPN filter on all but sidecar inbound ones.
func TestHTTPFilters(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "bookinfo", "input.yaml"), filepath.Join("testdata", "gateway", "input.yaml"))
	for _, p := range []*model.Proxy{productpageSidecar(), ingressRouter()} {
		r := mustGenerate(t, pc, p)
		if len(r.Listeners) == 0 {
			t.Fatalf("%s: no listeners", p.ID)
		}
		for _, l := range r.Listeners {
			hcm := connectionManager(t, l)
			var names []string
			for _, f := range hcm.GetHttpFilters() {
				names = append(names, f.GetName())
			}
			want := []string{faultFilter, corsFilter, statspb.FilterName, routerFilter}
			if l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
				want = append([]string{alpnFilterName}, want...)
			}
			if diff := cmp.Diff(want, names); diff != "" {
				t.Errorf("%s listener %s: http_filters (-want +got):\n%s", p.ID, l.GetName(), diff)
				continue
			}
			first := len(want) - 4
			c := &corsv3.Cors{}
			if err := hcm.GetHttpFilters()[first+1].GetTypedConfig().UnmarshalTo(c); err != nil {
				t.Fatalf("%s listener %s: cors filter config: %v", p.ID, l.GetName(), err)
			}
			f := &faultv3.HTTPFault{}
			if err := hcm.GetHttpFilters()[first].GetTypedConfig().UnmarshalTo(f); err != nil {
				t.Fatalf("%s listener %s: fault filter config: %v", p.ID, l.GetName(), err)
			}
			if diff := cmp.Diff(&faultv3.HTTPFault{}, f, protocmp.Transform()); diff != "" {
				t.Errorf("%s listener %s: fault filter config is not empty:\n%s", p.ID, l.GetName(), diff)
			}
		}
	}
}

func connectionManager(t *testing.T, l *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	t.Helper()
	fs := l.GetFilterChains()[0].GetFilters()
	hcm := &hcmv3.HttpConnectionManager{}
	if len(fs) != 1 || fs[0].GetName() != httpConnectionManagerFilter {
		t.Fatalf("listener %s: filters %v, want one %s", l.GetName(), fs, httpConnectionManagerFilter)
	}
	if err := fs[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatalf("listener %s: %v", l.GetName(), err)
	}
	return hcm
}

// selectRoute is the route a request takes, as simulate picks it, or nil.
func selectRoute(t *testing.T, rc *routev3.RouteConfiguration, req request) *routev3.Route {
	t.Helper()
	for _, r := range selectVirtualHost(rc, req.authority).GetRoutes() {
		if routeMatches(t, r.GetMatch(), req) {
			return r
		}
	}
	return nil
}

// routeFault decodes the fault filter override of r; nil when it has none.
func routeFault(t *testing.T, r *routev3.Route) *faultv3.HTTPFault {
	t.Helper()
	for name := range r.GetTypedPerFilterConfig() {
		if name != faultFilter {
			t.Errorf("route %s: typed_per_filter_config for %q", r.GetName(), name)
		}
	}
	a := r.GetTypedPerFilterConfig()[faultFilter]
	if a == nil {
		return nil
	}
	f := &faultv3.HTTPFault{}
	if err := a.UnmarshalTo(f); err != nil {
		t.Fatalf("route %s: fault config: %v", r.GetName(), err)
	}
	return f
}

// TestSimulateFault routes requests through the tables generated from
// Istio's fault-injection samples and checks the fault each one gets.
func TestSimulateFault(t *testing.T) {
	jason := map[string]string{"end-user": "jason"}
	bookinfo := filepath.Join("testdata", "bookinfo", "input.yaml")
	sample := func(name string) []string { return []string{bookinfo, filepath.Join(istioSamples, name)} }
	const ratingsV1 = "outbound|9080|v1|ratings.default.svc.cluster.local"
	tests := []struct {
		name      string
		files     []string
		proxy     *model.Proxy
		route     string
		req       request
		wantTo    string
		wantFault *faultv3.HTTPFault
	}{
		{"abort sample: jason's ratings call is aborted 500 at 100%",
			sample("virtual-service-ratings-test-abort.yaml"), productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0", jason}, ratingsV1,
			&faultv3.HTTPFault{Abort: httpAbort(500, million(1000000))}},
		{"abort sample: anonymous ratings call has no fault",
			sample("virtual-service-ratings-test-abort.yaml"), productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0", nil}, ratingsV1, nil},
		{"abort sample: other user has no fault",
			sample("virtual-service-ratings-test-abort.yaml"), productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings.default.svc.cluster.local:9080", "/ratings/0", map[string]string{"end-user": "jason2"}}, ratingsV1, nil},
		{"delay sample: jason's ratings call is delayed 7s at 100%",
			sample("virtual-service-ratings-test-delay.yaml"), productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings.default:9080", "/ratings/0", jason}, ratingsV1,
			&faultv3.HTTPFault{Delay: fixedDelay(7*time.Second, million(1000000))}},
		{"delay sample: anonymous ratings call has no fault",
			sample("virtual-service-ratings-test-delay.yaml"), productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0", nil}, ratingsV1, nil},
		{"delay sample: reviews is untouched",
			sample("virtual-service-ratings-test-delay.yaml"), productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/reviews/0", jason}, reviewsV2, nil},
		{"details sample: every call is aborted 555",
			sample("fault-injection-details-v1.yaml"), productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"details:9080", "/details/0", nil}, "outbound|9080|v1|details.default.svc.cluster.local",
			&faultv3.HTTPFault{Abort: httpAbort(555, million(1000000))}},
		{"grpc abort with a delay of deprecated percent",
			[]string{filepath.Join("testdata", "fault", "input.yaml")}, productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"details:9080", "/grpc/x", nil}, "outbound|9080|v1|details.default.svc.cluster.local",
			&faultv3.HTTPFault{Delay: fixedDelay(500*time.Millisecond, hundred(25)), Abort: grpcAbort(14, million(1000))}},
		{"no fault on the gateway's catch-all route",
			[]string{filepath.Join("testdata", "fault", "gateway.yaml")}, ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/login", nil}, "outbound|9080||productpage.default.svc.cluster.local", nil},
		{"fault on a gateway route",
			[]string{filepath.Join("testdata", "fault", "gateway.yaml")}, ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/productpage", nil}, "outbound|9080||productpage.default.svc.cluster.local",
			&faultv3.HTTPFault{Abort: httpAbort(503, million(500000))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustGenerate(t, loadPushContext(t, append([]string{meshFile}, tt.files...)...), tt.proxy)
			rc := routeConfig(t, r, tt.route)
			if got := simulate(t, rc, tt.req); got != tt.wantTo {
				t.Fatalf("%s %s%s %v: routed to %q, want %q", tt.route, tt.req.authority, tt.req.path, tt.req.headers, got, tt.wantTo)
			}
			got := routeFault(t, selectRoute(t, rc, tt.req))
			if diff := cmp.Diff(tt.wantFault, got, protocmp.Transform()); diff != "" {
				t.Errorf("fault (-want +got):\n%s", diff)
			}
		})
	}
}

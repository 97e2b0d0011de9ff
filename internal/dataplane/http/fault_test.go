package http_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/dataplane/filter/fault"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// faultListener is httpListener with Istio's chain: an empty fault filter,
// then the router.
func faultListener(t testing.TB, name, addr, route string) *listenerv3.Listener {
	l := httpListener(t, name, addr, route)
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: fault.Name,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &faultv3.HTTPFault{})}}}, hcm.HttpFilters...)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
	return l
}

func withFault(t testing.TB, r *routev3.Route, f *faultv3.HTTPFault) *routev3.Route {
	r.TypedPerFilterConfig = map[string]*anypb.Any{fault.Name: xdstest.MustAny(t, f)}
	return r
}

func million(pct uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: pct * 10000, Denominator: typev3.FractionalPercent_MILLION}
}

func delayOf(d time.Duration, pct uint32) *commonfaultv3.FaultDelay {
	return &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)}, Percentage: million(pct)}
}

func httpAbort(code, pct uint32) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: code}, Percentage: million(pct)}
}

func TestFault(t *testing.T) {
	lAddr := closedAddr(t)
	be := startBackend(t, "be", false, nil)
	const delay = 200 * time.Millisecond
	g := build(t, nil,
		[]*listenerv3.Listener{faultListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("abort", []string{"abort"}, withFault(t, prefixRoute("abort", "/", "be"), &faultv3.HTTPFault{Abort: httpAbort(503, 100)})),
			vhost("delay", []string{"delay"}, withFault(t, prefixRoute("delay", "/", "be"), &faultv3.HTTPFault{Delay: delayOf(delay, 100)})),
			// The route timeout is shorter than the delay: the delay must not use it up.
			vhost("delay-timeout", []string{"delay-timeout"}, withTimeout(withFault(t, prefixRoute("delay-timeout", "/", "be"),
				&faultv3.HTTPFault{Delay: delayOf(delay, 100)}), 150*time.Millisecond)),
			vhost("both", []string{"both"}, withFault(t, prefixRoute("both", "/", "be"),
				&faultv3.HTTPFault{Delay: delayOf(time.Millisecond, 100), Abort: httpAbort(418, 100)})),
			vhost("zero", []string{"zero"}, withFault(t, prefixRoute("zero", "/", "be"),
				&faultv3.HTTPFault{Delay: delayOf(time.Hour, 0), Abort: httpAbort(503, 0)})),
			vhost("grpc", []string{"grpc"}, withFault(t, prefixRoute("grpc", "/", "be"),
				&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}, Percentage: million(100)}})),
			vhost("plain", []string{"plain"}, prefixRoute("plain", "/", "be")),
		)},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)})
	p := startProxy(t, g)

	tests := []struct {
		name     string
		host     string
		wantCode int
		wantBody string
		wantHdr  map[string]string
		wantLog  string // substring of the access log line
		minTime  time.Duration
		upstream bool // the backend is called
		reqHdr   map[string]string
	}{
		{name: "abort 100%", host: "abort", wantCode: 503, wantBody: fault.AbortBody, wantLog: ` 503 FI fault_filter_abort `},
		{name: "delay 100%", host: "delay", wantCode: 200, wantBody: "be", wantLog: ` 200 DI via_upstream `, minTime: delay, upstream: true},
		{name: "delay outlasts route timeout", host: "delay-timeout", wantCode: 200, wantBody: "be", wantLog: ` 200 DI via_upstream `, minTime: delay, upstream: true},
		{name: "delay and abort", host: "both", wantCode: 418, wantBody: fault.AbortBody, wantLog: ` 418 DI,FI fault_filter_abort `},
		{name: "0% untouched", host: "zero", wantCode: 200, wantBody: "be", wantLog: ` 200 - via_upstream `, upstream: true},
		{name: "grpc abort", host: "grpc", wantCode: 200, wantHdr: map[string]string{"Grpc-Status": "14", "Content-Type": "application/grpc",
			"Grpc-Message": fault.AbortBody}, reqHdr: map[string]string{"Content-Type": "application/grpc"}, wantLog: ` 200 FI fault_filter_abort `},
		// As Envoy: a gRPC abort answers a non-gRPC request with a plain 200.
		{name: "grpc abort, plain request", host: "grpc", wantCode: 200, wantBody: fault.AbortBody,
			wantHdr: map[string]string{"Grpc-Status": "", "Content-Type": "text/plain"}, wantLog: ` 200 FI fault_filter_abort `},
		// An HTTP abort to a gRPC client carries the grpc-status Envoy maps 503 to.
		{name: "http abort, grpc request", host: "abort", wantCode: 200, wantHdr: map[string]string{"Grpc-Status": "14", "Content-Type": "application/grpc"},
			reqHdr: map[string]string{"Content-Type": "application/grpc+proto"}, wantLog: ` 200 FI fault_filter_abort `},
		{name: "route without override", host: "plain", wantCode: 200, wantBody: "be", wantLog: ` 200 - via_upstream `, upstream: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := be.hits.Load()
			rid := "fault-" + strings.NewReplacer(" ", "-", ",", "", "%", "").Replace(tt.name)
			start := time.Now()
			hdr := map[string]string{"X-Request-Id": rid}
			for k, v := range tt.reqHdr {
				hdr[k] = v
			}
			r := p.do("GET", tt.host, "/", hdr, nil)
			took := time.Since(start)
			if r.code != tt.wantCode || r.body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", r.code, r.body, tt.wantCode, tt.wantBody)
			}
			for k, v := range tt.wantHdr {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if took < tt.minTime {
				t.Errorf("answered after %v, want at least %v", took, tt.minTime)
			}
			if called := be.hits.Load() > before; called != tt.upstream {
				t.Errorf("upstream called = %v, want %v", called, tt.upstream)
			}
			if line := p.logLine(rid); !strings.Contains(line, tt.wantLog) {
				t.Errorf("access log line %q: want %q", line, tt.wantLog)
			}
		})
	}

	t.Run("client cancels during delay", func(t *testing.T) {
		before := be.hits.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr("l")+"/", nil)
		req.Host = "delay"
		req.Header.Set("X-Request-Id", "fault-cancel")
		if resp, err := p.client.Do(req); !errors.Is(err, context.DeadlineExceeded) {
			if err == nil {
				resp.Body.Close()
			}
			t.Fatalf("client got %v, want its own deadline", err)
		}
		// Envoy sets DI when the delay starts, then DC.
		if line := p.logLine("fault-cancel"); !strings.Contains(line, " 0 DI,DC downstream_remote_disconnect ") {
			t.Errorf("access log line %q: want 0 DI,DC", line)
		}
		// The line is written after the handler returned: the upstream
		// was not called by then, and never will be.
		if n := be.hits.Load() - before; n != 0 {
			t.Errorf("upstream called %d times, want 0", n)
		}
	})
}

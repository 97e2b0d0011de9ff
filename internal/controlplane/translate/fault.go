package translate

import (
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/validation"
)

// faultFilter is Envoy's fault injection HTTP filter; every HTTP
// connection manager lists it, empty, before the router, and a route with
// a fault overrides it in typed_per_filter_config.
const faultFilter = "envoy.filters.http.fault"

// translateFault translates an HTTPRoute's fault as Istio's
// TranslateFault does. The delay's sampling is percentage.value as
// parts per million, else the deprecated integer percent as parts per
// hundred; the abort's is percentage.value. Istio documents an unset
// percentage as "no request will be delayed/aborted", and Istio leaves
// the abort's unset, which Envoy reads as 0 %: here it is always
// written out, so no reader can take an absent one for 100 %.
// A delay of a type other than fixedDelay and an abort of a type other
// than httpStatus or a known grpcStatus are dropped (validation refuses
// them); it returns nil when nothing is left.
func translateFault(in *networking.HTTPFaultInjection) *faultv3.HTTPFault {
	if in == nil {
		return nil
	}
	out := &faultv3.HTTPFault{}
	if d := in.GetDelay(); d != nil && d.GetFixedDelay() != nil {
		out.Delay = &commonfaultv3.FaultDelay{
			FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: d.GetFixedDelay()},
			Percentage:         integerPercent(d.GetPercent()),
		}
		if p := d.GetPercentage(); p != nil {
			out.Delay.Percentage = fractionalPercent(p)
		}
	}
	if a := in.GetAbort(); a != nil {
		abort := &faultv3.FaultAbort{Percentage: integerPercent(0)}
		if p := a.GetPercentage(); p != nil {
			abort.Percentage = fractionalPercent(p)
		}
		switch t := a.GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(t.HttpStatus)}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if c, ok := validation.GRPCStatusCode(t.GrpcStatus); ok {
				abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: c}
			}
		}
		if abort.ErrorType != nil {
			out.Abort = abort
		}
	}
	if out.Delay == nil && out.Abort == nil {
		return nil
	}
	return out
}

// fractionalPercent is Istio's translatePercentToFractionalPercent: a
// 0-100 percentage as parts per million.
func fractionalPercent(p *networking.Percent) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{
		Numerator:   uint32(p.GetValue() * 10000),
		Denominator: typev3.FractionalPercent_MILLION,
	}
}

// integerPercent is Istio's translateIntegerToFractionalPercent.
func integerPercent(p int32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(max(p, 0)), Denominator: typev3.FractionalPercent_HUNDRED}
}

// routeFilterConfig is the typed_per_filter_config of the routes of hr:
// the fault filter's override when hr has a fault and the CORS filter's
// CorsPolicy when hr has a corsPolicy; nil when it has neither.
func routeFilterConfig(hr *networking.HTTPRoute) (map[string]*anypb.Any, error) {
	var out map[string]*anypb.Any
	add := func(name string, m proto.Message) error {
		a, err := packAny(m)
		if err != nil {
			return err
		}
		if out == nil {
			out = map[string]*anypb.Any{}
		}
		out[name] = a
		return nil
	}
	if f := translateFault(hr.GetFault()); f != nil {
		if err := add(faultFilter, f); err != nil {
			return nil, err
		}
	}
	if c := corsPolicy(hr.GetCorsPolicy()); c != nil {
		if err := add(corsFilter, c); err != nil {
			return nil, err
		}
	}
	return out, nil
}

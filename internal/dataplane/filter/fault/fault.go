package fault

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// Name is the filter's Envoy name, the key of its typed_per_filter_config.
const Name = "envoy.filters.http.fault"

// TypeURL is the type URL of HTTPFault.
const TypeURL = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

// AbortBody is the body of an HTTP abort, as Envoy's.
const AbortBody = "fault filter abort"

// Fraction is envoy.type.v3.FractionalPercent: Numerator out of
// Denominator (100, 10000 or 1000000); Numerator <= Denominator.
type Fraction struct {
	Numerator   uint32
	Denominator uint32
}

// sample says whether a request falls in f, drawing from rnd.
func (f Fraction) sample(rnd uint64) bool {
	if f.Numerator >= f.Denominator {
		return true
	}
	return rnd%uint64(f.Denominator) < uint64(f.Numerator)
}

// Delay is FaultDelay with fixed_delay.
type Delay struct {
	Fixed   time.Duration // > 0
	Percent Fraction
}

// Abort is FaultAbort with http_status or grpc_status.
type Abort struct {
	// HTTPStatus is the status of the local reply (200-599), 0 for a gRPC
	// abort.
	HTTPStatus int
	// GRPCStatus is the grpc-status of a gRPC abort (the reply is HTTP 200,
	// application/grpc); meaningful when HTTPStatus is 0.
	GRPCStatus uint32
	Percent    Fraction
}

// Config is a parsed HTTPFault. Nil Delay or Abort means none; the zero
// Config injects nothing (what Istio puts at the HCM level).
type Config struct {
	Delay *Delay
	Abort *Abort
}

// Factory is the filter.Factory of the fault filter.
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// TypeURLs implements filter.Factory.
func (Factory) TypeURLs() []string { return []string{TypeURL} }

// Parse implements filter.Factory; nil cfg is the empty HTTPFault.
func (Factory) Parse(cfg *anypb.Any) (filter.Config, error) {
	if cfg == nil {
		return &Config{}, nil
	}
	return parse(cfg)
}

// ParseOverride implements filter.Factory: an override is a whole
// HTTPFault that replaces the HCM-level one on its route (as Envoy's).
func (Factory) ParseOverride(cfg *anypb.Any) (filter.Config, error) { return parse(cfg) }

// Build implements filter.Factory.
func (Factory) Build(cfg filter.Config, _ filter.Deps) (filter.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("fault: config is %T, want *fault.Config", cfg)
	}
	return &faultFilter{base: c, active: c.Delay != nil || c.Abort != nil}, nil
}

func parse(a *anypb.Any) (*Config, error) {
	if a.GetTypeUrl() != TypeURL {
		return nil, fmt.Errorf("type_url %q: must be %s", a.GetTypeUrl(), TypeURL)
	}
	var m faultv3.HTTPFault
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode HTTPFault: %w", err)
	}
	return fromProto(&m)
}

func fromProto(m *faultv3.HTTPFault) (*Config, error) {
	switch {
	case m.GetUpstreamCluster() != "":
		return nil, errors.New("upstream_cluster: not supported")
	case len(m.GetHeaders()) > 0:
		return nil, errors.New("headers: not supported")
	case len(m.GetDownstreamNodes()) > 0:
		return nil, errors.New("downstream_nodes: not supported")
	case m.GetMaxActiveFaults() != nil:
		return nil, errors.New("max_active_faults: not supported")
	case m.GetResponseRateLimit() != nil:
		return nil, errors.New("response_rate_limit: not supported")
	}
	// The *_runtime keys name runtime overrides this proxy has none of;
	// disable_downstream_cluster_stats and filter_metadata do not change
	// behaviour. They are ignored.
	c := &Config{}
	if d := m.GetDelay(); d != nil {
		fd, ok := d.GetFaultDelaySecifier().(*commonfaultv3.FaultDelay_FixedDelay)
		if !ok {
			return nil, errors.New("delay: must have fixed_delay (header_delay is not supported)")
		}
		if err := fd.FixedDelay.CheckValid(); err != nil {
			return nil, fmt.Errorf("delay.fixed_delay: %v", err)
		}
		v := fd.FixedDelay.AsDuration()
		if v <= 0 {
			return nil, fmt.Errorf("delay.fixed_delay = %q: must be greater than 0", v)
		}
		p, err := fraction("delay.percentage", d.GetPercentage())
		if err != nil {
			return nil, err
		}
		c.Delay = &Delay{Fixed: v, Percent: p}
	}
	if ab := m.GetAbort(); ab != nil {
		a := &Abort{}
		switch et := ab.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			if et.HttpStatus < 200 || et.HttpStatus > 599 {
				return nil, fmt.Errorf("abort.http_status = %d: must be 200-599", et.HttpStatus)
			}
			a.HTTPStatus = int(et.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			a.GRPCStatus = et.GrpcStatus
		default:
			return nil, errors.New("abort: must have http_status or grpc_status (header_abort is not supported)")
		}
		p, err := fraction("abort.percentage", ab.GetPercentage())
		if err != nil {
			return nil, err
		}
		a.Percent = p
		c.Abort = a
	}
	return c, nil
}

// fraction validates a FractionalPercent. Unset is the zero message, 0 %,
// as in Envoy (which reads the proto default); Istio's control plane
// always sets it (Istio's unset percentage means no request is affected).
func fraction(path string, p *typev3.FractionalPercent) (Fraction, error) {
	if p == nil {
		return Fraction{Numerator: 0, Denominator: 100}, nil
	}
	var den uint32
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		den = 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	default:
		return Fraction{}, fmt.Errorf("%s.denominator = %q: must be HUNDRED, TEN_THOUSAND or MILLION", path, p.GetDenominator())
	}
	if p.GetNumerator() > den {
		return Fraction{}, fmt.Errorf("%s.numerator = %d: must be at most the denominator (%s)", path, p.GetNumerator(), p.GetDenominator())
	}
	return Fraction{Numerator: p.GetNumerator(), Denominator: den}, nil
}

// faultFilter applies its route's override, or else base.
type faultFilter struct {
	base   *Config
	active bool // base injects something
}

func (f *faultFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	st := filter.StateFrom(r)
	c := f.base
	if st != nil && st.Override != nil {
		c = st.Override.(*Config)
	} else if !f.active {
		next.ServeHTTP(w, r)
		return
	}
	if d := c.Delay; d != nil && d.Percent.sample(rand.Uint64()) {
		if st != nil {
			st.Flags |= filter.FlagDelayInjected
		}
		t := time.NewTimer(d.Fixed)
		select {
		case <-t.C:
		case <-r.Context().Done():
			// The client went away: nothing more to do; the connection
			// manager sees the cancelled context and logs DC.
			t.Stop()
			return
		}
	}
	if a := c.Abort; a != nil && a.Percent.sample(rand.Uint64()) {
		if st != nil {
			st.Flags |= filter.FlagFaultInjected
		}
		code, n := abort(w, r, a)
		if st != nil {
			st.ReplyCode, st.ReplyDetails, st.ReplyBytes = code, "fault_filter_abort", n
		}
		return
	}
	next.ServeHTTP(w, r)
}

func (a *Abort) status() int {
	if a.HTTPStatus == 0 {
		return http.StatusOK
	}
	return a.HTTPStatus
}

// abort writes a's local reply, as Envoy's fault filter sends it: an
// HTTP abort to a gRPC client becomes the grpc-status Envoy maps its
// status to; a gRPC abort is HTTP 200 with a.GRPCStatus. It returns the
// status and body bytes written.
func abort(w http.ResponseWriter, r *http.Request, a *Abort) (int, int64) {
	gs := -1
	if a.HTTPStatus == 0 {
		gs = int(a.GRPCStatus)
	}
	return filter.LocalReply(w, r, a.status(), gs, AbortBody)
}

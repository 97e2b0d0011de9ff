package config

import (
	"net/http"
	"net/url"
	"strconv"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
)

// Names and type URLs of the retry extensions this version accepts.
const (
	PreviousHostsPredicateName = "envoy.retry_host_predicates.previous_hosts"
	previousHostsTypeURL       = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
	PreviousPrioritiesName     = "envoy.retry_priorities.previous_priorities"
	previousPrioritiesTypeURL  = "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
)

// buildRetryExtensions reads the RetryPolicy fields beyond the conditions:
// retry_host_predicate (previous_hosts only), retry_priority
// (previous_priorities only, accepted: this version has one priority),
// host_selection_retry_max_attempts, retriable_headers,
// retriable_request_headers and retry_back_off.
func buildRetryExtensions(rp *routev3.RetryPolicy, pol *RetryPolicy) error {
	for i, hp := range rp.GetRetryHostPredicate() {
		p := idx("retry_host_predicate", i)
		tc := hp.GetTypedConfig()
		switch {
		case tc != nil && tc.GetTypeUrl() == previousHostsTypeURL:
		case tc == nil && hp.GetName() == PreviousHostsPredicateName:
		case tc != nil:
			return verr(p+".typed_config.type_url", tc.GetTypeUrl(), "must be %s (only previous_hosts is supported)", previousHostsTypeURL)
		default:
			return verr(p+".name", hp.GetName(), "must be %s", PreviousHostsPredicateName)
		}
		pol.AvoidPreviousHosts = true
	}
	if pr := rp.GetRetryPriority(); pr != nil {
		tc := pr.GetTypedConfig()
		switch {
		case tc != nil && tc.GetTypeUrl() == previousPrioritiesTypeURL:
			var cfg previousprioritiesv3.PreviousPrioritiesConfig
			if err := anyTo(tc, &cfg); err != nil {
				return ferr("retry_priority.typed_config", "%v", err)
			}
			if cfg.GetUpdateFrequency() <= 0 {
				return verr("retry_priority.typed_config.update_frequency", strconv.Itoa(int(cfg.GetUpdateFrequency())), "must be greater than 0")
			}
			pol.PreviousPrioritiesEvery = uint32(cfg.GetUpdateFrequency())
		case tc == nil && pr.GetName() == PreviousPrioritiesName:
			return ferr("retry_priority.typed_config", "must be set (update_frequency is required)")
		case tc != nil:
			return verr("retry_priority.typed_config.type_url", tc.GetTypeUrl(), "must be %s", previousPrioritiesTypeURL)
		default:
			return verr("retry_priority.name", pr.GetName(), "must be %s", PreviousPrioritiesName)
		}
	}
	if n := rp.GetHostSelectionRetryMaxAttempts(); n < 0 {
		return ferr("host_selection_retry_max_attempts", "must not be negative")
	}
	pol.HostSelectionMaxAttempts = rp.GetHostSelectionRetryMaxAttempts()
	for i, h := range rp.GetRetriableHeaders() {
		hm, err := buildHeaderMatcher(h)
		if err != nil {
			return under(idx("retriable_headers", i), err)
		}
		pol.RetriableHeaders = append(pol.RetriableHeaders, hm)
	}
	for i, h := range rp.GetRetriableRequestHeaders() {
		hm, err := buildHeaderMatcher(h)
		if err != nil {
			return under(idx("retriable_request_headers", i), err)
		}
		pol.RetriableRequestHeaders = append(pol.RetriableRequestHeaders, hm)
	}
	if bo := rp.GetRetryBackOff(); bo != nil {
		var err error
		if pol.BaseInterval, err = duration(bo.GetBaseInterval(), "retry_back_off.base_interval", 0); err != nil {
			return err
		}
		if pol.BaseInterval <= 0 {
			return ferr("retry_back_off.base_interval", "must be greater than 0")
		}
		if pol.MaxInterval, err = duration(bo.GetMaxInterval(), "retry_back_off.max_interval", 10*pol.BaseInterval); err != nil {
			return err
		}
		if pol.MaxInterval < pol.BaseInterval {
			return verr("retry_back_off.max_interval", pol.MaxInterval.String(), "must be at least base_interval")
		}
	}
	if rp.GetRateLimitedRetryBackOff() != nil || len(rp.GetRetryOptionsPredicates()) > 0 || rp.GetPerTryIdleTimeout() != nil {
		return ferr("", "rate_limited_retry_back_off, retry_options_predicates and per_try_idle_timeout are not supported")
	}
	return nil
}

// RetryRequestAllowed reports whether p's retriable_request_headers, if
// any, let req be retried.
func (p *RetryPolicy) RetryRequestAllowed(req *http.Request) bool {
	if len(p.RetriableRequestHeaders) == 0 {
		return true
	}
	for i := range p.RetriableRequestHeaders {
		if p.RetriableRequestHeaders[i].matches(req) {
			return true
		}
	}
	return false
}

// RetriableResponseHeaders reports whether the response headers h match
// one of p's retriable_headers.
func (p *RetryPolicy) RetriableResponseHeaders(h http.Header) bool {
	if len(p.RetriableHeaders) == 0 {
		return false
	}
	// The matchers read the header map of a request; wrap the response's.
	req := &http.Request{Header: h, URL: &url.URL{}}
	for i := range p.RetriableHeaders {
		if p.RetriableHeaders[i].matches(req) {
			return true
		}
	}
	return false
}

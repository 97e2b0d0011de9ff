package api

import (
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// Reasons of galley_validation_failed, as Istio's validation webhook
// (pkg/webhooks/validation/server) names them.
const (
	reasonYAMLDecodeError = "yaml_decode_error"
	reasonUnknownType     = "unknown_type"
	reasonInvalidConfig   = "invalid_resource"
)

// admissionMetrics count the resources of validate and apply requests, the
// equivalent of Istio's validating webhook: galley_validation_passed
// {group, version, resource} and galley_validation_failed {group, version,
// resource, reason}. resource is the plural lower-case kind
// ("virtualservices"), as Kubernetes admission requests name it.
type admissionMetrics struct {
	passed *prometheus.CounterVec
	failed *prometheus.CounterVec
}

// configErrors is a gauge of the config directory's current errors.
func configErrors(store ConfigStore) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "loom_config_errors",
		Help: "Errors of the latest read of the config directory; while above 0 the last good config keeps serving.",
	}, func() float64 { return float64(len(store.Errors())) })
}

func newAdmissionMetrics() *admissionMetrics {
	return &admissionMetrics{
		passed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "galley_validation_passed",
			Help: "Resource is valid",
		}, []string{"group", "version", "resource"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "galley_validation_failed",
			Help: "Resource validation failed",
		}, []string{"group", "version", "resource", "reason"}),
	}
}

// record counts the resources of one validate or apply body: each
// resource that decoded and is not named by an error of err passed;
// each decoding error failed with yaml_decode_error (unknown_type for an
// unknown kind); each resource err names failed with invalid_resource.
// Errors that are not about the body's validity (a resource defined in a
// user file, I/O) count nothing.
func (m *admissionMetrics) record(source string, data []byte, err error) {
	if err != nil && (errors.Is(err, config.ErrDefinedInFile) || statusOf(err) != 400) {
		return
	}
	rs, decodeErrs := config.Decode(source, data)
	for _, e := range decodeErrs {
		reason := reasonYAMLDecodeError
		if e.Field == "kind" {
			reason = reasonUnknownType
		}
		m.failed.WithLabelValues(config.Group(e.Key.Kind), "", resourceName(e.Key.Kind), reason).Inc()
	}
	failed := map[config.Key]bool{}
	if len(decodeErrs) == 0 {
		var errs config.Errors
		var one *config.Error
		switch {
		case errors.As(err, &errs):
		case errors.As(err, &one):
			errs = config.Errors{one}
		}
		for _, e := range errs {
			failed[e.Key] = true
		}
	}
	for _, r := range rs {
		group, version, _ := strings.Cut(r.APIVersion, "/")
		if failed[r.Key()] {
			m.failed.WithLabelValues(group, version, resourceName(r.Kind), reasonInvalidConfig).Inc()
			continue
		}
		if len(decodeErrs) == 0 {
			m.passed.WithLabelValues(group, version, resourceName(r.Kind)).Inc()
		}
	}
}

// resourceName is the Kubernetes resource of kind: lower case, plural
// ("virtualservices", "authorizationpolicies"); "" for no kind.
func resourceName(kind config.Kind) string {
	k := strings.ToLower(string(kind))
	switch {
	case k == "":
		return ""
	case strings.HasSuffix(k, "y"):
		return k[:len(k)-1] + "ies"
	}
	return k + "s"
}

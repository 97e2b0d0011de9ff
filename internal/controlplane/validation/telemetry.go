package validation

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
)

// promLabelRE is a Prometheus label name.
var promLabelRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// telemetry checks a Telemetry (telemetry.istio.io v1, v1alpha1) as
// Istio's CRD schema and webhook (ValidateTelemetry) do:
//   - at most one of selector, targetRef and targetRefs; label keys and
//     values without wildcards;
//   - every provider name non-empty (the schema's minLength 1);
//   - metrics: a customMetric non-empty; a tag override of operation
//     UPSERT (the default) needs a value, one of REMOVE must have none;
//     reportingInterval at least 1ms;
//   - tracing: randomSamplingPercentage 0-100; custom tags with exactly
//     one of literal, environment, header, formatter, each with its
//     required field non-empty;
//   - accessLogging: filter.expression must parse as CEL (Istio's
//     validateTelemetryFilter).
//
// Beyond Istio's webhook, which leaves them to the stats plugin to report
// at run time, a tag override's UPSERT value must parse as CEL, and its tag
// be a Prometheus label name (the proxy would refuse the whole update for
// it). A value that parses but that the proxy cannot evaluate (Istio's
// corpus has `value: add`) is accepted, as by Istio, and sent as
// 'unknown', what Istio's filter reports when an evaluation fails (see
// translate.StatsConfig).
//
// Whether the providers exist is a question for the mesh config: see
// TelemetryProviders.
func (c *checker) telemetry(t *telemetry.Telemetry) {
	// Targets name waypoints and Kubernetes Gateways, which Loom has not:
	// such a Telemetry applies to no proxy, as to no sidecar in Istio.
	c.policyTargets(t.GetSelector(), t.GetTargetRef(), t.GetTargetRefs(), false)
	for i, m := range t.GetMetrics() {
		p := fmt.Sprintf("spec.metrics[%d]", i)
		if m == nil {
			c.errf(p, `Invalid value: "null": must be of type object`)
			continue
		}
		c.providerRefs(p+".providers", m.GetProviders())
		for j, o := range m.GetOverrides() {
			op := fmt.Sprintf("%s.overrides[%d]", p, j)
			if o == nil {
				c.errf(op, `Invalid value: "null": must be of type object`)
				continue
			}
			if cm, ok := o.GetMatch().GetMetricMatch().(*telemetry.MetricSelector_CustomMetric); ok && cm.CustomMetric == "" {
				c.errf(op+".match.customMetric", `Invalid value: "": %s.match.customMetric in body should be at least 1 chars long`, op)
			}
			for _, tag := range sortedTagNames(o.GetTagOverrides()) {
				to := o.GetTagOverrides()[tag]
				tp := fmt.Sprintf("%s.tagOverrides[%s]", op, tag)
				if tag == "" {
					c.errf(tp, "Invalid value: a tag name must not be empty")
				}
				switch to.GetOperation() {
				case telemetry.MetricsOverrides_TagOverride_UPSERT:
					if tag != "" && !promLabelRE.MatchString(tag) {
						c.errf(tp, "Invalid value: %q: a tag must be a Prometheus label name", tag)
					}
					if to.GetValue() == "" {
						c.errf(tp, "Invalid value: value must be set when operation is UPSERT")
					} else if err := ParseCEL(to.GetValue()); err != nil {
						c.errf(tp+".value", "Invalid value: %q: must be a valid CEL expression: %v", to.GetValue(), err)
					}
				case telemetry.MetricsOverrides_TagOverride_REMOVE:
					if to.GetValue() != "" {
						c.errf(tp, "Invalid value: value must not be set when operation is REMOVE")
					}
				}
			}
		}
		if ri := m.GetReportingInterval(); ri != nil {
			c.minDuration(p+".reportingInterval", ri)
		}
	}
	for i, tr := range t.GetTracing() {
		p := fmt.Sprintf("spec.tracing[%d]", i)
		if tr == nil {
			c.errf(p, `Invalid value: "null": must be of type object`)
			continue
		}
		c.providerRefs(p+".providers", tr.GetProviders())
		if s := tr.GetRandomSamplingPercentage(); s != nil {
			v := s.GetValue()
			switch {
			case math.IsNaN(v) || math.IsInf(v, 0):
				c.errf(p+".randomSamplingPercentage", "Invalid value: %v: must be a number", v)
			case v < 0:
				c.errf(p+".randomSamplingPercentage", "Invalid value: %v: %s.randomSamplingPercentage in body should be greater than or equal to 0", v, p)
			case v > 100:
				c.errf(p+".randomSamplingPercentage", "Invalid value: %v: %s.randomSamplingPercentage in body should be less than or equal to 100", v, p)
			}
		}
		for _, name := range sortedTagNames(tr.GetCustomTags()) {
			c.customTag(fmt.Sprintf("%s.customTags[%s]", p, name), tr.GetCustomTags()[name])
		}
	}
	for i, al := range t.GetAccessLogging() {
		p := fmt.Sprintf("spec.accessLogging[%d]", i)
		if al == nil {
			c.errf(p, `Invalid value: "null": must be of type object`)
			continue
		}
		c.providerRefs(p+".providers", al.GetProviders())
		if f := al.GetFilter(); f != nil {
			if err := ParseCEL(f.GetExpression()); err != nil {
				c.errf(p+".filter.expression", "Invalid value: %q: must be a valid CEL expression, %v", f.GetExpression(), err)
			}
		}
	}
}

func (c *checker) providerRefs(p string, refs []*telemetry.ProviderRef) {
	for i, r := range refs {
		rp := fmt.Sprintf("%s[%d]", p, i)
		switch {
		case r == nil:
			c.errf(rp, `Invalid value: "null": must be of type object`)
		case strings.TrimSpace(r.GetName()) == "":
			c.errf(rp+".name", `Invalid value: %q: %s.name in body should be at least 1 chars long`, r.GetName(), rp)
		}
	}
}

func (c *checker) customTag(p string, t *telemetry.Tracing_CustomTag) {
	if t == nil {
		c.errf(p, `Invalid value: "null": must be of type object`)
		return
	}
	field, value := "", ""
	switch ty := t.GetType().(type) {
	case *telemetry.Tracing_CustomTag_Literal:
		field, value = "literal.value", ty.Literal.GetValue()
	case *telemetry.Tracing_CustomTag_Environment:
		field, value = "environment.name", ty.Environment.GetName()
	case *telemetry.Tracing_CustomTag_Header:
		field, value = "header.name", ty.Header.GetName()
	case *telemetry.Tracing_CustomTag_Formatter:
		field, value = "formatter.value", ty.Formatter.GetValue()
	default:
		// The schema's oneOf also admits none of the four; Istio then
		// adds no tag.
		return
	}
	if value == "" {
		c.errf(p+"."+field, `Required value: %s.%s in body should be at least 1 chars long`, p, field)
	}
}

// minDuration refuses a duration under 1ms, with the rule and message
// Istio's CRDs give durations.
func (c *checker) minDuration(p string, d *durationpb.Duration) {
	if err := d.CheckValid(); err != nil || d.AsDuration() < 1e6 {
		c.errf(p, "Invalid value: %q: must be a valid duration greater than 1ms", d.AsDuration().String())
	}
}

func sortedTagNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var (
	celOnce sync.Once
	celEnv  *cel.Env
	celErr  error
)

// ParseCEL parses expr as a CEL expression, as Istio's webhook checks an
// access log filter (a parse, not a type check: the attributes are
// Envoy's, known only to the proxy). It is safe for concurrent use.
func ParseCEL(expr string) error {
	celOnce.Do(func() { celEnv, celErr = cel.NewEnv() })
	if celErr != nil {
		return celErr
	}
	if _, iss := celEnv.Parse(expr); iss.Err() != nil {
		// cel-go's text adds the expression and a caret on more lines;
		// one line keeps an error one line of loomctl's output.
		msg, _, _ := strings.Cut(iss.Err().Error(), "\n")
		return errors.New(strings.TrimPrefix(msg, "ERROR: <input>:"))
	}
	return nil
}

// TelemetryProviders checks that every provider a Telemetry of rs names
// (metrics, tracing and access logging) is an extension provider of mesh
// (or one Istio's default mesh config defines, see
// meshconfig.ExtensionProvider). Istio only warns (analyzer IST0157) and
// then ignores such a provider, so that a typo silently turns telemetry
// off; Loom refuses the resource instead, naming the field. It is a
// separate check from ValidateAll because it depends on the mesh config,
// which loomd has and loomctl's offline validation has not.
func TelemetryProviders(rs []*config.Resource, mesh *meshv1alpha1.MeshConfig) config.Errors {
	var errs config.Errors
	for _, r := range rs {
		t, ok := r.Spec.(*telemetry.Telemetry)
		if !ok {
			continue
		}
		check := func(p string, refs []*telemetry.ProviderRef) {
			for i, ref := range refs {
				name := ref.GetName()
				if strings.TrimSpace(name) == "" || meshconfig.ExtensionProvider(mesh, name) != nil {
					continue
				}
				errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: fmt.Sprintf("%s[%d].name", p, i),
					Msg: fmt.Sprintf("Invalid value: %q: no such provider in the mesh config's extensionProviders (%s)", name, strings.Join(meshconfig.ExtensionProviderNames(mesh), ", "))})
			}
		}
		for i, m := range t.GetMetrics() {
			check(fmt.Sprintf("spec.metrics[%d].providers", i), m.GetProviders())
		}
		for i, tr := range t.GetTracing() {
			check(fmt.Sprintf("spec.tracing[%d].providers", i), tr.GetProviders())
		}
		for i, al := range t.GetAccessLogging() {
			check(fmt.Sprintf("spec.accessLogging[%d].providers", i), al.GetProviders())
		}
	}
	return errs
}

// Package promtest scrapes a Prometheus endpoint over HTTP and reads
// values out of what it parsed, for tests of both planes and of the
// end-to-end suite. It imports only the standard library and Prometheus's
// own parser (github.com/prometheus/common/expfmt), never a plane.
package promtest

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are the metric families of one scrape, by name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url (timeout 5 s), checks it answers 200 in the Prometheus
// text format, and parses the body with expfmt's text parser.
func Scrape(url string) (Families, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("GET %s: Content-Type %q, want the text format", url, ct)
	}
	return Parse(string(body))
}

// Gather collects g's families in process (a registry, or a collector's
// registry), as a scrape of it would read them, without the text round
// trip.
func Gather(g interface {
	Gather() ([]*dto.MetricFamily, error)
}) (Families, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	f := make(Families, len(mfs))
	for _, mf := range mfs {
		f[mf.GetName()] = mf
	}
	return f, nil
}

// Parse parses Prometheus text exposition.
func Parse(text string) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

// Value returns the value of the one series of name whose labels include
// labels (all of them when labels is empty): a counter's or gauge's value,
// a histogram's sample count. ok is false when no series matches; more
// than one match is summed.
func (f Families) Value(name string, labels map[string]string) (v float64, ok bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		ok = true
		switch {
		case m.GetCounter() != nil:
			v += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			v += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, ok
}

// HistogramSum returns the sample sum of the histogram series of name
// whose labels include labels (all of them when labels is empty), summed
// over the matches. ok is false when no histogram series matches.
func (f Families) HistogramSum(name string, labels map[string]string) (sum float64, ok bool) {
	for _, m := range f[name].GetMetric() {
		if h := m.GetHistogram(); h != nil && hasLabels(m, labels) {
			sum += h.GetSampleSum()
			ok = true
		}
	}
	return sum, ok
}

// Names lists the families' names, sorted.
func (f Families) Names() []string {
	out := make([]string, 0, len(f))
	for n := range f {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

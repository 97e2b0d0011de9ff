package dashboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Bounds and defaults of ScraperOptions.
const (
	DefaultScrapeInterval = 5 * time.Second
	MinScrapeInterval     = time.Second
	MaxScrapeInterval     = time.Minute
	DefaultRetention      = 10 * time.Minute
	MaxRetention          = time.Hour
	DefaultMaxSeries      = 20000
	DefaultMaxBodyBytes   = 16 << 20
	DefaultScrapeParallel = 8
	maxScrapeTimeout      = 5 * time.Second
	// acceptMetrics asks for Prometheus's delimited protobuf, else text,
	// as Prometheus's own scrapes do.
	acceptMetrics = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7," +
		"text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
	scrapeErrorBodyExcerpt = 200
)

// Target is one proxy to scrape: its ID (the xDS node ID) and the URLs of
// its Prometheus endpoint, tried in order until one answers (a Loom proxy
// serves Istio's metrics on IP:15090/stats/prometheus, and its own on the
// admin port IP:15000/stats/prometheus).
type Target struct {
	ID   string
	URLs []string
}

// ScraperOptions configure a Scraper. Zero values mean the defaults.
type ScraperOptions struct {
	// Targets lists the proxies to scrape; it is called once per scrape and
	// must not block for long. Required.
	Targets func() []Target
	// Interval is the time between scrapes, clamped to
	// [MinScrapeInterval, MaxScrapeInterval]. Default
	// DefaultScrapeInterval.
	Interval time.Duration
	// Timeout bounds one target's scrape; at most the interval and 5 s.
	// Default: the smaller of the two.
	Timeout time.Duration
	// Retention is how much history the series keep, clamped to
	// [10 intervals, MaxRetention]. Default DefaultRetention.
	Retention time.Duration
	// MaxSeries bounds the series read from one target per scrape; the
	// rest are dropped and counted in TargetHealth.Dropped. Default
	// DefaultMaxSeries.
	MaxSeries int
	// MaxBodyBytes bounds one scrape's body. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Parallel bounds the scrapes in flight. Default
	// DefaultScrapeParallel.
	Parallel int
	// Client makes the requests. Default: a client that ignores proxy
	// environment variables.
	Client *http.Client
	// Logger receives scrape failures at debug level. Nil discards them.
	Logger *slog.Logger
}

// TargetHealth is how the last scrape of a target went.
type TargetHealth struct {
	ID string `json:"id"`
	// URL is the endpoint that answered last; "" before the first answer.
	URL string `json:"url,omitempty"`
	// Error is why the last scrape failed; "" when it worked.
	Error string `json:"error,omitempty"`
	// LastSuccess is when a scrape last worked; zero before the first.
	LastSuccess time.Time `json:"last_success,omitzero"`
	// Series is how many Istio series the last good scrape read, and
	// Dropped how many more the MaxSeries bound left out.
	Series  int `json:"series"`
	Dropped int `json:"dropped,omitempty"`
	// Duration is how long the last scrape took.
	Duration time.Duration `json:"duration_ns"`
}

// Scraper is the embedded traffic source: it scrapes every proxy's
// Prometheus endpoint on an interval, keeps the increase of each Istio
// counter and histogram bucket between scrapes, summed per edge, in a ring
// bounded by Retention, and answers rates over windows from it. A counter
// that went down (the proxy restarted) counts its new value as the
// increase, as Prometheus's rate does; the first scrape of a target only
// sets its baseline. Create it with NewScraper, run it with Run. Its
// methods are safe for concurrent use.
type Scraper struct {
	opts ScraperOptions
	log  *slog.Logger
	now  func() time.Time // time.Now; tests step it

	// mu guards the fields below. It is held while a scrape's results are
	// merged and while a query reads the ring, never during I/O.
	mu      sync.Mutex
	targets map[string]*targetState
	ring    []slot // oldest first; at most cap
	cap     int
	// keys interns the aggregated series the ring refers to by index, so
	// that a slot holds 12-byte deltas rather than copies of their labels;
	// keyIndex is its reverse. Rebuilt from the ring once per retention
	// (compactKeys), so keys of edges long gone do not pile up.
	keys     []seriesKey
	keyIndex map[seriesKey]uint32
	merges   int // since the last compaction
}

// targetState is what the last scrape of a target left.
type targetState struct {
	health TargetHealth
	// prev holds each raw series' value at the last good scrape; nil
	// before the first, which only sets the baseline.
	prev map[string]float64
}

// slot is one scrape of every target: the increase of each series since
// the scrape before, summed per seriesKey, by its index in Scraper.keys.
type slot struct {
	at     time.Time
	dt     time.Duration // since the scrape before; 0 for the first
	deltas []keyDelta
}

// keyDelta is the increase of one interned seriesKey.
type keyDelta struct {
	key uint32
	d   float64
}

// seriesKind is what a seriesKey counts.
type seriesKind uint8

const (
	kindRequests seriesKind = iota // istio_requests_total
	kindBucket                     // istio_request_duration_milliseconds_bucket
	kindTCP                        // istio_tcp_{sent,received}_bytes_total
)

// seriesKey is one aggregated series of the ring: the labels of the raw
// series the dashboard uses, the others (response_flags, principals...)
// summed away.
type seriesKey struct {
	kind     seriesKind
	reporter string
	edge     EdgeKey
	protocol string
	code     string
	security string
	le       float64
}

var _ TrafficSource = (*Scraper)(nil)

// NewScraper checks opts and applies their defaults and bounds.
func NewScraper(opts ScraperOptions) (*Scraper, error) {
	if opts.Targets == nil {
		return nil, errors.New("dashboard: scraper: Targets is required")
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultScrapeInterval
	}
	opts.Interval = min(max(opts.Interval, MinScrapeInterval), MaxScrapeInterval)
	limit := min(opts.Interval, maxScrapeTimeout)
	if opts.Timeout <= 0 || opts.Timeout > limit {
		opts.Timeout = limit
	}
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	opts.Retention = min(max(opts.Retention, 10*opts.Interval), MaxRetention)
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultScrapeParallel
	}
	if opts.Client == nil {
		// Uncompressed: gzip costs both ends CPU for nothing on loopback.
		opts.Client = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 2 * opts.Interval,
			DisableCompression: true}}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scraper{opts: opts, log: log.With("component", "dashboard-scraper"), now: time.Now, targets: map[string]*targetState{},
		cap: int(opts.Retention/opts.Interval) + 1}, nil
}

// Kind implements TrafficSource.
func (s *Scraper) Kind() string { return "scrape" }

// Interval is the scrape interval in force.
func (s *Scraper) Interval() time.Duration { return s.opts.Interval }

// Run scrapes every Interval until ctx is done, then returns nil. Run must
// be called once.
func (s *Scraper) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		s.ScrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// scrapeResult is one target's scrape.
type scrapeResult struct {
	target  Target
	url     string
	series  map[string]rawSample
	dropped int
	err     error
	took    time.Duration
}

// rawSample is one series of a scrape: its aggregated key and its value.
type rawSample struct {
	key   seriesKey
	value float64
}

// ScrapeOnce scrapes every target once, at most Parallel at a time, each
// bounded by Timeout, and adds the result to the ring. Run calls it; tests
// call it to step the scraper.
func (s *Scraper) ScrapeOnce(ctx context.Context) {
	targets := s.opts.Targets()
	results := make([]scrapeResult, len(targets))
	sem := make(chan struct{}, s.opts.Parallel)
	var wg sync.WaitGroup
	for i, t := range targets {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = s.scrape(ctx, t)
		})
	}
	wg.Wait()
	s.merge(s.now(), results)
}

// scrape fetches and parses one target, trying its URLs in order.
func (s *Scraper) scrape(ctx context.Context, t Target) scrapeResult {
	start := time.Now()
	res := scrapeResult{target: t}
	var errs []string
	for _, u := range t.URLs {
		series, dropped, err := s.fetch(ctx, u)
		if err == nil {
			res.url, res.series, res.dropped = u, series, dropped
			res.took = time.Since(start)
			return res
		}
		errs = append(errs, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	if len(t.URLs) == 0 {
		errs = append(errs, "no URL to scrape")
	}
	res.err = errors.New(strings.Join(errs, "; "))
	res.took = time.Since(start)
	s.log.Debug("scrape failed", "target", t.ID, "err", res.err)
	return res
}

// fetch GETs one endpoint and reads its Istio series.
func (s *Scraper) fetch(ctx context.Context, url string) (map[string]rawSample, int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	req.Header.Set("Accept", acceptMetrics)
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, s.opts.MaxBodyBytes+1)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(body, scrapeErrorBodyExcerpt))
		return nil, 0, fmt.Errorf("scrape %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape %s: read: %w", url, err)
	}
	if int64(len(data)) > s.opts.MaxBodyBytes {
		return nil, 0, fmt.Errorf("scrape %s: body larger than %d bytes", url, s.opts.MaxBodyBytes)
	}
	fams, err := decodeFamilies(data, expfmt.ResponseFormat(resp.Header))
	if err != nil {
		return nil, 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	series, dropped := istioSeries(fams, s.opts.MaxSeries)
	return series, dropped, nil
}

// wantedFamilies are the families the dashboard reads.
var wantedFamilies = map[string]bool{metricRequests: true, metricDuration: true, metricTCPSent: true, metricTCPReceived: true}

// decodeFamilies decodes the wanted families of a scrape: Prometheus's
// delimited protobuf (what client_golang's promhttp answers when asked, the
// cheaper to decode), else the text format, whose other families' lines
// are dropped before expfmt's text parser reads it (it allocates per
// label, and a proxy exports many more families than the dashboard reads).
func decodeFamilies(data []byte, format expfmt.Format) (map[string]*dto.MetricFamily, error) {
	if format.FormatType() == expfmt.TypeProtoDelim {
		fams := map[string]*dto.MetricFamily{}
		dec := expfmt.NewDecoder(bytes.NewReader(data), format)
		for {
			mf := &dto.MetricFamily{}
			if err := dec.Decode(mf); err != nil {
				if errors.Is(err, io.EOF) {
					return fams, nil
				}
				return nil, err
			}
			if wantedFamilies[mf.GetName()] {
				fams[mf.GetName()] = mf
			}
		}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(bytes.NewReader(wantedLines(data)))
}

// wantedLines keeps the lines of a text exposition that belong to the
// wanted families: their samples (a histogram's _bucket, _sum and _count
// too) and their # HELP and # TYPE lines.
func wantedLines(data []byte) []byte {
	out := make([]byte, 0, len(data)/2)
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		name := line
		if rest, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok {
			name = rest
		} else if rest, ok := bytes.CutPrefix(line, []byte("# TYPE ")); ok {
			name = rest
		} else if len(line) > 0 && line[0] == '#' {
			continue
		}
		if i := bytes.IndexAny(name, "{ \t\n"); i >= 0 {
			name = name[:i]
		}
		n := string(name)
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && base == metricDuration {
				n = base
			}
		}
		if wantedFamilies[n] {
			out = append(out, line...)
			if line[len(line)-1] != '\n' {
				out = append(out, '\n')
			}
		}
	}
	return out
}

// istioSeries picks the series of Istio's standard metrics out of a
// scrape, by raw identity (name and every label), at most max of them.
func istioSeries(fams map[string]*dto.MetricFamily, max int) (map[string]rawSample, int) {
	out := map[string]rawSample{}
	dropped := 0
	add := func(id string, k seriesKey, v float64) {
		if len(out) >= max {
			dropped++
			return
		}
		out[id] = rawSample{key: k, value: v}
	}
	for _, name := range []string{metricRequests, metricDuration, metricTCPSent, metricTCPReceived} {
		fam := fams[name]
		if fam == nil {
			continue
		}
		for _, m := range fam.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			label := func(n string) string { return labels[n] }
			id := seriesID(name, m.GetLabel())
			k := seriesKey{reporter: labels[labelReporter], edge: edgeOf(label)}
			switch name {
			case metricRequests:
				k.kind, k.protocol, k.code, k.security = kindRequests, labels[labelProtocol], labels[labelResponseCode], labels[labelSecurityPolicy]
				add(id, k, counterValue(m))
			case metricDuration:
				h := m.GetHistogram()
				if h == nil {
					continue
				}
				k.kind = kindBucket
				hasInf := false
				for _, b := range h.GetBucket() {
					kb := k
					kb.le = b.GetUpperBound()
					hasInf = hasInf || math.IsInf(kb.le, 1)
					add(bucketID(id, kb.le), kb, float64(b.GetCumulativeCount()))
				}
				if !hasInf {
					kb := k
					kb.le = math.Inf(1)
					add(bucketID(id, kb.le), kb, float64(h.GetSampleCount()))
				}
			default:
				k.kind = kindTCP
				add(id, k, counterValue(m))
			}
		}
	}
	return out, dropped
}

// bucketID is the raw identity of bucket le of the histogram series id.
func bucketID(id string, le float64) string { return fmt.Sprintf("%s%sle=%g", id, bucketSep, le) }

// bucketSep separates a histogram series' identity from a bucket's bound
// in bucketID.
const bucketSep = "\xfe"

func counterValue(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetUntyped().GetValue()
}

// seriesID is a series' raw identity: its name and labels, sorted.
func seriesID(name string, lps []*dto.LabelPair) string {
	parts := make([]string, 0, len(lps))
	for _, lp := range lps {
		parts = append(parts, lp.GetName()+"="+lp.GetValue())
	}
	sort.Strings(parts)
	return name + "\xff" + strings.Join(parts, "\xff")
}

// merge turns the results of one scrape at now into a slot of the ring and
// updates the targets' health. Targets no longer listed are forgotten.
func (s *Scraper) merge(now time.Time, results []scrapeResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := slot{at: now}
	sums := map[uint32]float64{}
	if n := len(s.ring); n > 0 {
		sl.dt = now.Sub(s.ring[n-1].at)
	}
	seen := map[string]bool{}
	for _, r := range results {
		id := r.target.ID
		seen[id] = true
		st := s.targets[id]
		if st == nil {
			st = &targetState{health: TargetHealth{ID: id}}
			s.targets[id] = st
		}
		st.health.Duration = r.took
		if r.err != nil {
			// The baseline is kept: the next good scrape's increase covers
			// the gap, over the slots that missed it.
			st.health.Error = r.err.Error()
			continue
		}
		st.health.URL, st.health.Error, st.health.LastSuccess = r.url, "", now
		st.health.Series, st.health.Dropped = len(r.series), r.dropped
		prev := st.prev
		st.prev = make(map[string]float64, len(r.series))
		// observed holds the histograms with new observations: all their
		// buckets are kept, the zero ones too, since the highest empty bound
		// is where the first non-empty bucket starts.
		observed := map[string]bool{}
		deltas := make(map[string]float64, len(r.series))
		for id, smp := range r.series {
			st.prev[id] = smp.value
			if prev == nil {
				continue // first scrape of the target: baseline only
			}
			old, ok := prev[id]
			d := smp.value - old
			switch {
			case !ok:
				// A series born since the last scrape counted from zero.
				d = smp.value
			case d < 0:
				// A reset (the proxy restarted): the new value is the increase.
				d = smp.value
			}
			deltas[id] = d
			if smp.key.kind == kindBucket && d != 0 {
				hist, _, _ := strings.Cut(id, bucketSep)
				observed[hist] = true
			}
		}
		for id, d := range deltas {
			smp := r.series[id]
			if smp.key.kind == kindBucket {
				if hist, _, _ := strings.Cut(id, bucketSep); !observed[hist] {
					continue
				}
			} else if d == 0 {
				continue
			}
			sums[s.intern(smp.key)] += d
		}
	}
	sl.deltas = make([]keyDelta, 0, len(sums))
	for k, d := range sums {
		sl.deltas = append(sl.deltas, keyDelta{k, d})
	}
	for id := range s.targets {
		if !seen[id] {
			delete(s.targets, id)
		}
	}
	s.ring = append(s.ring, sl)
	if len(s.ring) > s.cap {
		copy(s.ring, s.ring[len(s.ring)-s.cap:])
		s.ring = s.ring[:s.cap]
	}
	if s.merges++; s.merges >= s.cap {
		s.compactKeys()
	}
}

// intern returns k's index in s.keys, adding it when new. s.mu must be
// held.
func (s *Scraper) intern(k seriesKey) uint32 {
	if i, ok := s.keyIndex[k]; ok {
		return i
	}
	if s.keyIndex == nil {
		s.keyIndex = map[seriesKey]uint32{}
	}
	i := uint32(len(s.keys))
	s.keys = append(s.keys, k)
	s.keyIndex[k] = i
	return i
}

// compactKeys keeps only the keys the ring refers to, renumbering them.
// s.mu must be held.
func (s *Scraper) compactKeys() {
	s.merges = 0
	old := s.keys
	s.keys, s.keyIndex = nil, nil
	for i := range s.ring {
		for j, kd := range s.ring[i].deltas {
			s.ring[i].deltas[j].key = s.intern(old[kd.key])
		}
	}
}

// Health returns the scrape health of every current target, sorted by ID.
func (s *Scraper) Health() []TargetHealth {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TargetHealth, 0, len(s.targets))
	for _, st := range s.targets {
		out = append(out, st.health)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Edges implements TrafficSource from the slots of the last window. With
// less than two scrapes there is nothing to rate and it returns none.
func (s *Scraper) Edges(_ context.Context, window time.Duration) ([]EdgeStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) == 0 {
		return nil, nil
	}
	end := s.ring[len(s.ring)-1].at
	set, secs := edgeSet{}, 0.0
	for _, sl := range s.slotsIn(end.Add(-window), end) {
		secs += sl.dt.Seconds()
		for _, kd := range sl.deltas {
			addDelta(set, s.keys[kd.key], kd.d)
		}
	}
	if secs == 0 {
		return nil, nil
	}
	return set.stats(secs), nil
}

func addDelta(set edgeSet, k seriesKey, d float64) {
	switch k.kind {
	case kindRequests:
		set.addRequests(k.edge, k.reporter, k.protocol, k.code, k.security, d)
	case kindBucket:
		set.addBucket(k.edge, k.reporter, k.le, d)
	case kindTCP:
		if k.reporter == reporterSource {
			set.addTCP(k.edge, d)
		}
	}
}

// slotsIn returns the slots with from < at <= to. s.mu must be held.
func (s *Scraper) slotsIn(from, to time.Time) []slot {
	i := sort.Search(len(s.ring), func(i int) bool { return s.ring[i].at.After(from) })
	j := sort.Search(len(s.ring), func(i int) bool { return s.ring[i].at.After(to) })
	return s.ring[i:j]
}

// Series implements TrafficSource: one point per step back from the last
// scrape over span, each the rates over max(step, 3 intervals) before it;
// steps with no scrape are left out.
func (s *Scraper) Series(_ context.Context, q Query, span, step time.Duration) ([]Point, error) {
	if step <= 0 || span <= 0 {
		return nil, errors.New("span and step must be positive")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) == 0 {
		return nil, nil
	}
	match := q.matcher()
	smooth := max(step, 3*s.opts.Interval)
	end := s.ring[len(s.ring)-1].at
	var out []Point
	for t := end.Add(-span + step); !t.After(end); t = t.Add(step) {
		var req, errs, secs float64
		buckets := map[float64]float64{}
		for _, sl := range s.slotsIn(t.Add(-smooth), t) {
			secs += sl.dt.Seconds()
			for _, kd := range sl.deltas {
				k, d := s.keys[kd.key], kd.d
				if !match(k) {
					continue
				}
				switch k.kind {
				case kindRequests:
					req += d
					if isError(k.code) {
						errs += d
					}
				case kindBucket:
					buckets[k.le] += d
				}
			}
		}
		if secs == 0 {
			continue
		}
		out = append(out, Point{Time: t, RequestRate: req / secs, ErrorRate: errs / secs, P95: quantile(0.95, buckets)})
	}
	return out, nil
}

// matcher returns whether a series counts for q.
func (q Query) matcher() func(seriesKey) bool {
	names := map[string]bool{}
	for _, w := range q.Workloads {
		names[w] = true
	}
	if q.Direction == Inbound {
		return func(k seriesKey) bool {
			if k.reporter != reporterDestination {
				return false
			}
			if q.Service != "" {
				return k.edge.Service == q.Service
			}
			return k.edge.Dest.Namespace == q.Namespace && names[k.edge.Dest.Name]
		}
	}
	return func(k seriesKey) bool {
		return k.reporter == reporterSource && k.edge.Source.Namespace == q.Namespace && names[k.edge.Source.Name]
	}
}

// DefaultScrapePorts are the ports ProxyTargets scrapes, in order: the
// proxy's Prometheus port (Envoy's 15090) and its admin port.
var DefaultScrapePorts = []int{15090, 15000}

// ProxyTargets returns a Targets function for ScraperOptions: every
// connected proxy of ps, at the IP of its node ID, on ports (path
// /stats/prometheus) in order. Proxyless gRPC clients (a user agent
// starting "grpc") serve no metrics and are left out.
func ProxyTargets(ps ProxySource, ports []int) func() []Target {
	return func() []Target {
		var out []Target
		for _, p := range ps.Syncz() {
			if strings.HasPrefix(p.Version, "grpc") {
				continue
			}
			id, err := xdsapi.ParseNodeID(p.ID)
			if err != nil {
				continue
			}
			t := Target{ID: p.ID}
			for _, port := range ports {
				t.URLs = append(t.URLs, "http://"+net.JoinHostPort(id.IP, strconv.Itoa(port))+"/stats/prometheus")
			}
			out = append(out, t)
		}
		return out
	}
}

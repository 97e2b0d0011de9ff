package dashboard

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkScrapeOnce measures one scrape of N proxies, each serving
// Istio's metrics for 4 edges (as both reporters, 2 response codes: 16
// request series and 16 duration histograms of 20 buckets, ~350 series),
// all with new traffic, over real HTTP on loopback; the proxies' side
// (client_golang's encoding) runs in the same process and is counted. It
// reports the aggregated series the ring keeps per scrape.
func BenchmarkScrapeOnce(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("proxies=%d", n), func(b *testing.B) {
			var targets []Target
			var proxies []*fakeProxy
			traffic := func() {
				for i, p := range proxies {
					for e := range 4 {
						for _, rep := range []string{reporterSource, reporterDestination} {
							for _, code := range []string{"200", "503"} {
								p.record(call{reporter: rep, src: fmt.Sprintf("app%d-v1", i), dst: fmt.Sprintf("svc%d-v%d", e, i%3),
									service: fmt.Sprintf("svc%d", e), code: code, ms: 7, n: 1})
							}
						}
					}
				}
			}
			for i := range n {
				p := newFakeProxy(b)
				proxies = append(proxies, p)
				targets = append(targets, Target{ID: fmt.Sprint(i), URLs: []string{p.url()}})
			}
			traffic()
			c := newClock()
			s, err := NewScraper(ScraperOptions{Targets: staticTargets(targets...), Retention: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			s.now = c.now
			ctx := context.Background()
			s.ScrapeOnce(ctx) // baseline and warm connections
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				traffic()
				b.StartTimer()
				c.advance(5 * time.Second)
				s.ScrapeOnce(ctx)
			}
			b.StopTimer()
			keys := 0
			for _, sl := range s.ring {
				keys += len(sl.deltas)
			}
			b.ReportMetric(float64(keys)/float64(len(s.ring)), "keys/slot")
		})
	}
}

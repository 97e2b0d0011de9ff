package e2e

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// The fault-injection mesh runs beside TestBookinfo's, on its own subnet.
const (
	faultSubnet    = "127.43.0.0/24"
	faultLoomdAddr = "127.43.0.1:15014"
)

// The texts Bookinfo shows for the failures Istio's fault-injection task
// provokes.
const (
	ratingsUnavailable = "Ratings service is currently unavailable"
	reviewsUnavailable = "Sorry, product reviews are currently unavailable for this book."
	detailsUnavailable = "Sorry, product details are currently unavailable for this book."
)

// TestFaultInjection follows Istio's fault-injection task
// (tasks/traffic-management/fault-injection) with Istio's own sample
// files: with reviews v2 for jason and v1 for everyone else, an HTTP 500
// abort on jason's calls to ratings makes his page say ratings are
// unavailable; a 7 s delay on them makes productpage give up on reviews
// (3 s timeout, one retry: 6 s) while reviews v2 still waits up to 10 s.
func TestFaultInjection(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if _, err := os.Stat(samplesDir); err != nil {
		t.Fatalf("Istio's Bookinfo samples are missing (%v): check out shared/istio-samples beside the module", err)
	}
	m := startDemo(t, faultSubnet)
	anon := newClient(t)
	jason := newClient(t)
	jason.Timeout = 20 * time.Second // the delayed page takes 6 s
	login(t, jason, m.pageURL, "jason")

	t.Run("reviews v2 for jason", func(t *testing.T) {
		applyAt(t, faultLoomdAddr, sample("destination-rule-all.yaml"), "destinationrule.networking.istio.io/ratings ")
		applyAt(t, faultLoomdAddr, sample("virtual-service-all-v1.yaml"), "virtualservice.networking.istio.io/ratings ")
		applyAt(t, faultLoomdAddr, sample("virtual-service-reviews-test-v2.yaml"), "virtualservice.networking.istio.io/reviews ")
		pollUntil(t, "jason's requests served by reviews-v2", func() bool { return allServedBy(t, jason, m.pageURL, 5, "v2") })
		pollUntil(t, "anonymous requests served by reviews-v1", func() bool { return allServedBy(t, anon, m.pageURL, 5, "v1") })
		// Before any fault, jason's page has its ratings.
		for i := range 5 {
			if p := fetchPage(t, jason, m.pageURL); strings.Contains(p.body, ratingsUnavailable) || strings.Contains(p.body, reviewsUnavailable) {
				t.Fatalf("request %d as jason, with no fault: the page says ratings or reviews are unavailable:\n%.2000s", i+1, p.body)
			}
		}
	})

	t.Run("abort", func(t *testing.T) {
		applyAt(t, faultLoomdAddr, sample("virtual-service-ratings-test-abort.yaml"), "virtualservice.networking.istio.io/ratings ")
		pollUntil(t, "jason's page saying "+ratingsUnavailable, func() bool {
			return strings.Contains(fetchPage(t, jason, m.pageURL).body, ratingsUnavailable)
		})
		for i := range 20 {
			p := fetchPage(t, jason, m.pageURL)
			if !strings.Contains(p.body, ratingsUnavailable) || p.version != "v2" {
				t.Errorf("request %d as jason (reviews %s): the page does not say %q (abort at 100%%):\n%.2000s", i+1, p.version, ratingsUnavailable, p.body)
			}
		}
		for i := range 20 {
			p := fetchPage(t, anon, m.pageURL)
			if strings.Contains(p.body, ratingsUnavailable) || strings.Contains(p.body, reviewsUnavailable) || p.version != "v1" {
				t.Errorf("anonymous request %d (reviews %s): the page shows a failure, or no reviews v1:\n%.2000s", i+1, p.version, p.body)
			}
		}
	})

	t.Run("delay", func(t *testing.T) {
		applyAt(t, faultLoomdAddr, sample("virtual-service-ratings-test-delay.yaml"), "virtualservice.networking.istio.io/ratings ")
		// Each try takes about 6 s: allow a few.
		if !poll(30*time.Second, func() bool {
			return strings.Contains(fetchPage(t, jason, m.pageURL).body, reviewsUnavailable)
		}) {
			t.Fatalf("not seen within 30 s: jason's page saying %q", reviewsUnavailable)
		}
		for i := range 2 {
			p := fetchPage(t, jason, m.pageURL)
			if !strings.Contains(p.body, reviewsUnavailable) {
				t.Errorf("request %d as jason: the page does not say %q (7 s delay at 100%%):\n%.2000s", i+1, reviewsUnavailable, p.body)
			}
			// productpage gives up after 3 s and once more after 3 s; it
			// must not have waited for the 7 s delay.
			if p.elapsed < 6*time.Second || p.elapsed >= 7*time.Second {
				t.Errorf("request %d as jason took %v, want 6 s to 7 s (two 3 s tries of productpage)", i+1, p.elapsed)
			}
		}
		for i := range 10 {
			p := fetchPage(t, anon, m.pageURL)
			if strings.Contains(p.body, reviewsUnavailable) || p.version != "v1" {
				t.Errorf("anonymous request %d (reviews %s): no reviews v1 on the page:\n%.2000s", i+1, p.version, p.body)
			}
			if p.elapsed > time.Second {
				t.Errorf("anonymous request %d took %v, want under 1 s (no delay)", i+1, p.elapsed)
			}
		}
	})

	// The details fault of Istio's samples: an abort with status 555
	// reaches productpage, whose details API passes the status on and
	// whose page shows the details error.
	t.Run("details abort 555", func(t *testing.T) {
		applyAt(t, faultLoomdAddr, sample("fault-injection-details-v1.yaml"), "virtualservice.networking.istio.io/details ")
		api := strings.Replace(m.pageURL, "/productpage", "/api/v1/products/0", 1)
		pollUntil(t, "the details API answering 555", func() bool {
			resp, err := anon.Get(api)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 555
		})
		for i := range 5 {
			resp, err := anon.Get(api)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 555 || !strings.Contains(string(body), detailsUnavailable) {
				t.Errorf("request %d to %s: %d %s, want 555 with %q", i+1, api, resp.StatusCode, body, detailsUnavailable)
			}
			if p := fetchPage(t, anon, m.pageURL); !strings.Contains(p.body, detailsUnavailable) {
				t.Errorf("request %d: the page does not say %q:\n%.2000s", i+1, detailsUnavailable, p.body)
			}
		}
	})

	t.Run("fault removed", func(t *testing.T) {
		applyAt(t, faultLoomdAddr, sample("virtual-service-all-v1.yaml"), "virtualservice.networking.istio.io/ratings ")
		applyAt(t, faultLoomdAddr, sample("virtual-service-reviews-test-v2.yaml"), "virtualservice.networking.istio.io/reviews ")
		pollUntil(t, "jason's page with reviews v2 and ratings", func() bool {
			p := fetchPage(t, jason, m.pageURL)
			return p.version == "v2" && !strings.Contains(p.body, ratingsUnavailable) && p.elapsed < time.Second
		})
	})
}

// page is one fetch of the product page.
type page struct {
	body    string
	version string // reviews version, as version()
	elapsed time.Duration
}

// fetchPage gets the product page; an error or a status other than 200
// fails the test.
func fetchPage(t *testing.T, c *http.Client, pageURL string) page {
	t.Helper()
	start := time.Now()
	resp, err := c.Get(pageURL)
	if err != nil {
		t.Fatalf("GET %s: %v", pageURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", pageURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %.300s", pageURL, resp.Status, body)
	}
	p := page{body: string(body), version: "none", elapsed: elapsed}
	if m := servedBy.FindSubmatch(body); m != nil {
		p.version = string(m[1])
	}
	return p
}

package e2e

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The authorization mesh runs beside the others, on its own subnet.
const (
	authzSubnet    = "127.71.0.0/24"
	authzLoomdAddr = "127.71.0.1:15014"
)

// The policies of Istio's HTTP authorization task
// (tasks/security/authorization/authz-http), written as the task writes
// them.
const (
	allowNothingYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: default
spec:
  {}
`
	productpageViewerYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: "productpage-viewer"
  namespace: default
spec:
  selector:
    matchLabels:
      app: productpage
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
`
	detailsViewerYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: "details-viewer"
  namespace: default
spec:
  selector:
    matchLabels:
      app: details
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
        methods: ["GET"]
`
	reviewsViewerYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: "reviews-viewer"
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
        methods: ["GET"]
`
	ratingsViewerYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: "ratings-viewer"
  namespace: default
spec:
  selector:
    matchLabels:
      app: ratings
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-reviews"]
    to:
    - operation:
        methods: ["GET"]
`
)

// Bookinfo's page texts the task's steps show.
const (
	pageTitle           = "Simple Bookstore App"
	detailsFetchError   = "Error fetching product details"
	reviewsFetchError   = "Error fetching product reviews"
	ratingsNotAvailable = "Ratings service is currently unavailable"
	rbacDeniedBody      = "RBAC: access denied"
)

// TestAuthorizationHTTP follows Istio's HTTP authorization task on the
// local Bookinfo mesh, applying the task's policies with loomctl and
// checking each page the task describes through the ingress gateway.
func TestAuthorizationHTTP(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	m := startDemo(t, authzSubnet)
	anon := newClient(t)
	dir := t.TempDir()
	applyPolicy := func(t *testing.T, name, yaml string) {
		t.Helper()
		f := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		applyAt(t, authzLoomdAddr, f, "authorizationpolicy.security.istio.io/"+name+" ")
	}

	t.Run("before any policy", func(t *testing.T) {
		r := get(t, anon, m.pageURL)
		if r.code != 200 || !strings.Contains(r.body, pageTitle) || strings.Contains(r.body, detailsFetchError) || strings.Contains(r.body, reviewsFetchError) {
			t.Fatalf("GET /productpage: %d\n%.1500s", r.code, r.body)
		}
	})

	t.Run("allow-nothing", func(t *testing.T) {
		applyPolicy(t, "allow-nothing", allowNothingYAML)
		pollUntil(t, "the product page denied", func() bool { return get(t, anon, m.pageURL).code == 403 })
		// Every path the gateway routes reaches productpage's sidecar,
		// which denies it.
		base := strings.TrimSuffix(m.pageURL, "/productpage")
		for _, path := range []string{"/productpage", "/productpage?u=normal", "/api/v1/products", "/api/v1/products/0/reviews", "/static/tailwind/tailwind.css"} {
			for range 5 {
				if r := get(t, anon, base+path); r.code != 403 || r.body != rbacDeniedBody {
					t.Errorf("GET %s: %d %q, want 403 %q", path, r.code, r.body, rbacDeniedBody)
				}
			}
		}
		if r := postForm(t, anon, base+"/login", url.Values{"username": {"jason"}}); r.code != 403 || r.body != rbacDeniedBody {
			t.Errorf("POST /login: %d %q", r.code, r.body)
		}
	})

	t.Run("productpage-viewer", func(t *testing.T) {
		applyPolicy(t, "productpage-viewer", productpageViewerYAML)
		pollUntil(t, "the product page loading", func() bool { return get(t, anon, m.pageURL).code == 200 })
		// productpage may serve GETs, but its own calls to details and
		// reviews are still denied by allow-nothing: the page shows both
		// errors, as the task's screenshot does.
		for i := range 10 {
			r := get(t, anon, m.pageURL)
			if r.code != 200 || !strings.Contains(r.body, pageTitle) || !strings.Contains(r.body, detailsFetchError) || !strings.Contains(r.body, reviewsFetchError) {
				t.Errorf("request %d: %d, want the page with %q and %q:\n%.2000s", i+1, r.code, detailsFetchError, reviewsFetchError, r.body)
			}
		}
		// Only GET is allowed.
		base := strings.TrimSuffix(m.pageURL, "/productpage")
		if r := postForm(t, anon, base+"/login", url.Values{"username": {"jason"}}); r.code != 403 || r.body != rbacDeniedBody {
			t.Errorf("POST /login: %d %q, want 403 %q", r.code, r.body, rbacDeniedBody)
		}
	})

	t.Run("details-viewer and reviews-viewer", func(t *testing.T) {
		applyPolicy(t, "details-viewer", detailsViewerYAML)
		applyPolicy(t, "reviews-viewer", reviewsViewerYAML)
		pollUntil(t, "details and reviews on the page", func() bool {
			r := get(t, anon, m.pageURL)
			return r.code == 200 && !strings.Contains(r.body, detailsFetchError) && !strings.Contains(r.body, reviewsFetchError)
		})
		// reviews v2 and v3 call ratings, which allow-nothing still denies.
		pollUntil(t, "a page whose reviews say ratings are unavailable", func() bool {
			r := get(t, anon, m.pageURL)
			return strings.Contains(r.body, ratingsNotAvailable)
		})
	})

	t.Run("ratings-viewer", func(t *testing.T) {
		applyPolicy(t, "ratings-viewer", ratingsViewerYAML)
		pollUntil(t, "stars on the page", func() bool {
			r := get(t, anon, m.pageURL)
			return r.code == 200 && !strings.Contains(r.body, ratingsNotAvailable) && strings.Contains(r.body, "glyphicon-star")
		})
	})

	t.Run("deleting allow-nothing and the viewer restores the page", func(t *testing.T) {
		for _, name := range []string{"allow-nothing", "productpage-viewer"} {
			if stdout, stderr, code := loomctlAt(t, authzLoomdAddr, "delete", "-f", filepath.Join(dir, name+".yaml")); code != 0 {
				t.Fatalf("loomctl delete %s: exit %d\n%s%s", name, code, stdout, stderr)
			}
		}
		pollUntil(t, "the full page again", func() bool {
			r := get(t, anon, m.pageURL)
			return r.code == 200 && !strings.Contains(r.body, detailsFetchError) && !strings.Contains(r.body, reviewsFetchError)
		})
	})
}

type response struct {
	code int
	body string
}

func get(t *testing.T, c *http.Client, u string) response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return readResponse(t, resp)
}

func postForm(t *testing.T, c *http.Client, u string, v url.Values) response {
	t.Helper()
	resp, err := c.PostForm(u, v)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	return readResponse(t, resp)
}

func readResponse(t *testing.T, resp *http.Response) response {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, string(b)}
}

package bookinfo_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/samples/bookinfo"
)

// get sends GET url with headers h and returns status and body.
func get(t *testing.T, c *http.Client, rawURL string, h http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func jsonOf(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return v
}

func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func TestDetails(t *testing.T) {
	d, err := bookinfo.NewDetails(bookinfo.DetailsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, d)
	tests := []struct {
		name, path string
		wantStatus int
		want       string
	}{
		{"book", "/details/0", 200, `{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{"other id", "/details/7", 200, `{"id":7,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{"not numeric", "/details/x", 400, `{"error":"please provide numeric product ID"}`},
		{"health", "/health", 200, `{"status":"Details is healthy"}`},
		{"unknown", "/nothing", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := get(t, nil, s.URL+tt.path, nil)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tt.wantStatus, body)
			}
			if tt.want != "" {
				if d := cmp.Diff(jsonOf(t, tt.want), jsonOf(t, body)); d != "" {
					t.Errorf("body (-want +got):\n%s", d)
				}
			}
		})
	}
}

func TestRatings(t *testing.T) {
	r, err := bookinfo.NewRatings(bookinfo.RatingsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, r)
	tests := []struct {
		name, path string
		wantStatus int
		want       string
	}{
		{"book", "/ratings/0", 200, `{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}`},
		{"not numeric", "/ratings/x", 400, `{"error":"please provide numeric product ID"}`},
		{"health", "/health", 200, `{"status":"Ratings is healthy"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := get(t, nil, s.URL+tt.path, nil)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tt.wantStatus, body)
			}
			if d := cmp.Diff(jsonOf(t, tt.want), jsonOf(t, body)); d != "" {
				t.Errorf("body (-want +got):\n%s", d)
			}
		})
	}
}

// recorder is a fake downstream: it counts calls, records the headers of the
// last one and answers with its handler.
type recorder struct {
	calls  atomic.Int32
	mu     sync.Mutex // guards header
	header http.Header
	h      http.HandlerFunc
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.calls.Add(1)
	rec.mu.Lock()
	rec.header = r.Header.Clone()
	rec.mu.Unlock()
	rec.h(w, r)
}

func (rec *recorder) lastHeader() http.Header {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.header
}

func fixed(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// hang answers only once the client gives up or the test ends.
func hang(done <-chan struct{}) http.HandlerFunc {
	return func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}
}

// stopCh returns a channel closed when the test ends, before its servers
// close (cleanups run last-in first-out).
func stopCh(t *testing.T) chan struct{} {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return done
}

const ratingsBody = `{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}`

func TestReviews(t *testing.T) {
	const text1 = "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"
	const text2 = "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."
	review := func(r1, r2 string) string {
		return `{"id":"0","podname":"reviews-x-abcde","clustername":"null","reviews":[` +
			`{"reviewer":"Reviewer1","text":"` + text1 + `"` + r1 + `},` +
			`{"reviewer":"Reviewer2","text":"` + text2 + `"` + r2 + `}]}`
	}
	unavailable := `,"rating":{"error":"Ratings service is currently unavailable"}`
	tests := []struct {
		name         string
		version      string
		ratings      func(done <-chan struct{}) http.HandlerFunc
		want         string
		wantRatingsN int32
	}{
		{"v1 no ratings", "v1", func(<-chan struct{}) http.HandlerFunc { return fixed(200, ratingsBody) }, review("", ""), 0},
		{"v2 black", "v2", func(<-chan struct{}) http.HandlerFunc { return fixed(200, ratingsBody) },
			review(`,"rating":{"stars":5,"color":"black"}`, `,"rating":{"stars":4,"color":"black"}`), 1},
		{"v3 red", "v3", func(<-chan struct{}) http.HandlerFunc { return fixed(200, ratingsBody) },
			review(`,"rating":{"stars":5,"color":"red"}`, `,"rating":{"stars":4,"color":"red"}`), 1},
		{"v2 ratings 500", "v2", func(<-chan struct{}) http.HandlerFunc { return fixed(500, `{"error":"x"}`) }, review(unavailable, unavailable), 1},
		{"v3 ratings timeout", "v3", hang, review(unavailable, unavailable), 1},
		{"v2 one reviewer missing", "v2", func(<-chan struct{}) http.HandlerFunc { return fixed(200, `{"id":0,"ratings":{"Reviewer2":1}}`) },
			review(unavailable, `,"rating":{"stars":1,"color":"black"}`), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{h: tt.ratings(stopCh(t))}
			rs := serve(t, rec)
			rv, err := bookinfo.NewReviews(bookinfo.ReviewsOptions{
				Version: tt.version, Instance: "reviews-x-abcde", RatingsURL: rs.URL, RatingsTimeout: 100 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			s := serve(t, rv)
			status, body, _ := get(t, nil, s.URL+"/reviews/0", nil)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			if d := cmp.Diff(jsonOf(t, tt.want), jsonOf(t, body)); d != "" {
				t.Errorf("body (-want +got):\n%s", d)
			}
			if got := rec.calls.Load(); got != tt.wantRatingsN {
				t.Errorf("ratings called %d times, want %d", got, tt.wantRatingsN)
			}
		})
	}
}

func TestReviewsOptions(t *testing.T) {
	if _, err := bookinfo.NewReviews(bookinfo.ReviewsOptions{Version: "v4"}); err == nil {
		t.Error("NewReviews(v4) succeeded, want error")
	}
	rv, err := bookinfo.NewReviews(bookinfo.ReviewsOptions{Version: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := rv.Instance(); !strings.HasPrefix(got, "reviews-v2-") || len(got) != len("reviews-v2-")+5 {
		t.Errorf("default instance %q, want reviews-v2-xxxxx", got)
	}
	s := serve(t, rv)
	if status, body, _ := get(t, nil, s.URL+"/health", nil); status != 200 || body != `{"status":"Reviews is healthy"}` {
		t.Errorf("health: %d %s", status, body)
	}
}

// mesh is an in-process Bookinfo: every service on its own httptest server,
// productpage wired to them directly (no proxy).
type mesh struct {
	productpage *httptest.Server
	details     *recorder
	reviews     *recorder
	ratings     *recorder
}

func newMesh(t *testing.T, version string, opts bookinfo.ProductPageOptions) *mesh {
	t.Helper()
	m := &mesh{}
	r, err := bookinfo.NewRatings(bookinfo.RatingsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.ratings = &recorder{h: r.ServeHTTP}
	ratingsSrv := serve(t, m.ratings)
	rv, err := bookinfo.NewReviews(bookinfo.ReviewsOptions{Version: version, Instance: "reviews-" + version + "-test1", RatingsURL: ratingsSrv.URL})
	if err != nil {
		t.Fatal(err)
	}
	m.reviews = &recorder{h: rv.ServeHTTP}
	d, err := bookinfo.NewDetails(bookinfo.DetailsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.details = &recorder{h: d.ServeHTTP}
	if opts.DetailsURL == "" {
		opts.DetailsURL = serve(t, m.details).URL
	}
	if opts.ReviewsURL == "" {
		opts.ReviewsURL = serve(t, m.reviews).URL
	}
	if opts.RatingsURL == "" {
		opts.RatingsURL = ratingsSrv.URL
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	pp, err := bookinfo.NewProductPage(opts)
	if err != nil {
		t.Fatal(err)
	}
	m.productpage = serve(t, pp)
	return m
}

func TestProductPageStars(t *testing.T) {
	tests := []struct {
		version             string
		wantFont            string
		wantFull, wantEmpty int
	}{
		{"v1", "", 0, 0},
		{"v2", `<font color="black">`, 9, 1},
		{"v3", `<font color="red">`, 9, 1},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			m := newMesh(t, tt.version, bookinfo.ProductPageOptions{})
			status, body, h := get(t, nil, m.productpage.URL+"/productpage", nil)
			if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
				t.Fatalf("status %d, content-type %q", status, h.Get("Content-Type"))
			}
			for _, want := range []string{
				"<title>Simple Bookstore App</title>",
				"The Comedy of Errors",
				"<b>William Shakespeare's</b>",
				"PublisherA", "123-1234567890", "paperback",
				"An extremely entertaining play by Shakespeare.",
				"Reviewer2",
				"Reviews served by: reviews-" + tt.version + "-test1",
				tt.wantFont,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			if got := strings.Count(body, `"glyphicon glyphicon-star"`); got != tt.wantFull {
				t.Errorf("%d full stars, want %d", got, tt.wantFull)
			}
			if got := strings.Count(body, `"glyphicon glyphicon-star-empty"`); got != tt.wantEmpty {
				t.Errorf("%d empty stars, want %d", got, tt.wantEmpty)
			}
			if tt.version == "v1" && strings.Contains(body, "<font color") {
				t.Error("v1 page has colored stars")
			}
			for _, bad := range []string{"Error fetching", "unavailable", "Welcome"} {
				if strings.Contains(body, bad) {
					t.Errorf("page has %q", bad)
				}
			}
		})
	}
}

func TestProductPageLoginLogout(t *testing.T) {
	m := newMesh(t, "v2", bookinfo.ProductPageOptions{})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := noRedirect.PostForm(m.productpage.URL+"/login", url.Values{"username": {"jason"}, "passwd": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/productpage" {
		t.Fatalf("login: %d Location %q, want 302 /productpage", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "session" {
			session = c
		}
	}
	if session == nil || session.Value == "" {
		t.Fatalf("login set no session cookie: %v", resp.Header["Set-Cookie"])
	}

	// Logged in: the page greets the user, and end-user reaches details,
	// reviews and, through reviews, ratings.
	_, body, _ := get(t, nil, m.productpage.URL+"/productpage", http.Header{"Cookie": {session.String()}})
	if !strings.Contains(body, "Welcome jason") {
		t.Error("logged-in page lacks \"Welcome jason\"")
	}
	for name, rec := range map[string]*recorder{"details": m.details, "reviews": m.reviews, "ratings": m.ratings} {
		if got := rec.lastHeader().Get("end-user"); got != "jason" {
			t.Errorf("%s got end-user %q, want jason", name, got)
		}
	}

	resp, err = noRedirect.Get(m.productpage.URL + "/logout")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/productpage" {
		t.Fatalf("logout: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || (c.Name == "session" && c.MaxAge < 0)
	}
	if !cleared {
		t.Errorf("logout did not clear the session: %v", resp.Header["Set-Cookie"])
	}

	// Logged out (no cookie): no greeting, no end-user.
	_, body, _ = get(t, nil, m.productpage.URL+"/productpage", nil)
	if strings.Contains(body, "Welcome") || !strings.Contains(body, `name="username"`) {
		t.Error("logged-out page greets a user or lacks the sign-in form")
	}
	if got := m.reviews.lastHeader().Get("end-user"); got != "" {
		t.Errorf("reviews got end-user %q after logout", got)
	}
}

// TestHeaderPropagation sends every propagated header plus one that must not
// travel, and checks what each downstream received.
func TestHeaderPropagation(t *testing.T) {
	m := newMesh(t, "v3", bookinfo.ProductPageOptions{})
	in := http.Header{"X-Not-Propagated": {"secret"}}
	want := http.Header{}
	for _, name := range []string{
		"x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
		"x-b3-sampled", "x-b3-flags", "b3", "x-ot-span-context", "end-user", "user-agent",
	} {
		k := http.CanonicalHeaderKey(name)
		in[k] = []string{"value-of-" + name}
		want[k] = []string{"value-of-" + name}
	}
	status, body, _ := get(t, nil, m.productpage.URL+"/productpage", in)
	if status != 200 || strings.Contains(body, "unavailable") {
		t.Fatalf("page failed: %d", status)
	}
	for name, rec := range map[string]*recorder{"details": m.details, "reviews": m.reviews, "ratings": m.ratings} {
		got := http.Header{}
		for k, vs := range rec.lastHeader() {
			if k == "X-Not-Propagated" || want[k] != nil {
				got[k] = vs
			}
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s headers (-want +got):\n%s", name, d)
		}
	}

	// A session user overrides an incoming end-user.
	in.Set("Cookie", "session=amFzb24") // base64url("jason")
	get(t, nil, m.productpage.URL+"/productpage", in)
	if got := m.ratings.lastHeader().Get("end-user"); got != "jason" {
		t.Errorf("ratings got end-user %q, want jason (from the session)", got)
	}
}

func TestProductPageBackendFailures(t *testing.T) {
	tests := []struct {
		name        string
		reviews     func(calls *atomic.Int32, done <-chan struct{}) http.HandlerFunc
		details     http.HandlerFunc // nil: the real details
		wantReviews int32
		wantText    []string
		wantNot     []string
	}{
		{
			name:        "reviews 503 twice",
			reviews:     func(*atomic.Int32, <-chan struct{}) http.HandlerFunc { return fixed(503, "no healthy upstream") },
			wantReviews: 2,
			wantText:    []string{"Error fetching product reviews", "Sorry, product reviews are currently unavailable for this book.", "PublisherA"},
			wantNot:     []string{"Reviews served by"},
		},
		{
			name:        "reviews times out twice",
			reviews:     func(_ *atomic.Int32, done <-chan struct{}) http.HandlerFunc { return hang(done) },
			wantReviews: 2,
			wantText:    []string{"Sorry, product reviews are currently unavailable for this book."},
		},
		{
			name: "reviews fails once then succeeds",
			reviews: func(calls *atomic.Int32, _ <-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					if calls.Load() == 1 {
						fixed(500, "")(w, r)
						return
					}
					fixed(200, `{"id":"0","podname":"reviews-v1-retry","clustername":"null","reviews":[{"reviewer":"Reviewer1","text":"ok"}]}`)(w, r)
				}
			},
			wantReviews: 2,
			wantText:    []string{"Reviews served by: reviews-v1-retry"},
			wantNot:     []string{"unavailable"},
		},
		{
			name:        "details fails, no retry",
			reviews:     nil,
			details:     fixed(555, ""),
			wantReviews: 1,
			wantText:    []string{"Error fetching product details", "Sorry, product details are currently unavailable for this book.", "Reviews served by: reviews-v1-test1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := stopCh(t)
			var opts bookinfo.ProductPageOptions
			opts.Timeout = 100 * time.Millisecond
			var fakeReviews *recorder
			if tt.reviews != nil {
				fakeReviews = &recorder{}
				fakeReviews.h = tt.reviews(&fakeReviews.calls, done)
				opts.ReviewsURL = serve(t, fakeReviews).URL
			}
			var fakeDetails *recorder
			if tt.details != nil {
				fakeDetails = &recorder{h: tt.details}
				opts.DetailsURL = serve(t, fakeDetails).URL
			}
			m := newMesh(t, "v1", opts)
			status, body, _ := get(t, nil, m.productpage.URL+"/productpage", nil)
			if status != 200 {
				t.Fatalf("status %d", status)
			}
			for _, want := range tt.wantText {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			for _, bad := range tt.wantNot {
				if strings.Contains(body, bad) {
					t.Errorf("page has %q", bad)
				}
			}
			rev := m.reviews
			if fakeReviews != nil {
				rev = fakeReviews
			}
			if got := rev.calls.Load(); got != tt.wantReviews {
				t.Errorf("reviews called %d times, want %d", got, tt.wantReviews)
			}
			if fakeDetails != nil && fakeDetails.calls.Load() != 1 {
				t.Errorf("details called %d times, want 1", fakeDetails.calls.Load())
			}
		})
	}
}

func TestProductPageAPIAndStatic(t *testing.T) {
	m := newMesh(t, "v2", bookinfo.ProductPageOptions{})
	tests := []struct {
		path       string
		wantStatus int
		wantJSON   string // compared when set
		wantText   string // contained when set
	}{
		{path: "/api/v1/products", wantStatus: 200, wantJSON: `[{"id":0,"title":"The Comedy of Errors","descriptionHtml":"<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play."}]`},
		{path: "/api/v1/products/0", wantStatus: 200, wantText: `"publisher":"PublisherA"`},
		{path: "/api/v1/products/0/reviews", wantStatus: 200, wantText: `"podname":"reviews-v2-test1"`},
		{path: "/api/v1/products/0/ratings", wantStatus: 200, wantJSON: ratingsBody},
		{path: "/api/v1/products/x/ratings", wantStatus: 400},
		{path: "/health", wantStatus: 200, wantText: "Product page is healthy"},
		{path: "/static/css/bookinfo.css", wantStatus: 200, wantText: ".glyphicon-star"},
		{path: "/", wantStatus: 200, wantText: "Simple Bookstore App"},
		{path: "/nothing", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, body, _ := get(t, nil, m.productpage.URL+tt.path, nil)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tt.wantStatus, body)
			}
			if tt.wantJSON != "" {
				if d := cmp.Diff(jsonOf(t, tt.wantJSON), jsonOf(t, body)); d != "" {
					t.Errorf("body (-want +got):\n%s", d)
				}
			}
			if !strings.Contains(body, tt.wantText) {
				t.Errorf("body lacks %q: %s", tt.wantText, body)
			}
		})
	}

	// Ratings down: the API says so with Istio's text and the backend status.
	down := serve(t, fixed(503, ""))
	m2 := newMesh(t, "v1", bookinfo.ProductPageOptions{Timeout: 100 * time.Millisecond, RatingsURL: down.URL})
	status, body, _ := get(t, nil, m2.productpage.URL+"/api/v1/products/0/ratings", nil)
	if status != 503 || !strings.Contains(body, "Sorry, product ratings are currently unavailable for this book.") {
		t.Errorf("ratings down: %d %s", status, body)
	}
}

// TestClientUsesProxy checks that NewClient sends requests for plain service
// names to the proxy named by HTTP_PROXY, as absolute-form requests. Go reads
// the proxy environment once per process, so the check runs in a child
// process (this test binary) started with HTTP_PROXY set.
func TestClientUsesProxy(t *testing.T) {
	if os.Getenv("BOOKINFO_PROXY_CHILD") == "1" {
		status, body, _ := get(t, bookinfo.NewClient(), "http://ratings:9080/ratings/0", nil)
		if status != 200 || body != "via proxy: http://ratings:9080/ratings/0 host=ratings:9080" {
			t.Fatalf("status %d body %q", status, body)
		}
		return
	}
	proxy := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "via proxy: "+r.URL.String()+" host="+r.Host)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestClientUsesProxy$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BOOKINFO_PROXY_CHILD=1", "HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "PASS") {
		t.Fatalf("child did not pass:\n%s", out)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	d, err := bookinfo.NewDetails(bookinfo.DetailsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- bookinfo.Serve(ctx, ln, d, nil) }()
	status, _, _ := get(t, nil, "http://"+ln.Addr().String()+"/health", nil)
	if status != 200 {
		t.Fatalf("health %d", status)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/health"); err == nil {
		t.Error("server still answers after Serve returned")
	}
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

package bookinfo

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The reviews texts of Istio's reviews service.
const (
	reviewText1 = "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"
	reviewText2 = "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."

	// RatingsUnavailable is the error a review carries in place of its
	// rating when reviews v2/v3 could not get ratings.
	RatingsUnavailable = "Ratings service is currently unavailable"
)

// ReviewsOptions configures the reviews service.
type ReviewsOptions struct {
	// Version is "v1" (no ratings), "v2" (black stars) or "v3" (red stars).
	// Empty means v1.
	Version string
	// Instance is returned as "podname" in the JSON, and shown by
	// productpage as "Reviews served by: ...". Empty means
	// DefaultInstance("reviews", Version).
	Instance string
	// ClusterName is returned as "clustername". Empty means "null", what
	// Istio's reviews prints when CLUSTER_NAME is unset.
	ClusterName string
	// RatingsURL is the base URL of the ratings service; reviews calls
	// RatingsURL + "/ratings/{id}". Empty means "http://ratings:9080".
	RatingsURL string
	// RatingsTimeout bounds each call to ratings. Zero means Istio's
	// hard-coded values: 10s for v2 and 2.5s for v3.
	RatingsTimeout time.Duration
	// Client makes the calls to ratings. Nil means NewClient().
	Client *http.Client
	// Logger receives a Debug line per request and a Warn per failed ratings
	// call. Nil discards.
	Logger *slog.Logger
}

// Reviews is the reviews service: GET /reviews/{id} returns two reviews and,
// for v2 and v3, the ratings fetched from the ratings service with the
// incoming PropagatedHeaders; GET /health its health. Safe for concurrent
// use; each request blocks for at most the ratings timeout.
type Reviews struct {
	opts    ReviewsOptions
	ratings bool
	color   string
	log     *slog.Logger
	h       http.Handler
}

var _ http.Handler = (*Reviews)(nil)

// ProductReviews is the JSON body of GET /reviews/{id}.
type ProductReviews struct {
	ID          string   `json:"id"`
	PodName     string   `json:"podname"`
	ClusterName string   `json:"clustername"`
	Reviews     []Review `json:"reviews"`
}

// Review is one review. Rating is nil for reviews v1.
type Review struct {
	Reviewer string  `json:"reviewer"`
	Text     string  `json:"text"`
	Rating   *Rating `json:"rating,omitempty"`
}

// Rating is the rating of a review: Stars (1-5) and Color ("black" for v2,
// "red" for v3), or Error when ratings were unavailable.
type Rating struct {
	Stars int    `json:"stars,omitempty"`
	Color string `json:"color,omitempty"`
	Error string `json:"error,omitempty"`
}

// NewReviews returns the reviews service. It fails on an unknown Version.
func NewReviews(opts ReviewsOptions) (*Reviews, error) {
	if opts.Version == "" {
		opts.Version = "v1"
	}
	s := &Reviews{opts: opts}
	switch opts.Version {
	case "v1":
	case "v2":
		s.ratings, s.color = true, "black"
		if opts.RatingsTimeout == 0 {
			s.opts.RatingsTimeout = 10 * time.Second
		}
	case "v3":
		s.ratings, s.color = true, "red"
		if opts.RatingsTimeout == 0 {
			s.opts.RatingsTimeout = 2500 * time.Millisecond
		}
	default:
		return nil, fmt.Errorf("reviews version %q: must be v1, v2 or v3", opts.Version)
	}
	if s.opts.Instance == "" {
		s.opts.Instance = DefaultInstance("reviews", opts.Version)
	}
	if s.opts.ClusterName == "" {
		s.opts.ClusterName = "null"
	}
	if s.opts.RatingsURL == "" {
		s.opts.RatingsURL = "http://ratings:9080"
	}
	s.opts.RatingsURL = strings.TrimSuffix(s.opts.RatingsURL, "/")
	if s.opts.Client == nil {
		s.opts.Client = NewClient()
	}
	s.log = orDiscard(opts.Logger).With("component", "reviews", "version", opts.Version)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, healthBody{Status: "Reviews is healthy"})
	})
	mux.HandleFunc("GET /reviews/{id}", s.serveReviews)
	s.h = logRequests(s.log, mux)
	return s, nil
}

// Instance returns the instance name the service reports as "podname".
func (s *Reviews) Instance() string { return s.opts.Instance }

// ServeHTTP implements http.Handler.
func (s *Reviews) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

func (s *Reviews) serveReviews(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "please provide numeric product ID"})
		return
	}
	out := ProductReviews{
		ID:          strconv.Itoa(id),
		PodName:     s.opts.Instance,
		ClusterName: s.opts.ClusterName,
		Reviews: []Review{
			{Reviewer: "Reviewer1", Text: reviewText1},
			{Reviewer: "Reviewer2", Text: reviewText2},
		},
	}
	if s.ratings {
		stars := s.fetchRatings(r, id)
		for i := range out.Reviews {
			if n, ok := stars[out.Reviews[i].Reviewer]; ok {
				out.Reviews[i].Rating = &Rating{Stars: n, Color: s.color}
			} else {
				out.Reviews[i].Rating = &Rating{Error: RatingsUnavailable}
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// fetchRatings returns the stars per reviewer, or nil when ratings failed.
func (s *Reviews) fetchRatings(r *http.Request, id int) map[string]int {
	url := s.opts.RatingsURL + "/ratings/" + strconv.Itoa(id)
	var body ProductRatings
	if _, err := getJSON(r.Context(), s.opts.Client, url, forwardHeaders(r.Header), s.opts.RatingsTimeout, &body); err != nil {
		s.log.Warn("ratings unavailable", "error", err)
		return nil
	}
	return body.Ratings
}

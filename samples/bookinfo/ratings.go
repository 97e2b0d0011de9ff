package bookinfo

import (
	"log/slog"
	"net/http"
	"strconv"
)

// RatingsOptions configures the ratings service.
type RatingsOptions struct {
	// Logger receives a Debug line per request. Nil discards.
	Logger *slog.Logger
}

// Ratings is the ratings service (Istio's ratings v1): GET /ratings/{id}
// returns fixed star ratings per reviewer, GET /health its health. It makes no
// outgoing calls. Safe for concurrent use.
type Ratings struct {
	h http.Handler
}

var _ http.Handler = (*Ratings)(nil)

// ProductRatings is the JSON body of GET /ratings/{id}:
// {"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}.
type ProductRatings struct {
	ID      int            `json:"id"`
	Ratings map[string]int `json:"ratings"`
}

// NewRatings returns the ratings service.
func NewRatings(opts RatingsOptions) (*Ratings, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, healthBody{Status: "Ratings is healthy"})
	})
	mux.HandleFunc("GET /ratings/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "please provide numeric product ID"})
			return
		}
		writeJSON(w, http.StatusOK, ProductRatings{ID: id, Ratings: map[string]int{"Reviewer1": 5, "Reviewer2": 4}})
	})
	return &Ratings{h: logRequests(orDiscard(opts.Logger).With("component", "ratings"), mux)}, nil
}

// ServeHTTP implements http.Handler.
func (s *Ratings) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

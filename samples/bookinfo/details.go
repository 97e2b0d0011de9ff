package bookinfo

import (
	"log/slog"
	"net/http"
	"strconv"
)

// DetailsOptions configures the details service.
type DetailsOptions struct {
	// Logger receives a Debug line per request. Nil discards.
	Logger *slog.Logger
}

// Details is the details service (Istio's details v1): GET /details/{id}
// returns the book's details as JSON, GET /health its health. It makes no
// outgoing calls. Safe for concurrent use.
type Details struct {
	h http.Handler
}

var _ http.Handler = (*Details)(nil)

// BookDetails is the JSON body of GET /details/{id}.
type BookDetails struct {
	ID        int    `json:"id"`
	Author    string `json:"author"`
	Year      int    `json:"year"`
	Type      string `json:"type"`
	Pages     int    `json:"pages"`
	Publisher string `json:"publisher"`
	Language  string `json:"language"`
	ISBN10    string `json:"ISBN-10"`
	ISBN13    string `json:"ISBN-13"`
}

// NewDetails returns the details service.
func NewDetails(opts DetailsOptions) (*Details, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, healthBody{Status: "Details is healthy"})
	})
	mux.HandleFunc("GET /details/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "please provide numeric product ID"})
			return
		}
		writeJSON(w, http.StatusOK, bookDetails(id))
	})
	return &Details{h: logRequests(orDiscard(opts.Logger).With("component", "details"), mux)}, nil
}

// ServeHTTP implements http.Handler.
func (d *Details) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.h.ServeHTTP(w, r) }

// bookDetails is the fixed answer of Istio's details v1 for any id.
func bookDetails(id int) BookDetails {
	return BookDetails{
		ID:        id,
		Author:    "William Shakespeare",
		Year:      1595,
		Type:      "paperback",
		Pages:     200,
		Publisher: "PublisherA",
		Language:  "English",
		ISBN10:    "1234567890",
		ISBN13:    "123-1234567890",
	}
}

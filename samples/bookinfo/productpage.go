package bookinfo

import (
	"context"
	"embed"
	"encoding/base64"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The error texts of Istio's productpage.
const (
	DetailsUnavailable    = "Sorry, product details are currently unavailable for this book."
	ReviewsUnavailable    = "Sorry, product reviews are currently unavailable for this book."
	RatingsAPIUnavailable = "Sorry, product ratings are currently unavailable for this book."
)

// SessionCookie is the name of the cookie productpage sets on POST /login.
// Its value is the user name, base64url-encoded. As in the sample it is not
// signed: anyone can be anyone.
const SessionCookie = "session"

//go:embed productpage.html index.html
var templatesFS embed.FS

//go:embed static
var staticFS embed.FS

// ProductPageOptions configures the productpage service.
type ProductPageOptions struct {
	// DetailsURL, ReviewsURL and RatingsURL are the base URLs of the
	// backends; productpage calls DetailsURL + "/details/0" and so on. Empty
	// means "http://details:9080", "http://reviews:9080" and
	// "http://ratings:9080".
	DetailsURL, ReviewsURL, RatingsURL string
	// Timeout bounds each call to a backend. Zero means 3s, Istio's value.
	Timeout time.Duration
	// ReviewsAttempts is how many times productpage tries reviews before it
	// gives up. Zero means 2, Istio's deliberate "retry once".
	ReviewsAttempts int
	// Client makes the calls to the backends. Nil means NewClient().
	Client *http.Client
	// Logger receives a Debug line per request and a Warn per failed backend
	// call. Nil discards.
	Logger *slog.Logger
}

// ProductPage is the productpage service. Routes, as Istio's:
//
//	GET  /                               index page
//	GET  /productpage                    the book page (details + reviews)
//	POST /login                          form field username: sets the session, redirects to /productpage
//	GET  /logout                         clears the session, redirects to /productpage
//	GET  /static/...                     CSS
//	GET  /api/v1/products                the product list (JSON)
//	GET  /api/v1/products/{id}           details of a product (JSON, from details)
//	GET  /api/v1/products/{id}/reviews   reviews (JSON, from reviews)
//	GET  /api/v1/products/{id}/ratings   ratings (JSON, from ratings)
//	GET  /health                         "Product page is healthy"
//
// Calls to backends carry the incoming PropagatedHeaders, and end-user: USER
// when the session names a user. Safe for concurrent use.
type ProductPage struct {
	opts  ProductPageOptions
	log   *slog.Logger
	page  *template.Template
	index *template.Template
	h     http.Handler
}

var _ http.Handler = (*ProductPage)(nil)

// Product is one entry of GET /api/v1/products.
type Product struct {
	ID              int           `json:"id"`
	Title           string        `json:"title"`
	DescriptionHTML template.HTML `json:"descriptionHtml"`
}

// Products is the fixed product list of Istio's productpage.
var Products = []Product{{
	ID:    0,
	Title: "The Comedy of Errors",
	DescriptionHTML: `<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: ` +
		`The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his ` +
		`most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in ` +
		`addition to puns and word play.`,
}}

// NewProductPage returns the productpage service.
func NewProductPage(opts ProductPageOptions) (*ProductPage, error) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
		*s = strings.TrimSuffix(*s, "/")
	}
	def(&opts.DetailsURL, "http://details:9080")
	def(&opts.ReviewsURL, "http://reviews:9080")
	def(&opts.RatingsURL, "http://ratings:9080")
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Second
	}
	if opts.ReviewsAttempts == 0 {
		opts.ReviewsAttempts = 2
	}
	if opts.Client == nil {
		opts.Client = NewClient()
	}
	funcs := template.FuncMap{
		"stars":      func(n int) []struct{} { return make([]struct{}, max(0, min(n, 5))) },
		"emptyStars": func(n int) int { return 5 - max(0, min(n, 5)) },
	}
	page, err := template.New("productpage.html").Funcs(funcs).ParseFS(templatesFS, "productpage.html")
	if err != nil {
		return nil, err
	}
	index, err := template.ParseFS(templatesFS, "index.html")
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	p := &ProductPage{opts: opts, log: orDiscard(opts.Logger).With("component", "productpage"), page: page, index: index}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.serveIndex)
	mux.HandleFunc("GET /index.html", p.serveIndex)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("Product page is healthy"))
	})
	mux.HandleFunc("GET /productpage", p.serveProductPage)
	mux.HandleFunc("POST /login", p.serveLogin)
	mux.HandleFunc("GET /logout", p.serveLogout)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /api/v1/products", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, Products)
	})
	mux.HandleFunc("GET /api/v1/products/{id}", p.serveAPI(func(ctx context.Context, id int, h http.Header) (int, any) {
		return p.details(ctx, id, h)
	}))
	mux.HandleFunc("GET /api/v1/products/{id}/reviews", p.serveAPI(func(ctx context.Context, id int, h http.Header) (int, any) {
		return p.reviews(ctx, id, h)
	}))
	mux.HandleFunc("GET /api/v1/products/{id}/ratings", p.serveAPI(p.ratings))
	p.h = logRequests(p.log, mux)
	return p, nil
}

// ServeHTTP implements http.Handler.
func (p *ProductPage) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.h.ServeHTTP(w, r) }

func (p *ProductPage) serveIndex(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := p.index.Execute(w, nil); err != nil {
		p.log.Warn("render index", "error", err)
	}
}

// pageData is what productpage.html renders.
type pageData struct {
	User         string
	Product      Product
	Details      BookDetails
	DetailsError string
	Reviews      ProductReviews
	ReviewsError string
}

func (p *ProductPage) serveProductPage(w http.ResponseWriter, r *http.Request) {
	const productID = 0
	user := sessionUser(r)
	h := p.outgoingHeaders(r)
	d := pageData{User: user, Product: Products[productID]}
	if status, v := p.details(r.Context(), productID, h); status == http.StatusOK {
		d.Details = v.(BookDetails)
	} else {
		d.DetailsError = v.(errorBody).Error
	}
	if status, v := p.reviews(r.Context(), productID, h); status == http.StatusOK {
		d.Reviews = v.(ProductReviews)
	} else {
		d.ReviewsError = v.(errorBody).Error
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := p.page.Execute(w, d); err != nil {
		p.log.Warn("render productpage", "error", err)
	}
}

func (p *ProductPage) serveLogin(w http.ResponseWriter, r *http.Request) {
	user := r.FormValue("username")
	if user == "" {
		clearSession(w)
	} else {
		http.SetCookie(w, &http.Cookie{
			Name:     SessionCookie,
			Value:    base64.RawURLEncoding.EncodeToString([]byte(user)),
			Path:     "/",
			HttpOnly: true,
			SameSite: http.SameSiteLaxMode,
		})
	}
	http.Redirect(w, r, "/productpage", http.StatusFound)
}

func (p *ProductPage) serveLogout(w http.ResponseWriter, r *http.Request) {
	clearSession(w)
	http.Redirect(w, r, "/productpage", http.StatusFound)
}

func clearSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true})
}

// sessionUser returns the user named by the session cookie, or "".
func sessionUser(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return ""
	}
	return string(b)
}

// outgoingHeaders returns the headers for calls to backends: the incoming
// PropagatedHeaders, with end-user set from the session when logged in.
func (p *ProductPage) outgoingHeaders(r *http.Request) http.Header {
	h := forwardHeaders(r.Header)
	if user := sessionUser(r); user != "" {
		h.Set("end-user", user)
	}
	return h
}

func (p *ProductPage) serveAPI(fetch func(ctx context.Context, id int, h http.Header) (int, any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "please provide numeric product ID"})
			return
		}
		status, v := fetch(r.Context(), id, p.outgoingHeaders(r))
		writeJSON(w, status, v)
	}
}

// details fetches the book details once. It returns 200 and a BookDetails,
// or the backend status (500 when there was none) and an errorBody.
func (p *ProductPage) details(ctx context.Context, id int, h http.Header) (int, any) {
	var out BookDetails
	status, err := getJSON(ctx, p.opts.Client, p.opts.DetailsURL+"/details/"+strconv.Itoa(id), h, p.opts.Timeout, &out)
	if err == nil {
		return http.StatusOK, out
	}
	p.log.Warn("details unavailable", "error", err)
	return failStatus(status), errorBody{Error: DetailsUnavailable}
}

// reviews fetches the reviews, trying ReviewsAttempts times (Istio's
// productpage retries reviews once, on purpose, for the fault-injection
// task). It returns 200 and a ProductReviews, or the last backend status
// (500 when there was none) and an errorBody.
func (p *ProductPage) reviews(ctx context.Context, id int, h http.Header) (int, any) {
	var (
		status int
		err    error
	)
	for range p.opts.ReviewsAttempts {
		var out ProductReviews
		status, err = getJSON(ctx, p.opts.Client, p.opts.ReviewsURL+"/reviews/"+strconv.Itoa(id), h, p.opts.Timeout, &out)
		if err == nil {
			return http.StatusOK, out
		}
		p.log.Warn("reviews unavailable", "error", err)
		if ctx.Err() != nil {
			break
		}
	}
	return failStatus(status), errorBody{Error: ReviewsUnavailable}
}

// ratings fetches the ratings once, for GET /api/v1/products/{id}/ratings.
func (p *ProductPage) ratings(ctx context.Context, id int, h http.Header) (int, any) {
	var out ProductRatings
	status, err := getJSON(ctx, p.opts.Client, p.opts.RatingsURL+"/ratings/"+strconv.Itoa(id), h, p.opts.Timeout, &out)
	if err == nil {
		return http.StatusOK, out
	}
	p.log.Warn("ratings unavailable", "error", err)
	return failStatus(status), errorBody{Error: RatingsAPIUnavailable}
}

// failStatus maps a failed call's status to the one productpage reports:
// the backend's status, or 500 when no response arrived or it was a 200
// that could not be decoded.
func failStatus(status int) int {
	if status == 0 || status == http.StatusOK {
		return http.StatusInternalServerError
	}
	return status
}

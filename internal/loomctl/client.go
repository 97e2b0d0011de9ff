package loomctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultAddr is loomd's monitoring and API address when neither --loomd nor
// LOOMD_ADDR says otherwise (Istio's control-plane monitoring port 15014).
const DefaultAddr = "127.0.0.1:15014"

// Client talks to loomd's HTTP API. It is safe for concurrent use.
type Client struct {
	addr string
	http *http.Client
}

// NewClient returns a client for loomd at addr ("HOST:PORT"). A nil hc gets
// a client with a 15 s timeout that never goes through an HTTP proxy.
func NewClient(addr string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{
			Timeout:   15 * time.Second,
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		}
	}
	return &Client{addr: addr, http: hc}
}

// Addr returns the loomd address the client talks to.
func (c *Client) Addr() string { return c.addr }

// UnreachableError is returned when loomd cannot be reached at all.
type UnreachableError struct {
	Addr string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach loomd at %s (%v)\n"+
		"start a local mesh with `loomctl demo` (or `loomd --config-dir DIR`), "+
		"or point at a running loomd with --loomd HOST:PORT or LOOMD_ADDR", e.Addr, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// APIError is a non-2xx answer from loomd. Lines are the body's non-empty
// lines; for 400, 404 and 409 each is "FILE:LINE: KIND NS/NAME: FIELD: MSG".
type APIError struct {
	StatusCode int
	Lines      []string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("loomd answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), strings.Join(e.Lines, "; "))
}

// Result is what loomd did with one resource of an apply or delete.
type Result struct {
	Key    string `json:"key"`    // "VirtualService default/reviews"
	Action string `json:"action"` // created, configured, unchanged or deleted
}

type resultsBody struct {
	Results []Result `json:"results"`
}

// Apply posts a file's bytes to /api/v1/apply; source names it in errors.
// It returns *APIError when loomd rejects the config (nothing is applied)
// and *UnreachableError when loomd does not answer.
func (c *Client) Apply(ctx context.Context, source string, data []byte) ([]Result, error) {
	return c.postConfig(ctx, "/api/v1/apply", source, data)
}

// Delete posts a file's bytes to /api/v1/delete; errors as for Apply.
func (c *Client) Delete(ctx context.Context, source string, data []byte) ([]Result, error) {
	return c.postConfig(ctx, "/api/v1/delete", source, data)
}

// Validate posts a file's bytes to /api/v1/validate: loomd checks them
// against the serving config without applying them. Errors as for Apply.
func (c *Client) Validate(ctx context.Context, source string, data []byte) ([]Result, error) {
	return c.postConfig(ctx, "/api/v1/validate", source, data)
}

func (c *Client) postConfig(ctx context.Context, path, source string, data []byte) ([]Result, error) {
	u := c.url(path) + "?source=" + url.QueryEscape(source)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("post %s: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/yaml")
	body, err := c.do(req)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var rb resultsBody
	if err := json.Unmarshal(body, &rb); err != nil {
		return nil, fmt.Errorf("post %s: decode answer: %w", path, err)
	}
	return rb.Results, nil
}

// TypeStatus is the xDS state of one resource type on one proxy stream, as
// loomd's /debug/syncz reports it.
type TypeStatus struct {
	TypeURL   string `json:"type_url"`
	Short     string `json:"short"` // CDS, EDS, LDS or RDS
	Sent      string `json:"sent"`
	Acked     string `json:"acked"`
	Nacked    string `json:"nacked"`
	NackError string `json:"nack_error"`
}

// SyncStatus is one connected proxy in /debug/syncz.
type SyncStatus struct {
	ID      string       `json:"id"` // Istio node ID
	Cluster string       `json:"cluster,omitempty"`
	Version string       `json:"version,omitempty"` // proxy version, when loomd knows it
	Types   []TypeStatus `json:"types"`
}

// Syncz fetches /debug/syncz.
func (c *Client) Syncz(ctx context.Context) ([]SyncStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/debug/syncz"), nil)
	if err != nil {
		return nil, fmt.Errorf("get /debug/syncz: %w", err)
	}
	body, err := c.do(req)
	if err != nil {
		return nil, err
	}
	var out []SyncStatus
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("get /debug/syncz: decode answer: %w", err)
	}
	return out, nil
}

// DashboardURL asks loomd for its dashboard's URL (/api/v1/dashboard). It
// returns *APIError 404 when loomd serves no dashboard and
// *UnreachableError when loomd does not answer.
func (c *Client) DashboardURL(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/api/v1/dashboard"), nil)
	if err != nil {
		return "", fmt.Errorf("get /api/v1/dashboard: %w", err)
	}
	body, err := c.do(req)
	if err != nil {
		return "", err
	}
	var d struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(body, &d); err != nil || d.URL == "" {
		return "", fmt.Errorf("get /api/v1/dashboard: decode answer %q: %v", body, err)
	}
	return d.URL, nil
}

// Ready reports whether loomd's /ready answers 200. It returns
// *UnreachableError when loomd does not answer.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/ready"), nil)
	if err != nil {
		return false, fmt.Errorf("get /ready: %w", err)
	}
	_, err = c.do(req)
	var ae *APIError
	if errors.As(err, &ae) {
		return false, nil
	}
	return err == nil, err
}

func (c *Client) url(path string) string { return "http://" + c.addr + path }

// do sends req and returns the body of a 2xx answer.
func (c *Client) do(req *http.Request) ([]byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, req.Context().Err())
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the message already, by address
		}
		return nil, &UnreachableError{Addr: c.addr, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, &APIError{StatusCode: resp.StatusCode, Lines: nonEmptyLines(string(body))}
	}
	return body, nil
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, "\r "); l != "" {
			out = append(out, l)
		}
	}
	return out
}

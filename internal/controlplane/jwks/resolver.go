// Package jwks is loomd's JWKS resolver (Istio's JwksResolver with its
// default PILOT_JWT_ENABLE_REMOTE_JWKS off): it fetches the key sets of
// the RequestAuthentication rules that have no inline jwks, from their
// jwksUri or through the issuer's OpenID discovery document, keeps them,
// refreshes them on an interval, and publishes an immutable
// model.JwksSet that translation inlines into the proxies' jwt_authn
// filters (local_jwks). Proxies never fetch.
//
// On a failed fetch the last good key set keeps serving and the fetch is
// retried with a backoff; a rule never fetched has no entry, and
// translation gives it a placeholder that fails every token (Istio's
// FakeJwks). Every change of the set calls Options.OnChange, which
// triggers a push.
//
// Data flow: loomd's main feeds it config snapshots (Update) and reads it
// in the generate closure (Current). It imports config, model and
// validation, never xds or translate.
package jwks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	security "istio.io/api/security/v1beta1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
)

// Defaults, as Istio's: PILOT_JWT_PUB_KEY_REFRESH_INTERVAL is 20 minutes;
// a rule's timeout defaults to 5 s.
const (
	DefaultRefreshInterval = 20 * time.Minute
	DefaultTimeout         = 5 * time.Second
	// DefaultRetryInterval is the first wait after a failed fetch; it
	// doubles up to the refresh interval.
	DefaultRetryInterval = time.Second
	// maxBody bounds a JWKS or discovery document.
	maxBody = 1 << 20
)

// Options configure a Resolver.
type Options struct {
	// RootCAs are the roots a https jwksUri is verified against; nil means
	// the system's.
	RootCAs *x509.CertPool
	// RefreshInterval is how often a fetched key set is fetched again
	// (DefaultRefreshInterval when zero).
	RefreshInterval time.Duration
	// RetryInterval is the first wait after a failed fetch
	// (DefaultRetryInterval when zero).
	RetryInterval time.Duration
	// OnChange is called, from the resolver's goroutine, after the set
	// Current returns changed. It must not block.
	OnChange func()
	Logger   *slog.Logger
}

// Resolver fetches and caches JWKS. Update and Current are safe for
// concurrent use and never block on the network; Run does the fetching.
type Resolver struct {
	opts    Options
	client  *http.Client
	log     *slog.Logger
	current atomic.Pointer[model.JwksSet]
	wake    chan struct{}

	// mu guards the fields below.
	mu      sync.Mutex
	entries map[model.JwksKey]*entry
}

// entry is the state of one wanted key set.
type entry struct {
	timeout time.Duration
	jwks    string // last good; "" before the first success
	next    time.Time
	backoff time.Duration
}

// New returns a Resolver; call Run to start fetching.
func New(opts Options) *Resolver {
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // fetched by loomd itself, never through an app's proxy
	tr.TLSClientConfig = &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12}
	r := &Resolver{
		opts:    opts,
		client:  &http.Client{Transport: tr},
		log:     opts.Logger.With("component", "jwks"),
		wake:    make(chan struct{}, 1),
		entries: map[model.JwksKey]*entry{},
	}
	r.current.Store(model.NewJwksSet(nil))
	return r
}

// Current returns the key sets fetched so far. The set is immutable.
func (r *Resolver) Current() *model.JwksSet { return r.current.Load() }

// Update makes the rules of snap's RequestAuthentications without inline
// jwks the wanted set: new ones are fetched at once, ones no rule uses any
// more are dropped.
func (r *Resolver) Update(snap *config.Snapshot) {
	wanted := map[model.JwksKey]time.Duration{}
	for _, res := range snap.List(config.KindRequestAuthentication) {
		ra, ok := res.Spec.(*security.RequestAuthentication)
		if !ok {
			continue
		}
		for _, rule := range ra.GetJwtRules() {
			if rule.GetJwks() != "" || (rule.GetJwksUri() == "" && rule.GetIssuer() == "") {
				continue
			}
			timeout := DefaultTimeout
			if d := rule.GetTimeout(); d != nil && d.AsDuration() > 0 {
				timeout = d.AsDuration()
			}
			wanted[model.JwksKey{Issuer: rule.GetIssuer(), URI: rule.GetJwksUri()}] = timeout
		}
	}
	r.mu.Lock()
	dropped := false
	for k := range r.entries {
		if _, ok := wanted[k]; !ok {
			delete(r.entries, k)
			dropped = true
		}
	}
	for k, timeout := range wanted {
		if e, ok := r.entries[k]; ok {
			e.timeout = timeout
			continue
		}
		r.entries[k] = &entry{timeout: timeout}
	}
	if dropped {
		r.publishLocked()
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// publishLocked stores the current set; it reports whether it changed.
func (r *Resolver) publishLocked() bool {
	m := map[model.JwksKey]string{}
	for k, e := range r.entries {
		if e.jwks != "" {
			m[k] = e.jwks
		}
	}
	old := r.current.Load()
	same := old.Len() == len(m)
	if same {
		for k, v := range m {
			if got, ok := old.Get(k); !ok || got != v {
				same = false
				break
			}
		}
	}
	if same {
		return false
	}
	r.current.Store(model.NewJwksSet(m))
	return true
}

// Run fetches what is due until ctx is done, one fetch at a time. It
// returns nil when ctx is done.
func (r *Resolver) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		key, timeout, wait, ok := r.due()
		if ok {
			r.fetchOne(ctx, key, timeout)
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// due returns an entry whose fetch is due, or how long until the next one.
func (r *Resolver) due() (model.JwksKey, time.Duration, time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	wait := time.Hour
	keys := slices.SortedFunc(maps.Keys(r.entries), func(a, b model.JwksKey) int {
		return strings.Compare(a.Issuer+"\x00"+a.URI, b.Issuer+"\x00"+b.URI)
	})
	for _, k := range keys {
		e := r.entries[k]
		if !e.next.After(now) {
			return k, e.timeout, 0, true
		}
		wait = min(wait, e.next.Sub(now))
	}
	return model.JwksKey{}, 0, wait, false
}

func (r *Resolver) fetchOne(ctx context.Context, k model.JwksKey, timeout time.Duration) {
	jwks, err := r.fetch(ctx, k, timeout)
	r.mu.Lock()
	e, ok := r.entries[k]
	if !ok { // dropped meanwhile
		r.mu.Unlock()
		return
	}
	changed := false
	if err != nil {
		if e.backoff == 0 {
			e.backoff = r.opts.RetryInterval
		} else {
			e.backoff = min(2*e.backoff, r.opts.RefreshInterval)
		}
		e.next = time.Now().Add(e.backoff)
	} else {
		e.backoff = 0
		e.next = time.Now().Add(r.opts.RefreshInterval)
		e.jwks = jwks
		changed = r.publishLocked()
	}
	kept := e.jwks != ""
	retry := e.backoff
	r.mu.Unlock()
	if err != nil {
		// Never the key set itself, and the URI without its query and
		// credentials: only what identifies the server.
		r.log.Warn("jwks fetch failed", "issuer", k.Issuer, "uri", redact(k.URI), "err", err,
			"serving_last_good", kept, "retry_in", retry)
		return
	}
	if changed {
		r.log.Info("jwks updated", "issuer", k.Issuer, "uri", redact(k.URI))
		if r.opts.OnChange != nil {
			r.opts.OnChange()
		}
	}
}

// fetch gets k's key set: from its URI, or from the jwks_uri of the
// issuer's OpenID discovery document; it must parse as a JWKS.
func (r *Resolver) fetch(ctx context.Context, k model.JwksKey, timeout time.Duration) (string, error) {
	uri := k.URI
	if uri == "" {
		doc, err := r.get(ctx, strings.TrimSuffix(k.Issuer, "/")+"/.well-known/openid-configuration", timeout)
		if err != nil {
			return "", fmt.Errorf("openid discovery: %w", err)
		}
		var d struct {
			JwksURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(doc, &d); err != nil || d.JwksURI == "" {
			return "", errors.New("openid discovery: no jwks_uri in the issuer's openid-configuration")
		}
		uri = d.JwksURI
	}
	body, err := r.get(ctx, uri, timeout)
	if err != nil {
		return "", err
	}
	if err := validation.ParseJWKS(string(body)); err != nil {
		return "", fmt.Errorf("response is not a usable JWKS: %w", err)
	}
	return string(body), nil
}

func (r *Resolver) get(ctx context.Context, uri string, timeout time.Duration) ([]byte, error) {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, errors.New("url must have scheme http:// or https://")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, errors.New("bad url")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold credentials
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("larger than %d bytes", maxBody)
	}
	return body, nil
}

// redact keeps a URI's scheme, host and path.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "(unparsable)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

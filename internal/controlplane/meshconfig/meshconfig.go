// Package meshconfig reads loomd's mesh config: a YAML file of Istio's
// MeshConfig (istio.io/api/mesh/v1alpha1), given by loomd --mesh-config,
// and watches it. Translation reads outboundTrafficPolicy, trustDomain,
// trustDomainAliases, the ext_authz extensionProviders
// (envoyExtAuthzHttp, envoyExtAuthzGrpc) that AuthorizationPolicy CUSTOM
// actions name, and tracing: defaultProviders.tracing, the opentelemetry
// and zipkin extensionProviders, and defaultConfig.tracing (sampling,
// customTags, maxPathTagLength, enableIstioTags).
//
// It sits beside the config store: loomd passes Watcher.Current to
// translate.GenerateMesh and triggers a push on every change. It imports
// no other Loom package.
package meshconfig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"
)

// DefaultTrustDomain is Istio's trust domain when the mesh config names
// none.
const DefaultTrustDomain = "cluster.local"

// Default returns Istio's default mesh config as far as Loom reads it:
// outboundTrafficPolicy ALLOW_ANY and trust domain cluster.local.
func Default() *meshv1alpha1.MeshConfig {
	return &meshv1alpha1.MeshConfig{OutboundTrafficPolicy: &meshv1alpha1.MeshConfig_OutboundTrafficPolicy{
		Mode: meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY,
	}, TrustDomain: DefaultTrustDomain, AccessLogFile: DefaultAccessLogFile}
}

// DefaultAccessLogFile is Loom's accessLogFile when the mesh config does
// not set the field: the proxies' stdout, as Istio's demo profile has it
// (Istio's own default is "", no access log). Setting accessLogFile: ""
// turns the mesh-wide access log off.
const DefaultAccessLogFile = "/dev/stdout"

// Parse decodes a MeshConfig from YAML (or JSON) with protojson, as the
// config store decodes specs, over Istio's defaults as far as Loom reads
// them: an empty document, or one without outboundTrafficPolicy.mode, is
// ALLOW_ANY; one without accessLogFile logs to DefaultAccessLogFile. Unknown fields
// and bad enum values are refused: the error names the file and the field.
func Parse(name string, data []byte) (*meshv1alpha1.MeshConfig, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("mesh config %s: %w", name, err)
	}
	if string(js) == "null" {
		return Default(), nil
	}
	mc := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(js, mc); err != nil {
		return nil, fmt.Errorf("mesh config %s: %w", name, err)
	}
	// Istio applies the file over its defaults: an unset mode is ALLOW_ANY,
	// although the enum's zero value is REGISTRY_ONLY.
	var raw struct {
		OutboundTrafficPolicy *struct {
			Mode json.RawMessage `json:"mode"`
		} `json:"outboundTrafficPolicy"`
		AccessLogFile *string `json:"accessLogFile"`
	}
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, fmt.Errorf("mesh config %s: %w", name, err)
	}
	if raw.OutboundTrafficPolicy == nil || raw.OutboundTrafficPolicy.Mode == nil {
		mc.OutboundTrafficPolicy = Default().OutboundTrafficPolicy
	}
	if mc.TrustDomain == "" {
		mc.TrustDomain = DefaultTrustDomain
	}
	if raw.AccessLogFile == nil {
		mc.AccessLogFile = DefaultAccessLogFile
	}
	if err := Validate(mc); err != nil {
		return nil, fmt.Errorf("mesh config %s: %w", name, err)
	}
	return mc, nil
}

// Validate checks what Loom reads of mc as Istio's mesh config validation
// does: extension providers have unique, non-empty names, and each
// envoyExtAuthzHttp or envoyExtAuthzGrpc provider a service, a port
// 1-65535, a statusOnError that is an HTTP status and (HTTP) a pathPrefix
// starting with "/"; clearRouteCache, which the proxy does not
// implement, is refused. opentelemetry and zipkin tracing providers need a
// service and a port; of them, OTLP over HTTP, samplers, resource
// detectors and Zipkin headers and timeout are refused as not supported.
// Providers of other kinds (logging, other tracers) are not read and not
// checked. The error names the provider by index and name.
func Validate(mc *meshv1alpha1.MeshConfig) error {
	var errs []error
	seen := map[string]bool{}
	for i, p := range mc.GetExtensionProviders() {
		at := fmt.Sprintf("extensionProviders[%d]", i)
		switch {
		case p.GetName() == "":
			errs = append(errs, fmt.Errorf("%s.name: must not be empty", at))
		case seen[p.GetName()]:
			errs = append(errs, fmt.Errorf("%s.name: %q: must be unique", at, p.GetName()))
		}
		seen[p.GetName()] = true
		switch pr := p.GetProvider().(type) {
		case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp:
			h := pr.EnvoyExtAuthzHttp
			errs = append(errs, extAuthzService(at+".envoyExtAuthzHttp", h.GetService(), h.GetPort(), h.GetStatusOnError())...)
			if h.GetPathPrefix() != "" && !strings.HasPrefix(h.GetPathPrefix(), "/") {
				errs = append(errs, fmt.Errorf("%s.envoyExtAuthzHttp.pathPrefix: %q: must begin with /", at, h.GetPathPrefix()))
			}
			if h.GetClearRouteCache() {
				errs = append(errs, fmt.Errorf("%s.envoyExtAuthzHttp.clearRouteCache: not supported by this version of Loom (its ext_authz filter does not clear the route cache; jwt_authn does)", at))
			}
		case *meshv1alpha1.MeshConfig_ExtensionProvider_Opentelemetry:
			errs = append(errs, tracingProvider(at+".opentelemetry", pr.Opentelemetry.GetService(), pr.Opentelemetry.GetPort())...)
			if pr.Opentelemetry.GetHttp() != nil {
				errs = append(errs, fmt.Errorf("%s.opentelemetry.http: not supported by this version of Loom (export over grpc)", at))
			}
			if pr.Opentelemetry.GetSampling() != nil {
				errs = append(errs, fmt.Errorf("%s.opentelemetry.dynatraceSampler: not supported by this version of Loom", at))
			}
			if pr.Opentelemetry.GetResourceDetectors() != nil {
				errs = append(errs, fmt.Errorf("%s.opentelemetry.resourceDetectors: not supported by this version of Loom", at))
			}
		case *meshv1alpha1.MeshConfig_ExtensionProvider_Zipkin:
			errs = append(errs, tracingProvider(at+".zipkin", pr.Zipkin.GetService(), pr.Zipkin.GetPort())...)
			if len(pr.Zipkin.GetHeaders()) > 0 || pr.Zipkin.GetTimeout() != nil {
				errs = append(errs, fmt.Errorf("%s.zipkin: headers and timeout are not supported by this version of Loom", at))
			}
			if p := pr.Zipkin.GetPath(); p != "" && !strings.HasPrefix(p, "/") {
				errs = append(errs, fmt.Errorf("%s.zipkin.path: %q: must begin with /", at, p))
			}
		case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc:
			g := pr.EnvoyExtAuthzGrpc
			errs = append(errs, extAuthzService(at+".envoyExtAuthzGrpc", g.GetService(), g.GetPort(), g.GetStatusOnError())...)
			if g.GetClearRouteCache() {
				errs = append(errs, fmt.Errorf("%s.envoyExtAuthzGrpc.clearRouteCache: not supported by this version of Loom (its ext_authz filter does not clear the route cache; jwt_authn does)", at))
			}
		}
	}
	return errors.Join(errs...)
}

// tracingProvider checks a tracing provider's collector service, as
// Istio's validateExtensionProvider: a service name ("host" or
// "namespace/host") and a port.
func tracingProvider(at, service string, port uint32) []error {
	var errs []error
	if service == "" {
		errs = append(errs, fmt.Errorf("%s.service: must not be empty", at))
	}
	if port == 0 || port > 65535 {
		errs = append(errs, fmt.Errorf("%s.port: %d: must be 1-65535", at, port))
	}
	return errs
}

func extAuthzService(at, service string, port uint32, statusOnError string) []error {
	var errs []error
	if service == "" {
		errs = append(errs, fmt.Errorf("%s.service: must not be empty", at))
	}
	if port == 0 || port > 65535 {
		errs = append(errs, fmt.Errorf("%s.port: %d: must be 1-65535", at, port))
	}
	if statusOnError != "" {
		if c, err := strconv.Atoi(statusOnError); err != nil || c < 100 || c > 599 {
			errs = append(errs, fmt.Errorf("%s.statusOnError: %q: must be an HTTP status code", at, statusOnError))
		}
	}
	return errs
}

// Load reads and parses the mesh config file path.
func Load(path string) (*meshv1alpha1.MeshConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	return Parse(path, data)
}

// Watcher holds the last good mesh config of one file and reloads it when
// the file changes. Its methods are safe for concurrent use.
type Watcher struct {
	path string
	log  *slog.Logger

	cur     atomic.Pointer[meshv1alpha1.MeshConfig]
	changes chan struct{}

	// mu guards lastErr.
	mu      sync.Mutex
	lastErr error
}

// NewWatcher loads path once. A file that cannot be read or parsed fails
// New: loomd refuses to start on a bad --mesh-config. An empty path gives a
// Watcher that always serves Default and never changes.
func NewWatcher(path string, log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{path: path, log: log.With("component", "meshconfig"), changes: make(chan struct{}, 1)}
	mc := Default()
	if path != "" {
		var err error
		if mc, err = Load(path); err != nil {
			return nil, err
		}
	}
	w.cur.Store(mc)
	return w, nil
}

// Current returns the last good mesh config; never nil. It must not be
// modified.
func (w *Watcher) Current() *meshv1alpha1.MeshConfig { return w.cur.Load() }

// Err returns why the file's latest version was refused, or nil when the
// current config is the file's content.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// Changes receives a value after each reload that changed Current (at most
// one pending: latest wins).
func (w *Watcher) Changes() <-chan struct{} { return w.changes }

// Reload reads the file again. A bad file keeps the last good config, is
// logged and is returned (and kept for Err).
func (w *Watcher) Reload() error {
	if w.path == "" {
		return nil
	}
	mc, err := Load(w.path)
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
	if err != nil {
		w.log.Error("mesh config refused; keeping the last good one", "err", err)
		return err
	}
	if proto.Equal(mc, w.cur.Load()) {
		return nil
	}
	w.cur.Store(mc)
	w.log.Info("mesh config changed", "outboundTrafficPolicy", mc.GetOutboundTrafficPolicy().GetMode().String())
	select {
	case w.changes <- struct{}{}:
	default:
	}
	return nil
}

// Run watches the file's directory (so an editor's or kubelet's rename is
// seen) and reloads on every event naming the file, until ctx is done. It
// returns an error only when the watch cannot be set up; with no path it
// waits for ctx.
func (w *Watcher) Run(ctx context.Context) error {
	if w.path == "" {
		<-ctx.Done()
		return nil
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("mesh config watch: %w", err)
	}
	defer fw.Close()
	dir := filepath.Dir(w.path)
	if err := fw.Add(dir); err != nil {
		return fmt.Errorf("mesh config watch %s: %w", dir, err)
	}
	name := filepath.Clean(w.path)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return errors.New("mesh config watch: closed")
			}
			if filepath.Clean(ev.Name) != name || ev.Op == fsnotify.Chmod {
				continue
			}
			_ = w.Reload() // logged and kept by Reload
		case err, ok := <-fw.Errors:
			if !ok {
				return errors.New("mesh config watch: closed")
			}
			w.log.Warn("mesh config watch error", "err", err)
		}
	}
}

// defaultExtensionProviders are the providers Istio's default mesh config
// defines and a mesh config keeps unless it defines one of the same name:
// "prometheus" (the Istio standard metrics) and "envoy" (Envoy's file
// access log on /dev/stdout). Istio's third, "stackdriver", is left out:
// Loom has no Stackdriver exporter.
var defaultExtensionProviders = []*meshv1alpha1.MeshConfig_ExtensionProvider{
	{Name: "prometheus", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_Prometheus{
		Prometheus: &meshv1alpha1.MeshConfig_ExtensionProvider_PrometheusMetricsProvider{}}},
	{Name: "envoy", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLog{
		EnvoyFileAccessLog: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider{Path: "/dev/stdout"}}},
}

// ExtensionProvider returns the extension provider of mc called name,
// compared case-insensitively as Istio's fetchProvider does, or one of
// Istio's default providers ("prometheus", "envoy") that mc does not
// redefine; nil when there is none. mc may be nil (Istio's defaults).
func ExtensionProvider(mc *meshv1alpha1.MeshConfig, name string) *meshv1alpha1.MeshConfig_ExtensionProvider {
	for _, p := range mc.GetExtensionProviders() {
		if strings.EqualFold(p.GetName(), name) {
			return p
		}
	}
	for _, p := range defaultExtensionProviders {
		if strings.EqualFold(p.GetName(), name) {
			return p
		}
	}
	return nil
}

// ExtensionProviderNames lists the names ExtensionProvider finds in mc:
// mc's own, then the defaults it does not redefine.
func ExtensionProviderNames(mc *meshv1alpha1.MeshConfig) []string {
	var out []string
	for _, p := range mc.GetExtensionProviders() {
		out = append(out, p.GetName())
	}
	for _, p := range defaultExtensionProviders {
		redefined := false
		for _, q := range mc.GetExtensionProviders() {
			redefined = redefined || strings.EqualFold(q.GetName(), p.GetName())
		}
		if !redefined {
			out = append(out, p.GetName())
		}
	}
	return out
}

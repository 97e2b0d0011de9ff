// Command loomd is Loom's control plane (Istio's istiod): it watches a
// directory of Istio YAML, validates it, and serves it to proxies over ADS,
// with a monitoring and config API beside.
//
//	loomd --config-dir DIR [--xds-addr 127.0.0.1:15010] [--monitoring-addr 127.0.0.1:15014]
//	      [--debounce-after 100ms] [--debounce-max 1s] [--log-level info]
//	      [--mesh-config FILE] [--jwks-ca-file FILE] [--jwks-refresh-interval 20m]
//	      [--ratelimit-addr IP:PORT --ratelimit-redis HOST:PORT [--ratelimit-config FILE|DIR]]
//
// --mesh-config is a YAML MeshConfig (Istio's meshConfig; only
// outboundTrafficPolicy is read). Without it the mesh is Istio's default,
// ALLOW_ANY. The file is watched: a change is pushed, and a bad version is
// logged while the last good one keeps serving. A bad file at start is an
// error.
//
// With --data-dir, loomd runs its certificate authority (Istio's
// Citadel) and serves xDS and Istio's CSR API
// (IstioCertificateService/CreateCertificate) over TLS on
// --secure-xds-addr (15012):
//
//	loomd --config-dir DIR --data-dir DIR [--secure-xds-addr 127.0.0.1:15012]
//	      [--cacerts-dir DIR] [--trust-domain cluster.local]
//	      [--workload-cert-ttl 24h] [--max-workload-cert-ttl 2160h]
//
// The data directory (0700) keeps the self-signed root (created on first
// start, never replaced), the published trust bundle root-cert.pem, and
// the bootstrap-token registry tokens/ that `loomctl token create` writes.
// --cacerts-dir is a plug-in CA in Istio's cacerts layout instead of the
// self-signed root; SIGHUP re-reads it. A CA that cannot start (a corrupt
// key, a plug-in key that does not match its certificate) stops loomd with
// an error naming the file. Without --data-dir there is no CA and no TLS
// port. docs/security.md has the threat model.
//
// The JWKS of RequestAuthentication rules without inline jwks are fetched
// by loomd (from jwksUri, or the issuer's OpenID discovery document),
// refreshed every --jwks-refresh-interval and inlined into the proxies'
// config, as istiod does by default. https servers are verified against
// the system roots plus --jwks-ca-file (PEM).
//
// loomd serves its dashboard (Kiali's role: a live service graph, pages per
// service and workload, proxy sync state, config status) and its JSON API
// on --dashboard-addr; "off" serves none. The traffic it shows comes from
// scraping every connected proxy's Prometheus endpoint every
// --scrape-interval (ports --scrape-ports, /stats/prometheus), or, with
// --prometheus-url, from that Prometheus server:
//
//	loomd ... [--dashboard-addr 127.0.0.1:20001] [--scrape-interval 5s]
//	      [--scrape-ports 15090,15000] [--prometheus-url URL]
//
// A dashboard address given on the command line that cannot be bound stops
// loomd; the default one, when taken (another loomd), is only logged.
//
// --ratelimit-addr starts the rate limit service (Envoy's
// envoy.service.ratelimit.v3, envoyproxy/ratelimit's semantics) on that
// address, counting in the Redis at --ratelimit-redis. Proxies reach it at
// that address, which must be an IP they can dial. Its configuration is the
// files of --ratelimit-config (envoyproxy/ratelimit's YAML, read at start)
// plus the domain "loom" generated from the RateLimitPolicies of the config
// dir. Without it, RateLimitPolicy global limits are refused.
//
// Bad config never stops loomd: it logs the errors, serves the last good
// (at first, empty) config and reports the errors on /debug/configz. It
// exits non-zero only for bad flags or an address it cannot bind.
package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/loom-mesh/loom/internal/controlplane/api"
	"github.com/loom-mesh/loom/internal/controlplane/ca"
	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/jwks"
	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
	"github.com/loom-mesh/loom/internal/controlplane/xds"
	"github.com/loom-mesh/loom/internal/dashboard"
)

// options are loomd's flags.
type options struct {
	configDir      string
	xdsAddr        string
	monitoringAddr string
	debounceAfter  time.Duration
	debounceMax    time.Duration
	logLevel       string
	meshConfig     string

	// The CA and the TLS port; off when dataDir is empty.
	dataDir            string
	cacertsDir         string
	trustDomain        string
	secureXDSAddr      string
	workloadCertTTL    time.Duration
	maxWorkloadCertTTL time.Duration

	// JWKS fetching for RequestAuthentication.
	jwksCAFile  string
	jwksRefresh time.Duration
	// The dashboard; off when dashboardAddr is "" or "off".
	dashboardAddr string
	// dashboardRequired makes a dashboard address that cannot be bound an
	// error (it was given on the command line).
	dashboardRequired bool
	prometheusURL     string
	scrapeInterval    time.Duration
	scrapePorts       []int
	// The rate limit service: listen address, Redis, and the files of
	// its own config; none when rateLimitAddr is "".
	rateLimitAddr   string
	rateLimitRedis  string
	rateLimitConfig string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newCommand(os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loomd:", err)
		os.Exit(1)
	}
}

func newCommand(stderr io.Writer) *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:           "loomd --config-dir DIR",
		Short:         "Loom's control plane: Istio config in, xDS out",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := parseLevel(o.logLevel)
			if err != nil {
				return err
			}
			if o.debounceAfter <= 0 || o.debounceMax < o.debounceAfter {
				return fmt.Errorf("--debounce-after (%v) must be > 0 and <= --debounce-max (%v)", o.debounceAfter, o.debounceMax)
			}
			o.dashboardRequired = cmd.Flags().Changed("dashboard-addr")
			if err := checkRateLimitFlags(o); err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			return run(cmd.Context(), o, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.configDir, "config-dir", "", "directory of Istio YAML to serve, watched recursively (required)")
	f.StringVar(&o.xdsAddr, "xds-addr", "127.0.0.1:15010", "gRPC ADS listen address")
	f.StringVar(&o.monitoringAddr, "monitoring-addr", "127.0.0.1:15014", "monitoring and config API listen address")
	f.DurationVar(&o.debounceAfter, "debounce-after", xds.DefaultDebounceAfter, "quiet period after a config change before a push")
	f.DurationVar(&o.debounceMax, "debounce-max", xds.DefaultDebounceMax, "longest a push waits after the first change")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&o.meshConfig, "mesh-config", "", "YAML MeshConfig file, watched (default: Istio's defaults, outboundTrafficPolicy ALLOW_ANY)")
	f.StringVar(&o.dataDir, "data-dir", "", "the CA's directory (root key, trust bundle, token registry); empty: no CA and no TLS port")
	f.StringVar(&o.cacertsDir, "cacerts-dir", "", "plug-in CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem) instead of the self-signed root; SIGHUP reloads it")
	f.StringVar(&o.trustDomain, "trust-domain", ca.DefaultTrustDomain, "SPIFFE trust domain of the workload certificates")
	f.StringVar(&o.secureXDSAddr, "secure-xds-addr", "127.0.0.1:15012", "xDS and CSR API over TLS listen address (with --data-dir)")
	f.DurationVar(&o.workloadCertTTL, "workload-cert-ttl", ca.DefaultWorkloadCertTTL, "lifetime of a workload certificate whose request names none")
	f.DurationVar(&o.maxWorkloadCertTTL, "max-workload-cert-ttl", ca.DefaultMaxWorkloadCertTTL, "longest lifetime a certificate request may ask for")
	f.StringVar(&o.jwksCAFile, "jwks-ca-file", "", "PEM roots trusted, besides the system's, for https jwksUri fetches")
	f.DurationVar(&o.jwksRefresh, "jwks-refresh-interval", jwks.DefaultRefreshInterval, "how often a fetched JWKS is fetched again")
	f.StringVar(&o.dashboardAddr, "dashboard-addr", dashboard.DefaultAddr, `dashboard and its JSON API listen address; "off" for none`)
	f.StringVar(&o.prometheusURL, "prometheus-url", "", "Prometheus server the dashboard reads traffic from (default: loomd scrapes the proxies itself)")
	f.DurationVar(&o.scrapeInterval, "scrape-interval", dashboard.DefaultScrapeInterval, "how often loomd scrapes the proxies for the dashboard (1s to 1m)")
	f.IntSliceVar(&o.scrapePorts, "scrape-ports", dashboard.DefaultScrapePorts, "proxy ports to scrape /stats/prometheus on, tried in order")
	f.StringVar(&o.rateLimitAddr, "ratelimit-addr", "", "serve the rate limit service (gRPC) on this IP:PORT, which proxies dial (default: none)")
	f.StringVar(&o.rateLimitRedis, "ratelimit-redis", "", "the rate limit service's Redis, HOST:PORT (required with --ratelimit-addr)")
	f.StringVar(&o.rateLimitConfig, "ratelimit-config", "", "rate limit service config: an envoyproxy/ratelimit YAML file or a directory of them, read at start")
	if err := cmd.MarkFlagRequired("config-dir"); err != nil {
		panic(err)
	}
	return cmd
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: must be debug, info, warn or error", s)
	}
	return l, nil
}

// ready is /ready's test, as api.Options.Ready documents it: the config
// directory was read once (valid or not: bad config is reported on
// /debug/configz, not by unreadiness) and xDS is serving.
func ready(store interface{ Loaded() bool }, xdsSrv interface{ Serving() bool }) func() bool {
	return func() bool { return store.Loaded() && xdsSrv.Serving() }
}

// jwksRoots is the system pool plus the PEM certificates of file (none
// when file is empty); an unreadable file or one without a certificate is
// an error.
func jwksRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--jwks-ca-file: %w", err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("--jwks-ca-file %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// run serves until ctx is done. It returns an error only when an address
// cannot be bound or a server fails.
func run(ctx context.Context, o options, log *slog.Logger) error {
	mesh, err := meshconfig.NewWatcher(o.meshConfig, log)
	if err != nil {
		return err
	}
	// Beyond each resource on its own: Telemetry providers must be the
	// mesh config's (as it is when the config is checked; a later mesh
	// config change does not unload a Telemetry, whose unknown providers
	// translation then ignores, as Istio does), and global rate limits need
	// the rate limit service.
	validate := func(rs []*config.Resource) config.Errors {
		errs := append(validation.ValidateAll(rs), validation.TelemetryProviders(rs, mesh.Current())...)
		if o.rateLimitAddr == "" {
			errs = append(errs, validation.RateLimitServiceRequired(rs)...)
		}
		return errs
	}
	store, err := config.NewStore(config.StoreOptions{Dir: o.configDir, Validate: validate, Logger: log})
	if err != nil {
		return err
	}
	rls, err := newRateLimitService(o, store, log)
	if err != nil {
		return err
	}
	rlsAddr := ""
	if rls != nil {
		rlsAddr = rls.svc.Addr()
	}
	// Subscribed before the first load, so no change is missed.
	changes := store.Subscribe()
	if err := store.Load(); err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				log.Error("config error", "err", e.Error())
			}
		} else {
			log.Error("config load failed", "err", err)
		}
		log.Warn("serving an empty config until the config dir is valid", "config-dir", o.configDir)
	}

	roots, err := jwksRoots(o.jwksCAFile)
	if err != nil {
		return err
	}
	authority, secure, err := newCA(o, log)
	if err != nil {
		return err
	}
	// istiod's /metrics on 15014: the Go runtime's and the process's, then
	// pilot_*, citadel_server_* and galley_validation_* from the servers.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if authority != nil {
		reg.MustRegister(ca.NewCollector(authority))
	}
	// The resolver's changes trigger pushes; xdsSrv is set before Run
	// starts the resolver, so before any change can be announced.
	var xdsSrv *xds.Server
	keys := jwks.New(jwks.Options{RootCAs: roots, RefreshInterval: o.jwksRefresh, Logger: log,
		OnChange: func() { xdsSrv.Trigger() }})
	keys.Update(store.Snapshot())
	generate := func(pc *model.PushContext, p *model.Proxy) (*translate.Resources, error) {
		return translate.GenerateWith(pc, p, translate.Options{Mesh: mesh.Current(), Jwks: keys.Current(), RateLimitService: rlsAddr,
			Warn:      func(msg string) { log.Warn("translation left a feature out", "proxy", p.ID, "reason", msg) },
			WithoutCA: authority == nil})
	}
	xdsSrv, err = xds.New(xds.Options{Addr: o.xdsAddr, Config: store, Generate: generate,
		DebounceAfter: o.debounceAfter, DebounceMax: o.debounceMax, Logger: log, Secure: secure, Registerer: reg})
	if err != nil {
		return err
	}
	dash, scraper, err := newDashboard(o, store, xdsSrv, log)
	if err != nil {
		xdsSrv.Close()
		return err
	}
	dashURL := ""
	if dash != nil {
		dashURL = dash.URL()
	}
	apiSrv, err := api.New(api.Options{Addr: o.monitoringAddr, Store: store, Sync: xdsSrv,
		Ready: ready(store, xdsSrv), MeshConfigErr: mesh.Err, Logger: log, Metrics: reg, DashboardURL: dashURL})
	if err != nil {
		if dash != nil {
			dash.Close()
		}
		xdsSrv.Close()
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	// runs a server; its failure stops loomd.
	serve := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	serve("xds", xdsSrv.Run)
	serve("api", apiSrv.Run)
	if dash != nil {
		serve("dashboard", dash.Run)
	}
	if scraper != nil {
		serve("dashboard scraper", scraper.Run)
	}
	if rls != nil {
		serve("ratelimit", rls.svc.Run)
		wg.Go(func() { rls.watch(ctx) })
	}
	wg.Go(func() {
		// A watch that cannot be set up leaves loomd serving what it has.
		if err := store.Run(ctx); err != nil {
			log.Error("config watch failed; changes to the config dir will not be seen until restart", "err", err)
		}
	})
	wg.Go(func() {
		// A watch that cannot be set up leaves the mesh config as loaded.
		if err := mesh.Run(ctx); err != nil {
			log.Error("mesh config watch failed; changes to it will not be seen until restart", "err", err)
		}
	})
	if authority != nil {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		wg.Go(func() {
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					if err := authority.Reload(); err != nil {
						log.Error("CA reload failed; the CA keeps its current certificates", "err", err)
					}
				}
			}
		})
	}
	wg.Go(func() {
		if err := keys.Run(ctx); err != nil {
			log.Error("jwks resolver stopped", "err", err)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-changes:
				keys.Update(store.Snapshot())
				xdsSrv.Trigger()
			case <-mesh.Changes():
				xdsSrv.Trigger()
			}
		}
	})

	log.Info("loomd serving", "xds", xdsSrv.Addr(), "monitoring", apiSrv.Addr(), "config-dir", o.configDir,
		"resources", store.Snapshot().Len(), "secure-xds", xdsSrv.SecureAddr(), "dashboard", cmp.Or(dashURL, "off"))
	<-ctx.Done()
	wg.Wait()
	close(errc)
	var errsOut []string
	for err := range errc {
		errsOut = append(errsOut, err.Error())
	}
	if len(errsOut) > 0 {
		return errors.New(strings.Join(errsOut, "; "))
	}
	log.Info("loomd stopped")
	return nil
}

// newDashboard builds the dashboard of o and its traffic source: the
// embedded scraper of the xDS server's proxies (returned, to be run), or
// o.prometheusURL's server. Both are nil when the dashboard is off, or
// when its default address is taken (logged).
func newDashboard(o options, store *config.Store, xdsSrv *xds.Server, log *slog.Logger) (*dashboard.Server, *dashboard.Scraper, error) {
	if o.dashboardAddr == "" || o.dashboardAddr == "off" {
		return nil, nil, nil
	}
	dopts := dashboard.Options{Addr: o.dashboardAddr, Config: store, Proxies: xdsSrv, Logger: log}
	var scraper *dashboard.Scraper
	if o.prometheusURL != "" {
		p, err := dashboard.NewPrometheus(dashboard.PrometheusOptions{URL: o.prometheusURL})
		if err != nil {
			return nil, nil, fmt.Errorf("--prometheus-url: %w", err)
		}
		dopts.Traffic = p
	} else {
		if o.scrapeInterval < dashboard.MinScrapeInterval || o.scrapeInterval > dashboard.MaxScrapeInterval {
			return nil, nil, fmt.Errorf("--scrape-interval %v: must be from %v to %v", o.scrapeInterval, dashboard.MinScrapeInterval, dashboard.MaxScrapeInterval)
		}
		ports := o.scrapePorts
		if len(ports) == 0 {
			ports = dashboard.DefaultScrapePorts
		}
		var err error
		scraper, err = dashboard.NewScraper(dashboard.ScraperOptions{Targets: dashboard.ProxyTargets(xdsSrv, ports),
			Interval: o.scrapeInterval, Logger: log})
		if err != nil {
			return nil, nil, err
		}
		dopts.Traffic, dopts.Health = scraper, scraper.Health
	}
	dash, err := dashboard.New(dopts)
	if err != nil {
		if !o.dashboardRequired {
			log.Warn("dashboard not served: its default address is taken (another loomd?); choose one with --dashboard-addr", "err", err)
			return nil, nil, nil
		}
		return nil, nil, err
	}
	if !dashboard.BundleBuilt() {
		log.Warn("the dashboard's front end is not built into this loomd (make build builds it); its JSON API is served", "dashboard", dash.URL())
	}
	return dash, scraper, nil
}

// newCA starts the CA of o.dataDir and returns it with the options of the
// TLS port that serves its CSR API beside xDS; nil and nil without a data
// directory.
func newCA(o options, log *slog.Logger) (*ca.CA, *xds.SecureOptions, error) {
	if o.dataDir == "" {
		if o.cacertsDir != "" {
			return nil, nil, errors.New("--cacerts-dir needs --data-dir (the token registry and trust bundle live there)")
		}
		log.Info("no --data-dir: the CA and the TLS port are off")
		return nil, nil, nil
	}
	host, _, err := net.SplitHostPort(o.secureXDSAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("--secure-xds-addr %q: %w", o.secureXDSAddr, err)
	}
	authority, err := ca.New(ca.Options{DataDir: o.dataDir, PluginDir: o.cacertsDir, TrustDomain: o.trustDomain,
		WorkloadCertTTL: o.workloadCertTTL, MaxWorkloadCertTTL: o.maxWorkloadCertTTL, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	auth, err := ca.NewTokenAuthenticator(authority.TokenDir(), log)
	if err != nil {
		return nil, nil, err
	}
	// The serving certificate names the bind IP too, for clients that
	// verify the address they dial.
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		ips = []net.IP{ip}
	}
	return authority, &xds.SecureOptions{
		Addr:      o.secureXDSAddr,
		TLS:       authority.ServerTLS([]string{ca.ServingDNSName}, ips),
		Register:  ca.NewServer(authority, auth, log).Register,
		Authorize: ca.CheckNodeIdentity,
	}, nil
}

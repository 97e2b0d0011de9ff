package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/credentials"

	"github.com/loom-mesh/loom/internal/dataplane/admin"
	"github.com/loom-mesh/loom/internal/dataplane/agent"
	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	dphttp "github.com/loom-mesh/loom/internal/dataplane/http"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/listener"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/dataplane/tcp"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/dataplane/xdsclient"
	"github.com/loom-mesh/loom/internal/httpserve"
)

// drainTimeout bounds the wait for in-flight requests on SIGTERM.
const drainTimeout = 5 * time.Second

// Options configure the proxy process.
type Options struct {
	// Node is the ADS node; nil with Bootstrap.
	Node    *corev3.Node
	XDSAddr string
	// Bootstrap, when set, is a static config file read once instead of ADS.
	Bootstrap string
	// AdminAddr is the admin listen address; "" takes the bootstrap's.
	AdminAddr string
	// StatsAddr serves the proxy's metrics on /stats/prometheus alone, as
	// Envoy's 15090 listener in Istio ("IP:15090"); "" serves none.
	StatsAddr string
	// MergedAddr serves the proxy's metrics merged with the app's on
	// /stats/prometheus, as Istio's agent does on 15020; "" serves none.
	MergedAddr string
	// AppMetricsURL is the app's metrics endpoint MergedAddr merges
	// (Istio takes it from the prometheus.io/port and path annotations);
	// "" merges none.
	AppMetricsURL string
	// AccessLog receives the access log lines whose path is /dev/stdout;
	// nil drops them. Which requests are logged, where and how is the
	// listeners' access_log config.
	AccessLog io.Writer
	// AccessLogStderr receives those whose path is /dev/stderr; nil drops
	// them.
	AccessLogStderr io.Writer
	Logger          *slog.Logger
	// Agent, when set, runs the certificate agent (its Store is the
	// proxy's, set by New) that keeps "default" and "ROOTCA" fresh.
	Agent *agent.Options
	// XDSMTLS connects to XDSAddr over mTLS with the agent's certificate
	// (loomd's 15012), once the agent has one. Needs Agent.
	XDSMTLS bool
	// SecretPollInterval is how often file-backed secrets (file-cert:,
	// file-root:) are checked for a change; 0 is
	// secret.DefaultFilePollInterval.
	SecretPollInterval time.Duration
	// Getenv reads the environment custom tags of spans (Envoy's
	// CustomTag.environment); nil sets none.
	Getenv func(string) string
}

// Proxy is the wired data plane: config source -> generation -> clusters,
// listeners and admin.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	current atomic.Pointer[config.Generation]
	metrics *telemetry.Metrics
	istio   *istiostats.Metrics
	// xds is the ADS client (nil with a bootstrap, or before Run);
	// appliedAt is when the last generation was applied (Unix ns).
	xds       atomic.Pointer[xdsclient.Client]
	appliedAt atomic.Int64
	exchange  *istiostats.Exchange
	accessLog *telemetry.AccessLog
	// sinks are the access log paths (stdout: accessLog; files).
	sinks     *telemetry.Sinks
	clusters  *upstream.ClusterManager
	conns     *dphttp.ConnectionManager
	tracing   *telemetry.Tracing
	listeners *listener.Manager
	static    *config.Generation // from Bootstrap
	// secrets holds the TLS secrets handshakes resolve by name: the
	// agent's ("default", "ROOTCA"), files', and those fetched over ADS.
	secrets *secret.Store
	files   *secret.Files
	agent   *agent.Agent // nil without Options.Agent
	// bootstrapRes are the Bootstrap's resources, built into static.
	bootstrapRes config.Resources
}

// filterDeps are what every generation is built with: the node's cluster
// (Envoy's service cluster) for the HTTP filters, and the route-level
// stats of routes with a stat_prefix.
func (p *Proxy) filterDeps() filter.Deps {
	return filter.Deps{ServiceCluster: p.opts.Node.GetCluster(), RouteStats: p.metrics.RouteStats}
}

// New wires a Proxy. With Bootstrap it reads and builds the file, failing
// on an invalid one.
func New(opts Options) (*Proxy, error) {
	p := &Proxy{opts: opts, log: opts.Logger.With("component", "proxy"), metrics: telemetry.NewMetrics(), secrets: secret.NewStore()}
	p.files = secret.NewFiles(p.secrets, opts.SecretPollInterval, opts.Logger)
	if opts.Agent != nil {
		ao := *opts.Agent
		ao.Store, ao.Logger = p.secrets, opts.Logger
		a, err := agent.New(ao)
		if err != nil {
			return nil, err
		}
		p.agent = a
	} else if opts.XDSMTLS {
		return nil, errors.New("proxy: xDS over mTLS needs the certificate agent (--ca-addr)")
	}
	if opts.Bootstrap != "" {
		adminAddr, res, err := loadBootstrap(opts.Bootstrap)
		if err != nil {
			return nil, err
		}
		if p.opts.AdminAddr == "" {
			p.opts.AdminAddr = adminAddr
		}
		p.bootstrapRes = res
	} else if opts.Node == nil {
		return nil, errors.New("proxy: a node or a bootstrap file is required")
	}
	p.istio = istiostats.NewMetrics(0)
	p.metrics.Registry.MustRegister(p.istio)
	p.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "envoy_control_plane_connected_state",
		Help: "1 while the xDS stream to the control plane is open, else 0 (Envoy's control_plane.connected_state).",
	}, func() float64 {
		if c := p.xds.Load(); c != nil && c.Status().Connected {
			return 1
		}
		return 0
	}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "loom_proxy_config_age_seconds",
		Help: "Seconds since the proxy applied its current configuration generation; -1 before the first.",
	}, func() float64 {
		at := p.appliedAt.Load()
		if at == 0 {
			return -1
		}
		return time.Since(time.Unix(0, at)).Seconds()
	}))
	p.exchange = istiostats.NewExchange(opts.Node)
	p.accessLog = telemetry.NewAccessLog(telemetry.AccessLogOptions{Writer: opts.AccessLog})
	p.metrics.WatchAccessLog(p.accessLog) // loom_access_log_dropped_total
	p.sinks = telemetry.NewSinks(p.accessLog, telemetry.NewAccessLog(telemetry.AccessLogOptions{Writer: opts.AccessLogStderr}), opts.Logger)
	p.clusters = upstream.New(upstream.Options{Logger: opts.Logger, OnForget: p.metrics.ForgetCluster, Secrets: p.secrets, Exchange: p.exchange})
	if opts.Bootstrap != "" {
		var err error
		if p.static, err = config.BuildWith(p.bootstrapRes, nil, p.filterDeps()); err != nil {
			return nil, fmt.Errorf("bootstrap %s: %w", opts.Bootstrap, err)
		}
	}
	tracing, err := telemetry.NewTracing(telemetry.TracingOptions{Collectors: p.clusters, NodeID: opts.Node.GetId(),
		Zone: opts.Node.GetLocality().GetZone(), ServiceCluster: opts.Node.GetCluster(), Getenv: opts.Getenv, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	p.tracing = tracing
	p.sinks.ExportOTel(telemetry.OTelLogOptions{Collectors: p.clusters, NodeID: opts.Node.GetId(),
		Zone: opts.Node.GetLocality().GetZone(), ServiceCluster: opts.Node.GetCluster()})
	cm, err := dphttp.New(dphttp.Options{Generation: &p.current, Clusters: p.clusters, Sinks: p.sinks,
		Metrics: p.metrics, Tracing: tracing, IstioStats: p.istio, Exchange: p.exchange, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	p.conns = cm
	p.metrics.WatchClusterPolicies(func() []string {
		g := p.current.Load()
		if g == nil {
			return nil
		}
		return slices.Sorted(maps.Keys(g.Clusters))
	}, func(name string) telemetry.ClusterPolicyStats {
		s := p.clusters.PolicyStats(name)
		return telemetry.ClusterPolicyStats{CxOverflow: s.UpstreamCxOverflow,
			EjectionsEnforced: s.EjectionsEnforcedTotal, EjectionsOverflow: s.EjectionsOverflow, EjectionsActive: s.EjectionsActive}
	})
	tp, err := tcp.New(tcp.Options{Generation: &p.current, Clusters: p.clusters, Sinks: p.sinks,
		IstioStats: p.istio, Self: &p.exchange.Self, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	p.listeners, err = listener.New(listener.Options{Logger: opts.Logger, Secrets: p.secrets, Upstreams: p.clusters, Exchange: p.exchange,
		Handler: func(l *config.Listener, fc *config.FilterChain) http.Handler { return cm.Handler(l.Name, fc) },
		TCP: func(l *config.Listener, fc *config.FilterChain) listener.ConnHandler {
			return func(ctx context.Context, c net.Conn) { tp.ServeConn(ctx, l.Name, fc, c) }
		}})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// apply publishes g: the file secrets it names first (so that its first
// handshakes find them), cluster state (so that requests on g find their
// pools), then the pointer, then the listeners.
func (p *Proxy) apply(g *config.Generation) {
	if err := p.files.Watch(g.LocalSecretNames()); err != nil {
		p.log.Warn("file secrets not loaded; retried at each poll", "error", err)
	}
	p.clusters.Update(g)
	p.current.Store(g)
	p.metrics.RetainRouteStats(g) // the route stats of routes g no longer has go
	p.appliedAt.Store(time.Now().UnixNano())
	if err := p.listeners.Update(g); err != nil {
		p.log.Error("listeners not bound", "generation", g.Number, "error", err)
	}
	p.log.Info("applied generation", "generation", g.Number, "listeners", len(g.Listeners),
		"routes", len(g.Routes), "clusters", len(g.Clusters))
}

// Run serves until ctx ends, then stops accepting, drains in-flight
// requests for up to 5s, and returns nil. It fails when the admin address
// cannot be bound or the xDS client cannot start.
func (p *Proxy) Run(ctx context.Context) error {
	ao := admin.Options{Addr: p.opts.AdminAddr, Generation: &p.current, Gatherer: p.metrics.Registry,
		Secrets: p.secrets, Logger: p.opts.Logger}
	if p.agent != nil {
		ao.AgentStatus = func() any { return p.agent.Status() }
	}
	adm, err := admin.New(ao)
	if err != nil {
		return err
	}
	// Admin and the access log outlive ctx until the drain is over.
	bgCtx, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	wg.Add(3)
	go func() {
		defer wg.Done()
		_ = p.files.Run(bgCtx)
	}()
	go func() {
		defer wg.Done()
		if err := adm.Run(bgCtx); err != nil {
			errc <- err
		}
	}()
	go func() {
		defer wg.Done()
		_ = p.accessLog.Run(bgCtx)
	}()
	for _, srv := range []struct {
		addr string
		h    http.Handler
	}{
		{p.opts.StatsAddr, admin.StatsHandler(p.metrics.Registry)},
		{p.opts.MergedAddr, admin.MergedHandler(admin.MergedOptions{Gatherer: p.metrics.Registry,
			AppURL: p.opts.AppMetricsURL, Logger: p.opts.Logger})},
	} {
		if srv.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", srv.addr)
		if err != nil {
			stopBg()
			wg.Wait()
			return fmt.Errorf("metrics listen %s: %w", srv.addr, err)
		}
		wg.Go(func() {
			hs := &http.Server{Handler: srv.h, ReadHeaderTimeout: 10 * time.Second}
			if err := httpserve.Serve(bgCtx, hs, ln, time.Second); err != nil {
				errc <- err
			}
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.sinks.Run(bgCtx)
	}()

	srcCtx, stopSrc := context.WithCancel(ctx)
	defer stopSrc()
	if p.agent != nil {
		// The agent runs until the sources stop; its failures are retried
		// and logged, never fatal.
		wg.Go(func() {
			if err := p.agent.Run(srcCtx); err != nil {
				errc <- err
			}
		})
	}
	if p.static != nil {
		p.apply(p.static)
	} else {
		xo := xdsclient.Options{Addr: p.opts.XDSAddr, Node: p.opts.Node, Logger: p.opts.Logger, Apply: p.apply,
			Secrets: p.secrets, FilterDeps: p.filterDeps()}
		if p.opts.XDSMTLS {
			xo.Creds = credentials.NewTLS(p.agent.XDSTLS())
		}
		c, err := xdsclient.New(xo)
		if err == nil {
			p.xds.Store(c)
		}
		if err != nil {
			stopSrc()
			stopBg()
			wg.Wait()
			return err
		}
		wg.Go(func() {
			if p.opts.XDSMTLS {
				// mTLS needs the workload certificate first.
				select {
				case <-p.agent.Ready():
				case <-srcCtx.Done():
					return
				}
			}
			if err := c.Run(srcCtx); err != nil {
				errc <- err
			}
		})
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stopSrc()
	p.log.Info("draining", "timeout", drainTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := p.listeners.Shutdown(dctx); err != nil {
		p.log.Warn("drain cut short", "error", err)
	}
	// Mirrors still in flight are cancelled and waited for.
	if err := p.conns.Close(); err != nil {
		p.log.Warn("closing the connection manager", "error", err)
	}
	// The spans of the drained requests go out while the collector's
	// cluster is still there; a collector that is down costs at most this.
	tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := p.tracing.Shutdown(tctx); err != nil {
		p.log.Debug("tracing: spans not exported at exit", "error", err)
	}
	tcancel()
	p.clusters.Close()
	stopBg()
	wg.Wait()
	return runErr
}

// Command loom-proxy is Loom's data plane: one process per workload
// (sidecar) or per gateway (router). It gets its config from loomd over
// ADS (or from a static bootstrap file), publishes it as an immutable
// generation, and proxies HTTP/1.1 and h2c on the listeners it describes.
//
//	loom-proxy sidecar --ip 127.0.0.13 --name reviews-v1 --namespace default --labels app=reviews,version=v1
//	loom-proxy sidecar --interception redirect --ip 10.77.0.13 --name reviews-v1 ...   (inside the workload's network namespace)
//	loom-proxy router --ip 127.0.0.10 --name istio-ingressgateway --namespace istio-system
//	loom-proxy --bootstrap envoy.yaml
//
// With --ca-addr, the proxy's certificate agent gets the workload
// certificate from loomd's CA (Istio's CSR API on 15012) with the bootstrap
// token of --token-file, trusting --root-cert for that connection, and
// keeps it rotated in the secrets "default" and "ROOTCA" (see /certs and
// /agent on the admin port); --xds-mtls then sends xDS over mTLS to
// --xds-addr (loomd's 15012):
//
//	loom-proxy sidecar ... --service-account bookinfo-reviews \
//	    --ca-addr 127.0.0.1:15012 --token-file reviews-v1.token --root-cert DATA_DIR/root-cert.pem
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"

	"github.com/loom-mesh/loom/internal/dataplane/agent"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "loom-proxy:", err)
		os.Exit(1)
	}
}

// flags are the command line, shared by the root and the subcommands.
type flags struct {
	bootstrap      string
	ip             string
	name           string
	namespace      string
	labels         string
	serviceAccount string
	locality       string
	xdsAddr        string
	adminAddr      string
	statsAddr      string
	mergedAddr     string
	appMetricsURL  string
	logLevel       string
	accessLog      bool
	interception   string

	// The certificate agent; off without caAddr.
	caAddr      string
	tokenFile   string
	rootCert    string
	trustDomain string
	xdsMTLS     bool
}

func newRootCommand() *cobra.Command {
	f := &flags{}
	root := &cobra.Command{
		Use:           "loom-proxy",
		Short:         "Loom's data plane proxy",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.bootstrap == "" {
				return fmt.Errorf("use a subcommand (sidecar or router) or --bootstrap FILE")
			}
			return run(cmd.Context(), f, "")
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&f.bootstrap, "bootstrap", "", "static Envoy-bootstrap-shaped YAML file to run from, with no control plane")
	pf.StringVar(&f.adminAddr, "admin-addr", "", "admin listen address (default IP:15000, or the bootstrap's admin address)")
	pf.StringVar(&f.statsAddr, "stats-addr", "", "Prometheus listen address serving /stats/prometheus (default IP:15090; \"off\": none)")
	pf.StringVar(&f.mergedAddr, "merged-metrics-addr", "", "listen address of the proxy's metrics merged with the app's, as Istio's agent on 15020 (default IP:15020; \"off\": none)")
	pf.StringVar(&f.appMetricsURL, "app-metrics-url", "", "the app's Prometheus endpoint merged on --merged-metrics-addr (Istio reads it from the prometheus.io/port and prometheus.io/path annotations)")
	pf.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.BoolVar(&f.accessLog, "access-log", true, "write the access logs the listeners configure for /dev/stdout and /dev/stderr (false: drop them)")

	for _, t := range []xdsapi.NodeType{xdsapi.Sidecar, xdsapi.Router} {
		sub := &cobra.Command{
			Use:   string(t),
			Short: fmt.Sprintf("run as a %s proxy fed by loomd over ADS", t),
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return run(cmd.Context(), f, t)
			},
		}
		fl := sub.Flags()
		fl.StringVar(&f.ip, "ip", "", "the proxy's IP: node ID, and the address its listeners bind (required without --bootstrap)")
		fl.StringVar(&f.name, "name", "", "workload name, e.g. reviews-v1 (required without --bootstrap)")
		fl.StringVar(&f.namespace, "namespace", "default", "workload namespace")
		fl.StringVar(&f.labels, "labels", "", "workload labels, k=v,k2=v2")
		fl.StringVar(&f.serviceAccount, "service-account", "", "workload service account")
		fl.StringVar(&f.locality, "locality", "", "where the proxy runs, region/zone/subzone (the node's locality, for locality load balancing)")
		fl.StringVar(&f.xdsAddr, "xds-addr", "127.0.0.1:15010", "loomd's xDS address (plaintext, or TLS with --xds-mtls)")
		fl.StringVar(&f.caAddr, "ca-addr", "", "loomd's CA (CSR API over TLS, 15012); empty: no workload certificate")
		fl.StringVar(&f.tokenFile, "token-file", "", "the workload's bootstrap token file, for --ca-addr (loomctl token create)")
		fl.StringVar(&f.rootCert, "root-cert", "", "PEM roots to trust for --ca-addr (loomd's DATA_DIR/root-cert.pem)")
		fl.StringVar(&f.trustDomain, "trust-domain", agent.DefaultTrustDomain, "SPIFFE trust domain of the workload identity")
		fl.BoolVar(&f.xdsMTLS, "xds-mtls", false, "connect to --xds-addr over mTLS with the workload certificate (needs --ca-addr)")
		if t == xdsapi.Sidecar {
			fl.StringVar(&f.interception, "interception", "none",
				"how the app's traffic reaches the proxy: none (the app uses HTTP_PROXY; listeners bind --ip) or redirect "+
					"(iptables REDIRECT in the workload's network namespace; the proxy runs with group 1337, which the rules exempt)")
		}
		root.AddCommand(sub)
	}
	return root
}

// run turns flags into options and runs the proxy until ctx ends.
func run(ctx context.Context, f *flags, t xdsapi.NodeType) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", f.logLevel, err)
	}
	// stdout is the access log's; logs go to stderr.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opts := Options{Logger: logger, AdminAddr: f.adminAddr, XDSAddr: f.xdsAddr, Bootstrap: f.bootstrap, Getenv: os.Getenv,
		StatsAddr: defaultAddr(f.statsAddr, "", 0), MergedAddr: defaultAddr(f.mergedAddr, "", 0), AppMetricsURL: f.appMetricsURL}
	// The OpenTelemetry SDK reports failed exports (a collector that is
	// down) through its global handler: Debug, not a line per batch on
	// stderr.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { logger.Debug("tracing export failed", "component", "tracing", "error", err) }))
	if f.accessLog {
		opts.AccessLog, opts.AccessLogStderr = os.Stdout, os.Stderr
	}
	if f.bootstrap == "" {
		if f.ip == "" || f.name == "" {
			return fmt.Errorf("--ip and --name are required")
		}
		labels, err := parseLabels(f.labels)
		if err != nil {
			return err
		}
		locality, err := xdsapi.ParseLocality(f.locality)
		if err != nil {
			return fmt.Errorf("--locality: %w", err)
		}
		mode, err := interceptionMode(f.interception)
		if err != nil {
			return err
		}
		if mode == xdsapi.InterceptionRedirect {
			// Before any socket exists: every socket the proxy opens
			// from now on belongs to the group iptables exempts.
			if err := joinProxyGroup(); err != nil {
				return fmt.Errorf("--interception redirect: %w", err)
			}
		}
		id := xdsapi.NodeID{Type: t, IP: f.ip, Name: f.name, Namespace: f.namespace, Domain: f.namespace + ".svc.cluster.local"}
		opts.Node, err = xdsapi.BuildNode(id, xdsapi.NodeMeta{
			Labels:           labels,
			Namespace:        f.namespace,
			ServiceAccount:   f.serviceAccount,
			ClusterID:        xdsapi.DefaultClusterID,
			WorkloadName:     f.name,
			InterceptionMode: mode,
			Locality:         locality,
			ProxyVersion:     buildVersion(),
		})
		if err != nil {
			return err
		}
		if opts.AdminAddr == "" {
			opts.AdminAddr = fmt.Sprintf("%s:%d", f.ip, xdsapi.PortProxyAdmin)
		}
		opts.StatsAddr = defaultAddr(f.statsAddr, f.ip, xdsapi.PortProxyStats)
		opts.MergedAddr = defaultAddr(f.mergedAddr, f.ip, xdsapi.PortMergedMetrics)
		if f.caAddr != "" {
			if f.tokenFile == "" || f.rootCert == "" || f.serviceAccount == "" {
				return fmt.Errorf("--ca-addr needs --token-file, --root-cert and --service-account")
			}
			opts.Agent = &agent.Options{CAAddr: f.caAddr, TokenFile: f.tokenFile, RootCertFile: f.rootCert,
				TrustDomain: f.trustDomain, Namespace: f.namespace, ServiceAccount: f.serviceAccount}
		} else if f.xdsMTLS {
			return fmt.Errorf("--xds-mtls needs --ca-addr")
		}
		opts.XDSMTLS = f.xdsMTLS
	}
	if err := checkAppMetricsURL(f.appMetricsURL, opts.MergedAddr); err != nil {
		return err
	}
	p, err := New(opts)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

// checkAppMetricsURL refuses an --app-metrics-url that is not an absolute
// http(s) URL, or that names the merged page itself (host and port of
// merged, or its port when merged listens on every address), which would
// scrape itself in a loop, as Istio's agent refuses a prometheus.io/port
// equal to its status port. "" is no app.
func checkAppMetricsURL(raw, merged string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--app-metrics-url %q: must be an http:// or https:// URL with a host", raw)
	}
	mHost, mPort, err := net.SplitHostPort(merged)
	if err != nil {
		return nil // no merged page, or one on an address the listener will refuse
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	unspecified := mHost == "" || mHost == "0.0.0.0" || mHost == "::"
	if port == mPort && (unspecified || sameHost(u.Hostname(), mHost)) {
		return fmt.Errorf("--app-metrics-url %q: is the merged metrics page itself (--merged-metrics-addr %s)", raw, merged)
	}
	return nil
}

// sameHost reports whether URL host h names the listener host l: the same
// name, the same IP however written, or "localhost" for a loopback
// listener on 127.0.0.1 or ::1.
func sameHost(h, l string) bool {
	if strings.EqualFold(h, l) {
		return true
	}
	hip, lip := net.ParseIP(h), net.ParseIP(l)
	switch {
	case hip != nil && lip != nil:
		return hip.Equal(lip)
	case strings.EqualFold(h, "localhost") && lip != nil:
		return lip.Equal(net.IPv4(127, 0, 0, 1)) || lip.Equal(net.IPv6loopback)
	case strings.EqualFold(l, "localhost") && hip != nil:
		return hip.Equal(net.IPv4(127, 0, 0, 1)) || hip.Equal(net.IPv6loopback)
	}
	return false
}

// interceptionMode maps --interception to the node's INTERCEPTION_MODE:
// "none" (or empty, a router) to NONE, "redirect" to REDIRECT.
func interceptionMode(s string) (string, error) {
	switch strings.ToLower(s) {
	case "", "none":
		return xdsapi.InterceptionNone, nil
	case "redirect":
		return xdsapi.InterceptionRedirect, nil
	}
	return "", fmt.Errorf("--interception %q: must be none or redirect", s)
}

// parseLabels parses "k=v,k2=v2".
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels %q: %q: want key=value", s, kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// buildVersion is the module version loom-proxy was built at, or "dev" for
// a build from a working tree.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// defaultAddr is a metrics listen address: flag when set ("off": none),
// else ip:port, else none.
func defaultAddr(flag, ip string, port int) string {
	switch {
	case flag == "off":
		return ""
	case flag != "":
		return flag
	case ip != "" && port != 0:
		return fmt.Sprintf("%s:%d", ip, port)
	}
	return ""
}

// Command loomctl is Loom's CLI: it starts a local demo mesh, applies,
// deletes and validates Istio configuration, and shows the proxies' xDS
// sync status. See `loomctl --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
	"github.com/loom-mesh/loom/internal/local"
	"github.com/loom-mesh/loom/internal/loomctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		if !errors.Is(err, loomctl.ErrReported) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	defAddr := os.Getenv("LOOMD_ADDR")
	if defAddr == "" {
		defAddr = loomctl.DefaultAddr
	}
	var addr string
	root := &cobra.Command{
		Use:           "loomctl",
		Short:         "Loom's command line: local mesh, config and proxy status",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&addr, "loomd", defAddr, "loomd's monitoring/API address HOST:PORT (env LOOMD_ADDR)")
	client := func() *loomctl.Client { return loomctl.NewClient(addr, nil) }

	// Files come from -f (repeatable, comma-separated) and from arguments,
	// so both `-f a.yaml -f b.yaml` and `-f a.yaml b.yaml` work.
	var files []string
	fileFlag := func(c *cobra.Command) {
		c.Flags().StringSliceVarP(&files, "filename", "f", nil, "YAML file or directory (repeatable; arguments count too)")
		c.Args = cobra.ArbitraryArgs
		c.PreRunE = func(_ *cobra.Command, args []string) error {
			files = append(files, args...)
			if len(files) == 0 {
				return errors.New("no files: give -f FILE (or a directory)")
			}
			return nil
		}
	}

	apply := &cobra.Command{
		Use:   "apply -f FILE...",
		Short: "Create or update Istio resources in loomd",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return loomctl.ApplyFiles(cmd.Context(), client(), loomctl.OpApply, files, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fileFlag(apply)

	del := &cobra.Command{
		Use:   "delete -f FILE...",
		Short: "Delete Istio resources from loomd",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return loomctl.ApplyFiles(cmd.Context(), client(), loomctl.OpDelete, files, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fileFlag(del)

	var offline bool
	validate := &cobra.Command{
		Use:   "validate -f FILE...",
		Short: "Validate Istio resources, against the running mesh when loomd answers",
		Long: "Validate Istio resources. When loomd answers, each file is checked as if it were\n" +
			"applied to the running mesh (nothing is applied), so references to the mesh's\n" +
			"DestinationRules resolve. Otherwise, or with --offline, the files are checked\n" +
			"together on their own.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !offline {
				err := loomctl.ValidateAgainstMesh(cmd.Context(), client(), files, cmd.OutOrStdout())
				var ue *loomctl.UnreachableError
				if !errors.As(err, &ue) {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "loomd not reachable at %s: validating the files offline, on their own\n", addr)
			}
			return loomctl.ValidateCommand(files, cmd.OutOrStdout())
		},
	}
	fileFlag(validate)
	validate.Flags().BoolVar(&offline, "offline", false, "validate the files together without asking loomd")

	analyze := &cobra.Command{
		Use:   "analyze -f FILE...",
		Short: "Analyze Istio resources offline and print Istio's analyzer messages (IST0118 ...)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return loomctl.AnalyzeCommand(files, cmd.OutOrStdout())
		},
	}
	fileFlag(analyze)

	proxyStatus := &cobra.Command{
		Use:     "proxy-status",
		Aliases: []string{"ps"},
		Short:   "Show the xDS sync status of every proxy connected to loomd",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ss, err := client().Syncz(cmd.Context())
			if err != nil {
				return err
			}
			return loomctl.WriteProxyStatus(cmd.OutOrStdout(), ss, addr)
		},
	}

	var noBrowser bool
	dashboardCmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Print the URL of loomd's dashboard and open it in a browser",
		Long: "Ask loomd for the URL of its dashboard (the live service graph, services, workloads,\n" +
			"proxies and config), print it, and open it in the default browser when there is one.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return loomctl.Dashboard(cmd.Context(), client(), !noBrowser, loomctl.OpenBrowser, cmd.OutOrStdout())
		},
	}
	dashboardCmd.Flags().BoolVar(&noBrowser, "no-browser", false, "only print the URL")

	var tok struct {
		dataDir, namespace, serviceAccount, workload, out string
	}
	tokenCmd := &cobra.Command{Use: "token", Short: "Bootstrap tokens of local mode (how a workload's proxy proves its identity to loomd's CA)"}
	tokenCreate := &cobra.Command{
		Use:   "create --data-dir DIR --service-account SA --workload NAME --out FILE",
		Short: "Mint a workload's bootstrap token: write it to --out (0600) and register it in loomd's data directory",
		Long: "Mint a bootstrap token for one workload. The token goes to --out (mode 0600), which the\n" +
			"workload's loom-proxy reads (--token-file); its SHA-256 and the namespace and service account\n" +
			"it stands for go to DATA_DIR/tokens/NAMESPACE.WORKLOAD.json, which loomd reads. Minting again\n" +
			"for the same workload replaces (revokes) its old token; removing the registry file revokes it.\n" +
			"The token is never printed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := bootstraptoken.Binding{Namespace: tok.namespace, ServiceAccount: tok.serviceAccount, Workload: tok.workload}
			reg := bootstraptoken.RegistryDir(tok.dataDir)
			if err := bootstraptoken.Mint(reg, tok.out, b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token for %s/%s (workload %s) written to %s and registered in %s\n",
				b.Namespace, b.ServiceAccount, b.Workload, tok.out, reg)
			return nil
		},
	}
	tf := tokenCreate.Flags()
	tf.StringVar(&tok.dataDir, "data-dir", "", "loomd's --data-dir (required)")
	tf.StringVar(&tok.namespace, "namespace", "default", "the workload's namespace")
	tf.StringVar(&tok.serviceAccount, "service-account", "", "the workload's service account (required)")
	tf.StringVar(&tok.workload, "workload", "", "the workload's name, e.g. reviews-v1 (required)")
	tf.StringVar(&tok.out, "out", "", "file to write the token to, mode 0600 (required)")
	for _, f := range []string{"data-dir", "service-account", "workload", "out"} {
		if err := tokenCreate.MarkFlagRequired(f); err != nil {
			panic(err)
		}
	}
	tokenCmd.AddCommand(tokenCreate)

	var demo local.Options
	var logLevel string
	demoCmd := &cobra.Command{
		Use:   "demo",
		Short: "Run loomd, bookinfo and its sidecars and ingress gateway on loopback IPs (or in network namespaces)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			demo.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			demo.Out = cmd.OutOrStdout()
			rt, err := local.New(demo)
			if err != nil {
				return err
			}
			return rt.Run(cmd.Context())
		},
	}
	demoCmd.Flags().IntVar(&demo.IngressPort, "ingress-port", 8080, "port on 127.0.0.1 forwarded to the ingress gateway")
	demoCmd.Flags().StringVar(&demo.Subnet, "subnet", "127.0.0.0/24", "loopback /24 whose addresses the mesh uses")
	demoCmd.Flags().StringVar(&demo.BinDir, "bin-dir", "", "directory of loomd, loom-proxy and bookinfo (default: loomctl's directory, then PATH)")
	demoCmd.Flags().StringVar(&demo.ConfigDir, "config-dir", "", "loomd's config directory (default: a new temporary directory)")
	demoCmd.Flags().StringVar(&demo.LogsDir, "logs-dir", "", "directory of the processes' logs (default: beside a temporary config directory)")
	demoCmd.Flags().StringVar(&logLevel, "log-level", "warn", "loomctl's own log level")
	demoCmd.Flags().StringVar(&demo.Interception, "interception", local.InterceptionNone,
		"none: apps reach their sidecars through HTTP_PROXY, on loopback IPs; redirect (root only): a network namespace "+
			"per workload whose iptables rules send its traffic to its sidecar, as Istio's")
	demoCmd.Flags().StringVar(&demo.NetnsSubnet, "netns-subnet", local.DefaultNetnsSubnet, "IPv4 /24 of the network namespaces (--interception redirect)")
	demoCmd.Flags().StringVar(&demo.NetnsPrefix, "netns-prefix", local.DefaultNetnsPrefix,
		"prefix of the namespaces, veths and bridge (--interception redirect); leftovers with it are removed at start")

	root.AddCommand(apply, del, validate, analyze, proxyStatus, dashboardCmd, demoCmd, tokenCmd)
	return root
}

// Command bookinfo runs one service of the Bookinfo sample application:
//
//	bookinfo productpage|details|reviews|ratings --listen IP:9080 [--version v1|v2|v3] [--instance NAME]
//
// Outgoing calls (productpage to details and reviews, reviews v2/v3 to
// ratings) go to http://SERVICE:9080 through HTTP_PROXY, the workload's
// sidecar in local mode. Logs go to stderr. SIGTERM or SIGINT stops it
// gracefully.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/loom-mesh/loom/samples/bookinfo"
)

type flags struct {
	listen     string
	version    string
	instance   string
	logLevel   string
	detailsURL string
	reviewsURL string
	ratingsURL string
	cluster    string
}

func main() {
	if err := newRootCmd().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var f flags
	root := &cobra.Command{
		Use:          "bookinfo",
		Short:        "Istio's Bookinfo sample application, one service per process",
		SilenceUsage: true,
	}
	root.PersistentFlags().StringVar(&f.listen, "listen", "127.0.0.1:9080", "address to serve on, IP:PORT")
	root.PersistentFlags().StringVar(&f.version, "version", "v1", "service version: v1, v2 or v3 (reviews)")
	root.PersistentFlags().StringVar(&f.instance, "instance", "", "instance name reported by reviews as podname (default SERVICE-VERSION-xxxxx)")
	root.PersistentFlags().StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&f.detailsURL, "details-url", "http://details:9080", "base URL of details (productpage)")
	root.PersistentFlags().StringVar(&f.reviewsURL, "reviews-url", "http://reviews:9080", "base URL of reviews (productpage)")
	root.PersistentFlags().StringVar(&f.ratingsURL, "ratings-url", "http://ratings:9080", "base URL of ratings (productpage, reviews)")
	root.PersistentFlags().StringVar(&f.cluster, "cluster-name", "", `cluster name reported by reviews as clustername (default "null", as Istio's)`)

	for _, svc := range bookinfo.Services {
		root.AddCommand(&cobra.Command{
			Use:   svc,
			Short: "run the " + svc + " service",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return run(cmd.Context(), svc, f)
			},
		})
	}
	return root
}

func run(ctx context.Context, svc string, f flags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", f.logLevel, err)
	}
	instance := f.instance
	if instance == "" {
		instance = bookinfo.DefaultInstance(svc, f.version)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).
		With("service", svc, "version", f.version, "instance", instance)

	h, err := newHandler(svc, instance, f, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", f.listen, err)
	}
	return bookinfo.Serve(ctx, ln, h, log)
}

func newHandler(svc, instance string, f flags, log *slog.Logger) (http.Handler, error) {
	switch svc {
	case "productpage":
		return bookinfo.NewProductPage(bookinfo.ProductPageOptions{
			DetailsURL: f.detailsURL, ReviewsURL: f.reviewsURL, RatingsURL: f.ratingsURL, Logger: log,
		})
	case "details":
		return bookinfo.NewDetails(bookinfo.DetailsOptions{Logger: log})
	case "ratings":
		return bookinfo.NewRatings(bookinfo.RatingsOptions{Logger: log})
	case "reviews":
		return bookinfo.NewReviews(bookinfo.ReviewsOptions{
			Version: f.version, Instance: instance, ClusterName: f.cluster, RatingsURL: f.ratingsURL, Logger: log,
		})
	}
	return nil, fmt.Errorf("unknown service %q", svc)
}

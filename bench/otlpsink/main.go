// Command otlpsink is the trace collector of `make bench`'s telemetry
// variant: the real OTLP TraceService (go.opentelemetry.io/proto/otlp)
// over gRPC on a loopback address, which counts the spans it receives and
// discards them, so the proxy's exporter does the work it does against a
// real collector while the collector's own cost stays out of the proxy's
// measured process tree (bench/run.sh starts it beside the harness and
// stops it by PID). It exits on SIGTERM or SIGINT, or after -max-duration
// at the latest, and prints the counts on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

type sink struct {
	collectortrace.UnimplementedTraceServiceServer
	exports, spans atomic.Int64
}

// Export implements the OTLP TraceService: count, discard, answer OK.
func (s *sink) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	s.exports.Add(1)
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			s.spans.Add(int64(len(ss.GetSpans())))
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:4317", "loopback address to serve OTLP/gRPC on")
	maxDur := flag.Duration("max-duration", 2*time.Hour, "exit after this long even if never stopped (a bound, not a schedule)")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !(strings.HasPrefix(host, "127.") || host == "::1" || host == "localhost") {
		fmt.Fprintf(os.Stderr, "otlpsink: -addr %q must be a loopback ip:port\n", *addr)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "otlpsink:", err)
		os.Exit(1)
	}
	s := &sink{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, s)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		select {
		case <-ctx.Done():
		case <-time.After(*maxDur):
		}
		srv.Stop()
	}()
	fmt.Fprintf(os.Stderr, "otlpsink: serving OTLP/gRPC on %s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "otlpsink:", err)
	}
	fmt.Fprintf(os.Stderr, "otlpsink: %d exports, %d spans\n", s.exports.Load(), s.spans.Load())
}

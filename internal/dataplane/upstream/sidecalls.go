package upstream

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// The cluster manager serves filters' own calls to clusters (ext_authz's
// Check) as filter.Upstreams, with the same load balancing, breakers and
// outlier detection as routed requests.
var _ filter.Upstreams = (*ClusterManager)(nil)

// cluster returns the config of cluster name as of the latest Update.
func (m *ClusterManager) cluster(name string) (*config.Cluster, *clusterState, error) {
	st := (*m.states.Load())[name]
	if st == nil {
		return nil, nil, fmt.Errorf("cluster %q: unknown", name)
	}
	c := st.cfg.Load()
	if c == nil {
		return nil, nil, fmt.Errorf("cluster %q: not in the current generation", name)
	}
	return c, st, nil
}

// RoundTrip implements filter.Upstreams: it picks an endpoint of cluster
// as the router does and sends req there. The endpoint's attempt ends
// when the response body is closed.
func (m *ClusterManager) RoundTrip(cluster string, req *http.Request) (*http.Response, error) {
	c, _, err := m.cluster(cluster)
	if err != nil {
		return nil, err
	}
	h, err := m.Pick(c, PickOptions{Authority: req.Host})
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cluster, err)
	}
	req.URL.Scheme, req.URL.Host = "http", h.Addr
	resp, err := h.RT.RoundTrip(req)
	if err != nil {
		h.Done(Result{LocalOrigin: true})
		return nil, err
	}
	resp.Body = &doneBody{ReadCloser: resp.Body, done: func() { h.Done(Result{Status: resp.StatusCode}) }}
	return resp, nil
}

// doneBody ends a Host's attempt when the body is closed.
type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// grpcBackoff is how soon a filter's gRPC connection redials its cluster
// after a failure: quickly, so that a service that comes back (the rate
// limit service after a restart) is used within seconds; grpc-go's
// default waits up to two minutes.
var grpcBackoff = backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second}

// GRPC implements filter.Upstreams. The connection is made on first use
// and kept in the cluster's state, so it survives generations; it is
// closed when the cluster is forgotten or the manager closed. Its
// connections are HTTP/2 over each endpoint's transport socket (TLS when
// the cluster's transport_socket_matches say so).
func (m *ClusterManager) GRPC(cluster, authority string) (grpc.ClientConnInterface, error) {
	if _, _, err := m.cluster(cluster); err != nil {
		return nil, err
	}
	st := m.state(cluster)
	st.grpcMu.Lock()
	defer st.grpcMu.Unlock()
	if st.grpcClosed {
		return nil, fmt.Errorf("cluster %q: closed", cluster)
	}
	if st.grpc != nil {
		return st.grpc, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+cluster,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcBackoff, MinConnectTimeout: time.Second}),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return m.dialCluster(ctx, cluster) }))
	if err != nil {
		return nil, fmt.Errorf("cluster %q: grpc: %w", cluster, err)
	}
	st.grpc = cc
	return cc, nil
}

// dialCluster connects to an endpoint of cluster picked by its balancer.
// The pick is one attempt, done when the connection is made or fails.
func (m *ClusterManager) dialCluster(ctx context.Context, cluster string) (net.Conn, error) {
	c, _, err := m.cluster(cluster)
	if err != nil {
		return nil, err
	}
	h, err := m.Pick(c, PickOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cluster, err)
	}
	conn, err := h.Dial(ctx) // over the endpoint's transport socket
	h.dialDone(err)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// closeGRPC closes the cluster's gRPC connection and refuses new ones.
func (st *clusterState) closeGRPC() {
	st.grpcMu.Lock()
	cc := st.grpc
	st.grpc, st.grpcClosed = nil, true
	st.grpcMu.Unlock()
	if cc != nil {
		_ = cc.Close()
	}
}

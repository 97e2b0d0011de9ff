package dashboard

import (
	"math"
	"sort"
	"strings"
)

// Node kinds of the graph.
const (
	nodeWorkload = "workload"
	nodeService  = "service" // a destination whose workload is unknown
	nodeUnknown  = "unknown" // callers outside the mesh
)

// GraphNode is a node of the service graph: a workload, grouped by app
// and version.
type GraphNode struct {
	ID        string `json:"id"`   // "wl:NS/NAME", "svc:HOST" or "unknown"
	Kind      string `json:"kind"` // workload, service or unknown
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	App       string `json:"app,omitempty"`
	Version   string `json:"version,omitempty"`
	// Group is the node's app group, "app:NS/APP"; "" for unknown.
	Group string `json:"group,omitempty"`
	// Idle is true when no edge touches the node in the window.
	Idle bool `json:"idle"`
}

// GraphEdge is an edge of the service graph with its traffic.
type GraphEdge struct {
	ID       string `json:"id"`
	Source   string `json:"source"` // node IDs
	Target   string `json:"target"`
	Service  string `json:"service"` // destination_service
	Protocol string `json:"protocol,omitempty"`
	// RPS is requests per second; ErrorRate the share (0 to 1) of them
	// that failed (5xx or no response).
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"error_rate"`
	// P95Ms is the 95th percentile latency in milliseconds; null when
	// unknown.
	P95Ms *float64 `json:"p95_ms"`
	// MTLS is the share (0 to 1) of requests over mutual TLS, as the
	// destination reported; null when no destination reported.
	MTLS *float64 `json:"mtls"`
	// TCPBps is TCP bytes per second, both directions.
	TCPBps float64 `json:"tcp_bps,omitempty"`
	// State is "error" when any request failed, else "ok".
	State string `json:"state"`
}

// Graph is the body of /api/graph.
type Graph struct {
	// Source is the traffic source: "scrape" or "prometheus".
	Source        string      `json:"source"`
	WindowSeconds float64     `json:"window_seconds"`
	Timestamp     int64       `json:"timestamp"` // Unix milliseconds
	Nodes         []GraphNode `json:"nodes"`
	Edges         []GraphEdge `json:"edges"`
	// Warnings say why the graph may be incomplete: unreachable proxies,
	// a failing Prometheus.
	Warnings []string `json:"warnings"`
}

func num(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func workloadNodeID(ns, name string) string { return "wl:" + ns + "/" + name }

// nodeOf is the graph node of one end of an edge.
func nodeOf(w Workload, service string) GraphNode {
	switch {
	case w.known():
		app := w.App
		if app == "" || app == unknown {
			app = w.Name
		}
		return GraphNode{ID: workloadNodeID(w.Namespace, w.Name), Kind: nodeWorkload, Name: w.Name, Namespace: w.Namespace,
			App: app, Version: w.Version, Group: "app:" + w.Namespace + "/" + app}
	case service != "" && service != unknown:
		name, rest, _ := strings.Cut(service, ".")
		ns, _, _ := strings.Cut(rest, ".")
		return GraphNode{ID: "svc:" + service, Kind: nodeService, Name: name, Namespace: ns, App: name,
			Group: "app:" + ns + "/" + name}
	}
	return GraphNode{ID: nodeUnknown, Kind: nodeUnknown, Name: unknown}
}

// buildGraph joins the edges' traffic with the idle workloads (known from
// the config and the connected proxies) into the graph.
func buildGraph(edges []EdgeStats, idle []WorkloadView) ([]GraphNode, []GraphEdge) {
	nodes := map[string]GraphNode{}
	var ges []GraphEdge
	for _, e := range edges {
		src := nodeOf(e.Source, "")
		dst := nodeOf(e.Dest, e.Service)
		nodes[src.ID], nodes[dst.ID] = src, dst
		ge := GraphEdge{ID: src.ID + ">" + dst.ID + ">" + e.Service, Source: src.ID, Target: dst.ID, Service: e.Service,
			Protocol: e.Protocol, RPS: e.RequestRate, P95Ms: num(e.P95), MTLS: num(e.MTLS), TCPBps: e.TCPBytesRate, State: "ok"}
		if e.RequestRate > 0 {
			ge.ErrorRate = e.ErrorRate / e.RequestRate
		}
		if e.ErrorRate > 0 {
			ge.State = "error"
		}
		ges = append(ges, ge)
	}
	for _, w := range idle {
		n := nodeOf(Workload{Name: w.Name, Namespace: w.Namespace, App: w.App, Version: w.Version}, "")
		if _, ok := nodes[n.ID]; !ok {
			n.Idle = true
			nodes[n.ID] = n
		}
	}
	out := make([]GraphNode, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	sort.Slice(ges, func(i, j int) bool { return ges[i].ID < ges[j].ID })
	if ges == nil {
		ges = []GraphEdge{}
	}
	return out, ges
}

// Package dashboard is loomd's web dashboard (Kiali's role): a live service
// graph, a page per service and per workload, the proxies' xDS sync state
// and the config with its validation status. loomd serves it on
// --dashboard-addr (127.0.0.1:20001); `loomctl dashboard` opens it.
//
// It sits beside the control plane's data flow and only reads: the config
// store (ConfigSource) and a push context built from its snapshot for what
// applies to a service or workload, the xDS server's sync state
// (ProxySource), and the mesh's traffic (TrafficSource) in Istio's
// standard metrics (istio_requests_total, istio_request_duration_milliseconds,
// istio_tcp_*_bytes_total with their source_*, destination_*,
// response_code and connection_security_policy labels). Traffic comes from
// one of:
//
//   - Scraper, the embedded default: loomd scrapes every connected proxy's
//     Prometheus endpoint (IP:15090/stats/prometheus, else the admin port's
//     IP:15000/stats/prometheus) every few seconds with a timeout, keeps
//     the increases between scrapes per edge in a ring bounded in time, and
//     answers rates, error shares and histogram_quantile p95s from it.
//   - Prometheus: with loomd --prometheus-url, the same answers come from
//     a Prometheus server's HTTP API, with the PromQL Kiali uses
//     (sum(rate(istio_requests_total{reporter="source"}[1m])) by (...)).
//
// Edges are as the source proxy reports them (reporter="source"); mutual
// TLS is the destination's view (reporter="destination"), as Istio sets
// connection_security_policy only there; an edge whose caller is outside
// the mesh is the destination's. A request failed when its response_code
// is 5xx or 0.
//
// # The web page
//
// GET / serves the page, GET /dist/... its bundle: JavaScript and CSS built
// from ui/ with npm and esbuild by `make ui` into web/dist and embedded with
// go:embed. Nothing is loaded from another origin, so it works offline.
// Without the bundle (a fresh clone built by plain `go build`), / says how
// to build it and the API below works the same.
//
// # JSON API
//
// Every endpoint is GET, answers application/json, and is read-only.
// Errors are {"error": "..."} with 400 (a bad parameter) or 404. Durations
// in parameters are Go durations ("90s", "5m") or seconds. A Host header
// that is not an IP address, localhost or an allowed name gets 421.
//
//	/api/graph?window=1m
//	    The service graph over the window (1s to 1h, default 1m):
//	    {source, window_seconds, timestamp (Unix ms), warnings [string],
//	     nodes [{id, kind (workload|service|unknown), name, namespace, app,
//	             version, group ("app:NS/APP"), idle}],
//	     edges [{id, source, target (node ids), service, protocol, rps,
//	             error_rate (0-1), p95_ms|null, mtls (0-1)|null, tcp_bps,
//	             state (ok|error)}]}
//	    Node ids are "wl:NS/NAME" for workloads, "svc:HOST" for a service
//	    whose workload the caller did not know (a fault abort), "unknown"
//	    for callers outside the mesh. Idle workloads (no traffic) are
//	    nodes too.
//	/api/services
//	    [{host, name, namespace, ports [{number, name, protocol}],
//	      workloads [name], warnings [string]}]
//	/api/services/{namespace}/{host}?span=10m&step=15s
//	    One service, plus config [{kind, namespace, name, source, why}]
//	    (the ServiceEntry, VirtualServices, DestinationRules and the
//	    policies of its workloads) and traffic {span_seconds, step_seconds, inbound,
//	    outbound: [{t (Unix ms), rps, errors (per second), p95_ms|null}],
//	    error?}.
//	/api/workloads
//	    [{name, namespace, app, version, address, labels, services [host],
//	      proxy (as /api/proxies)|absent, warnings [string]}]
//	/api/workloads/{namespace}/{name}?span=10m&step=15s
//	    One workload, plus config and traffic as for a service.
//	/api/proxies
//	    [{id, name, type, workload, namespace, ip, version, cluster, synced,
//	      types [{type, state (SYNCED|NOT SENT|STALE|NACKED), sent, acked,
//	              nack_error}],
//	      connected_at, last_ack, config_age_seconds, scrape {id, url,
//	      error, last_success, series, dropped, duration_ns}}]
//	/api/config
//	    {version, resources [{kind, api_version, namespace, name, source,
//	      status (valid|invalid), serving, errors [string]}]}: every resource
//	    of the serving config and every resource the config directory's
//	    errors name.
//
// It must not import internal/dataplane.
package dashboard

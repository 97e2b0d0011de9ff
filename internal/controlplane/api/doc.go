// Package api is loomd's HTTP monitoring and config API on the monitoring
// port (15014): proxy sync status (/debug/syncz, as istioctl
// proxy-status reads it), readiness (/ready), the serving config
// (/debug/configz, /api/v1/config), the endpoints loomctl uses to
// validate, apply and delete Istio resources (/api/v1/validate, /apply,
// /delete), the dashboard's URL (/api/v1/dashboard) and, given a
// registry, the control plane's Prometheus metrics (/metrics).
//
// The API has no authentication; it listens on loopback. So that a web
// page cannot use the user's browser against it, a request whose Origin
// names another host gets 403, and validate, apply and delete take only a
// YAML Content-Type (415 otherwise), which no HTML form can send.
//
// It is the one place where config store errors become HTTP status codes.
// It must not import internal/dataplane.
package api

// Package loomctl is the library behind the loomctl command: a client for
// loomd's HTTP API (apply, delete, validate, /debug/syncz), offline
// validation of Istio YAML files, and the rendering of proxy-status and
// apply results in istioctl's and kubectl's formats.
//
// It sits outside both planes: it talks to loomd over HTTP only. It may
// import internal/controlplane/config and .../validation (to validate
// offline) and internal/xdsapi; it must not import internal/dataplane.
package loomctl

// Package validation checks Istio configuration resources the way Istio's
// Galley and validating webhook do (pkg/config/validation), and adds the
// cross-resource checks a whole config set needs: a VirtualService subset
// must exist in a DestinationRule for its host, a delegate must exist, have
// no hosts, be exported to its root's namespace and never lead back to it,
// and no key may be defined twice.
//
// It also refuses, with the message Unsupported, the fields in Istio's
// schema that the translator does not serve yet and whose absence would
// change what happens to a request (tls routes, TLS
// gateway servers, a fault's http2Error or exponentialDelay, ...), and
// retryOn conditions the Loom proxy does not know, which it would NACK.
//
// Every problem is a *config.Error carrying the resource's source, key and
// the field path within it ("spec.http[0].route[1].weight"), so a user can
// find the line to fix.
//
// It sits between the config sources and the Store: the Store calls
// ValidateAll on every candidate set before it publishes a Snapshot. It
// imports only internal/controlplane/config and istio.io/api; it must not
// import internal/dataplane, xDS or client-go.
package validation

package ca

import (
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// WorkloadID is Istio's SPIFFE ID of a workload,
// spiffe://TD/ns/NAMESPACE/sa/SERVICE_ACCOUNT. It fails when a name is
// empty or holds characters a SPIFFE path segment may not.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if namespace == "" || serviceAccount == "" {
		return spiffeid.ID{}, fmt.Errorf("workload identity: namespace %q and service account %q must both be set", namespace, serviceAccount)
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("workload identity ns %q sa %q: %w", namespace, serviceAccount, err)
	}
	return id, nil
}

// ParseWorkloadID splits an Istio workload SPIFFE ID into its namespace and
// service account. Any other path shape is an error.
func ParseWorkloadID(id spiffeid.ID) (namespace, serviceAccount string, err error) {
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" || seg[1] == "" || seg[3] == "" {
		return "", "", fmt.Errorf("SPIFFE ID %s: path must be /ns/NAMESPACE/sa/SERVICE_ACCOUNT", id)
	}
	return seg[1], seg[3], nil
}

// CheckNodeIdentity checks that the workload whose verified client
// certificate is leaf may open an xDS stream as a node of namespace and
// serviceAccount (its node metadata), as Istio's checkConnectionIdentity
// does: the certificate's SPIFFE ID must be a workload ID whose namespace
// equals namespace (when namespace is set) and whose service account equals
// serviceAccount (when set). The trust domain is not compared (TLS already
// checked that the certificate chains to the CA's roots). The error says
// which identity did not match.
func CheckNodeIdentity(leaf *x509.Certificate, namespace, serviceAccount string) error {
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	ns, sa, err := ParseWorkloadID(id)
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	if namespace != "" && ns != namespace {
		return fmt.Errorf("client certificate identity %s: namespace %q is not the node's %q", id, ns, namespace)
	}
	if serviceAccount != "" && sa != serviceAccount {
		return fmt.Errorf("client certificate identity %s: service account %q is not the node's %q", id, sa, serviceAccount)
	}
	return nil
}

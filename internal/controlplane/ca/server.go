package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// Caller is an authenticated client of the CSR API: the only identity it
// may get a certificate for is spiffe://TD/ns/Namespace/sa/ServiceAccount.
type Caller struct {
	Namespace      string
	ServiceAccount string
	// Via says how the caller was authenticated, for logs ("bootstrap
	// token default.reviews-v1"). It never holds a credential.
	Via string
}

// ErrUnauthenticated is wrapped by an Authenticator's error when the caller
// presented no credential, or one it does not accept.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticator says who calls the CA. TokenAuthenticator is local mode's;
// a Kubernetes TokenReview authenticator is the seam for another issue.
// Authenticate must be safe for concurrent use, must not block for long,
// and its errors must never hold the credential.
type Authenticator interface {
	// Authenticate returns the caller of the gRPC request whose context is
	// ctx (metadata, peer), or an error wrapping ErrUnauthenticated.
	Authenticate(ctx context.Context) (Caller, error)
}

// Server implements Istio's IstioCertificateService (istio.v1.auth,
// istio.io/api security/v1alpha1) on top of a CA. Register it on the gRPC
// server of loomd's TLS port (15012). Safe for concurrent use.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer
	ca   *CA
	auth Authenticator
	log  *slog.Logger
}

// NewServer returns the CSR service of c, authenticating callers with
// auth. A nil log discards.
func NewServer(c *CA, auth Authenticator, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{ca: c, auth: auth, log: log.With("component", "ca-server")}
}

// Register adds the service to gs.
func (s *Server) Register(gs *grpc.Server) { pb.RegisterIstioCertificateServiceServer(gs, s) }

// CreateCertificate signs the request's CSR for the caller's identity.
//
// Errors, each mapped here and nowhere else: codes.Unauthenticated when
// the Authenticator refuses the caller; codes.InvalidArgument for a CSR that
// does not parse (or whose signature or key is refused) and for a
// validity_duration above the CA's maximum; codes.PermissionDenied when the
// CSR names a URI SAN other than the caller's SPIFFE ID (the proto requires
// the CA to check that the caller may hold every SAN of the CSR); and
// codes.Internal when signing fails. The CSR's other names (DNS, IP, email)
// are never copied: as Istio's CA, the certificate's only name is the
// caller's identity. validity_duration 0 or less means the CA's default
// TTL. The response's cert_chain is the leaf, the intermediates and the
// roots, one certificate per element.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	s.ca.csrs.Add(1)
	from := peerAddr(ctx)
	caller, err := s.auth.Authenticate(ctx)
	if err != nil {
		s.ca.authnFailures.Add(1)
		s.log.Warn("CSR refused: caller not authenticated", "peer", from, "err", err)
		return nil, status.Error(codes.Unauthenticated, "request authenticate failure")
	}
	id, err := WorkloadID(s.ca.td, caller.Namespace, caller.ServiceAccount)
	if err != nil {
		s.ca.signErrors.Add(1)
		s.log.Error("CSR refused: the caller's binding is not a workload identity", "peer", from, "via", caller.Via, "err", err)
		return nil, status.Error(codes.Internal, "the caller's identity is invalid")
	}
	csr, err := ParseCSR([]byte(req.GetCsr()))
	if err != nil {
		s.ca.csrErrors.Add(1)
		s.log.Warn("CSR refused", "peer", from, "identity", id.String(), "err", err)
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	for _, u := range csr.URIs {
		if u.String() != id.String() {
			s.ca.csrErrors.Add(1)
			s.log.Warn("CSR refused: it asks for another identity", "peer", from, "via", caller.Via,
				"identity", id.String(), "requested", u.String())
			return nil, status.Errorf(codes.PermissionDenied, "CSR asks for %s: the caller may only have %s", u, id)
		}
	}
	ttl := time.Duration(0)
	if v := req.GetValidityDuration(); v > 0 {
		if v > int64(math.MaxInt64/time.Second) {
			s.ca.signErrors.Add(1)
			return nil, status.Errorf(codes.InvalidArgument, "%v: validity_duration %d s is out of range", ErrInvalidTTL, v)
		}
		ttl = time.Duration(v) * time.Second
	}
	cert, err := s.ca.Sign(csr, id, ttl)
	if err != nil {
		if errors.Is(err, ErrInvalidTTL) {
			return nil, status.Errorf(codes.InvalidArgument, "%v", err)
		}
		s.log.Error("CSR signing failed", "identity", id.String(), "err", err)
		return nil, status.Error(codes.Internal, fmt.Sprintf("CSR signing error: %v", err))
	}
	s.log.Debug("certificate issued", "identity", id.String(), "via", caller.Via, "peer", from,
		"serial", cert.Leaf.SerialNumber.Text(16), "not_after", cert.Leaf.NotAfter.UTC())
	return &pb.IstioCertificateResponse{CertChain: cert.Chain}, nil
}

// peerAddr is the caller's address, for logs.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

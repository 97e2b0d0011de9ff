package admin

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// certs serves Envoy's /certs: an envoy.admin.v3.Certificates as JSON, one
// Certificate per secret of the Store in name order, its cert_chain for a
// certificate secret ("default") and its ca_cert for a trust bundle
// ("ROOTCA"). Each CertificateDetails' path is the secret's name (Envoy
// prints a file path, or "<inline>"). Zero values are printed, as Envoy
// does (days_until_expiration 0 in a certificate's last day). Private keys
// are never read.
func (s *Server) certs(w http.ResponseWriter, _ *http.Request) {
	out := &adminv3.Certificates{}
	if st := s.opts.Secrets; st != nil {
		names := st.Names()
		slices.Sort(names)
		now := time.Now()
		for _, n := range names {
			sec := st.Get(n)
			if sec == nil {
				continue
			}
			c := &adminv3.Certificate{}
			if sec.Certificate != nil {
				for _, der := range sec.Certificate.Certificate {
					x, err := x509.ParseCertificate(der)
					if err != nil {
						continue
					}
					c.CertChain = append(c.CertChain, certDetails(n, x, now))
				}
			}
			for rest := sec.RootsPEM; ; {
				var block *pem.Block
				block, rest = pem.Decode(rest)
				if block == nil {
					break
				}
				if x, err := x509.ParseCertificate(block.Bytes); err == nil {
					c.CaCert = append(c.CaCert, certDetails(n, x, now))
				}
			}
			out.Certificates = append(out.Certificates, c)
		}
	}
	b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true, EmitDefaultValues: true}.Marshal(out)
	if err != nil {
		http.Error(w, fmt.Sprintf("certs: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// certDetails is Envoy's CertificateDetails of c, a certificate of the
// secret named name.
func certDetails(name string, c *x509.Certificate, now time.Time) *adminv3.CertificateDetails {
	d := &adminv3.CertificateDetails{
		Path:           name,
		SerialNumber:   c.SerialNumber.Text(16),
		ValidFrom:      timestamppb.New(c.NotBefore),
		ExpirationTime: timestamppb.New(c.NotAfter),
	}
	if left := c.NotAfter.Sub(now); left > 0 {
		d.DaysUntilExpiration = uint64(left / (24 * time.Hour))
	}
	for _, u := range c.URIs {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Uri{Uri: u.String()}})
	}
	for _, n := range c.DNSNames {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Dns{Dns: n}})
	}
	for _, ip := range c.IPAddresses {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_IpAddress{IpAddress: ip.String()}})
	}
	return d
}

// agent serves Options.AgentStatus as JSON.
func (s *Server) agent(w http.ResponseWriter, _ *http.Request) {
	b, err := json.MarshalIndent(s.opts.AgentStatus(), "", "  ")
	if err != nil {
		http.Error(w, fmt.Sprintf("agent status: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

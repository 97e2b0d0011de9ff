package config

import (
	"encoding/pem"
	"fmt"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loom-mesh/loom/internal/dataplane/secret"
)

// RedactedKey replaces private keys in /config_dump, as Envoy's does.
const RedactedKey = "[redacted]"

// BuildSecret validates an envoy.extensions.transport_sockets.tls.v3.Secret
// received over ADS into its runtime form, named s.name: a tls_certificate
// (certificate_chain and private_key) or a validation_context (trusted_ca
// only: SAN matchers belong in the TLS context's default validation
// context). Errors name the field, as `secret "name": tls_certificate.private_key: ...`.
func BuildSecret(s *tlsv3.Secret) (*secret.Secret, error) {
	name := s.GetName()
	if name == "" {
		return nil, fmt.Errorf("secret: name: must not be empty")
	}
	sec, err := buildSecret(s)
	if err == nil {
		err = envoyValidate(s)
	}
	if err != nil {
		return nil, resErr("secret", name, err)
	}
	sec.Name = name
	return sec, nil
}

func buildSecret(s *tlsv3.Secret) (*secret.Secret, error) {
	if err := onlyFields("", s, "name", "tls_certificate", "validation_context"); err != nil {
		return nil, err
	}
	switch t := s.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		sec, err := buildInlineCertificate(t.TlsCertificate)
		if err != nil {
			return nil, under("tls_certificate", err)
		}
		return sec, nil
	case *tlsv3.Secret_ValidationContext:
		vc := t.ValidationContext
		if err := onlyFields("validation_context", vc, "trusted_ca"); err != nil {
			return nil, err
		}
		b, err := dataSource("validation_context.trusted_ca", vc.GetTrustedCa())
		if err != nil {
			return nil, err
		}
		sec, err := secret.ParseRoots("", b)
		if err != nil {
			return nil, ferr("validation_context.trusted_ca", "%v", err)
		}
		return sec, nil
	}
	return nil, ferr("type", "must be tls_certificate or validation_context")
}

// SecretsConfigDump renders secs as Envoy's admin SecretsConfigDump: each
// as a dynamic active secret with its version and update time, a
// certificate's chain in full and its private key replaced by
// RedactedKey.
func SecretsConfigDump(secs []*secret.Secret) *adminv3.SecretsConfigDump {
	d := &adminv3.SecretsConfigDump{}
	for _, s := range secs {
		m := &tlsv3.Secret{Name: s.Name}
		switch {
		case s.Certificate != nil:
			chain := s.CertificatePEM
			if chain == nil {
				for _, der := range s.Certificate.Certificate {
					chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
				}
			}
			m.Type = &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: chain}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: RedactedKey}},
			}}
		case s.Roots != nil:
			m.Type = &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: s.RootsPEM}},
			}}
		}
		a, err := anypb.New(m)
		if err != nil {
			continue // a Secret always marshals
		}
		d.DynamicActiveSecrets = append(d.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
			Name: s.Name, VersionInfo: s.Version, LastUpdated: timestamppb.New(s.Updated), Secret: a,
		})
	}
	return d
}

// redacted returns a copy of m with every TlsCertificate's private_key and
// password, also inside Any fields (typed_config of transport sockets),
// replaced by RedactedKey, as Envoy's /config_dump hides its sensitive
// fields.
func redacted(m proto.Message) proto.Message {
	c := proto.Clone(m)
	redactMessage(c.ProtoReflect())
	return c
}

func redactMessage(r protoreflect.Message) {
	switch v := r.Interface().(type) {
	case *tlsv3.TlsCertificate:
		red := &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: RedactedKey}}
		if v.GetPrivateKey() != nil {
			v.PrivateKey = red
		}
		if v.GetPassword() != nil {
			v.Password = proto.Clone(red).(*corev3.DataSource)
		}
		return
	case *anypb.Any:
		inner, err := v.UnmarshalNew()
		if err != nil {
			return // a type this binary does not know holds no key it parsed
		}
		redactMessage(inner.ProtoReflect())
		if b, err := (proto.MarshalOptions{Deterministic: true}).Marshal(inner); err == nil {
			v.Value = b
		}
		return
	}
	r.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				redactMessage(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			val.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				redactMessage(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			redactMessage(val.Message())
		}
		return true
	})
}

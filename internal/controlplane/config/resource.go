package config

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// Kind is a resource kind, as written in YAML: "VirtualService".
type Kind string

// The kinds Loom reads. All networking.istio.io versions (v1, v1beta1,
// v1alpha3) decode into the same istio.io/api v1alpha3 types, as in Istio.
const (
	KindVirtualService  Kind = "VirtualService"
	KindDestinationRule Kind = "DestinationRule"
	KindGateway         Kind = "Gateway"
	KindServiceEntry    Kind = "ServiceEntry"
	KindWorkloadEntry   Kind = "WorkloadEntry"
	KindSidecar         Kind = "Sidecar"
	// KindEnvoyFilter is served in v1alpha3 only, as in Istio.
	KindEnvoyFilter Kind = "EnvoyFilter"
	// KindRateLimitPolicy is Loom's own (group loom.dev, v1alpha1): Istio
	// has no rate limit resource.
	KindRateLimitPolicy Kind = "RateLimitPolicy"
)

// The security.istio.io kinds. Both versions (v1, v1beta1) decode into the
// istio.io/api security/v1beta1 types, as in Istio.
const (
	KindAuthorizationPolicy   Kind = "AuthorizationPolicy"
	KindPeerAuthentication    Kind = "PeerAuthentication"
	KindRequestAuthentication Kind = "RequestAuthentication"
)

// KindTelemetry is Istio's Telemetry (telemetry.istio.io v1 and
// v1alpha1, both decoded into the istio.io/api telemetry/v1alpha1 type,
// which v1 aliases, as in Istio).
const KindTelemetry Kind = "Telemetry"

// GroupTelemetry is the API group of the Telemetry kind.
const GroupTelemetry = "telemetry.istio.io"

// KindSecret is Kubernetes' core/v1 Secret (apiVersion v1), read from the
// config directory in local mode for Gateway credentialName. Its body is a
// *loomv1alpha1.KubernetesSecret; its values are secret.
const KindSecret Kind = "Secret"

// KindService is Kubernetes' core/v1 Service (apiVersion v1), read from
// the config directory as a registry source beside ServiceEntry: the
// registry makes it the service NAME.NAMESPACE.svc.cluster.local, its
// protocols chosen from appProtocol and port names as Istio's kube
// registry does. Its body is a *loomv1alpha1.KubernetesService.
const KindService Kind = "Service"

// API groups of the kinds.
const (
	// GroupNetworking is the API group of Istio's networking kinds.
	GroupNetworking = "networking.istio.io"
	// GroupLoom is the API group of Loom's own kinds.
	GroupLoom = "loom.dev"
)

// GroupSecurity is the API group of the security kinds.
const GroupSecurity = "security.istio.io"

// kindInfo says which API versions a kind is served in and how to make an
// empty spec of it.
type kindInfo struct {
	group    string
	versions []string
	newSpec  func() proto.Message
}

var kinds = map[Kind]kindInfo{
	KindVirtualService:  {GroupNetworking, networkingVersions, func() proto.Message { return &networking.VirtualService{} }},
	KindDestinationRule: {GroupNetworking, networkingVersions, func() proto.Message { return &networking.DestinationRule{} }},
	KindGateway:         {GroupNetworking, networkingVersions, func() proto.Message { return &networking.Gateway{} }},
	KindServiceEntry:    {GroupNetworking, networkingVersions, func() proto.Message { return &networking.ServiceEntry{} }},
	KindWorkloadEntry:   {GroupNetworking, networkingVersions, func() proto.Message { return &networking.WorkloadEntry{} }},
	KindSidecar:         {GroupNetworking, networkingVersions, func() proto.Message { return &networking.Sidecar{} }},
	KindEnvoyFilter:     {GroupNetworking, []string{"v1alpha3"}, func() proto.Message { return &networking.EnvoyFilter{} }},

	// security.istio.io, alphabetical.
	KindAuthorizationPolicy:   {GroupSecurity, securityVersions, func() proto.Message { return &security.AuthorizationPolicy{} }},
	KindPeerAuthentication:    {GroupSecurity, securityVersions, func() proto.Message { return &security.PeerAuthentication{} }},
	KindRequestAuthentication: {GroupSecurity, securityVersions, func() proto.Message { return &security.RequestAuthentication{} }},

	// telemetry.istio.io.
	KindTelemetry: {GroupTelemetry, []string{"v1", "v1alpha1"}, func() proto.Message { return &telemetry.Telemetry{} }},

	// core (""), version v1: Kubernetes' Secret.
	KindSecret: {"", []string{"v1"}, func() proto.Message { return &loomv1alpha1.KubernetesSecret{} }},
	// core (""), version v1: Kubernetes' Service.
	KindService: {"", []string{"v1"}, func() proto.Message { return &loomv1alpha1.KubernetesService{} }},

	// loom.dev: Loom's own.
	KindRateLimitPolicy: {GroupLoom, []string{"v1alpha1"}, func() proto.Message { return &loomv1alpha1.RateLimitPolicy{} }},
}

var networkingVersions = []string{"v1", "v1beta1", "v1alpha3"}

var securityVersions = []string{"v1", "v1beta1"}

// Group returns the API group kind is served in ("networking.istio.io",
// "security.istio.io", "telemetry.istio.io", "loom.dev"), or "" for a kind Loom does not read.
func Group(kind Kind) string { return kinds[kind].group }

// Kinds lists the known kinds, sorted.
func Kinds() []Kind {
	out := make([]Kind, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// DefaultNamespace is the namespace of a resource whose metadata has none,
// as kubectl apply would give it.
const DefaultNamespace = "default"

// Key names one resource: kind, namespace and name.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

// String renders the key as "VirtualService default/reviews".
func (k Key) String() string { return fmt.Sprintf("%s %s/%s", k.Kind, k.Namespace, k.Name) }

// Source says where a resource was read: a file and the line its document
// starts on. File is empty for resources made in code.
type Source struct {
	File string
	Line int // 1-based; 0 when unknown
}

// String renders "file.yaml:12", "file.yaml", or "" when unknown.
func (s Source) String() string {
	switch {
	case s.File == "":
		return ""
	case s.Line > 0:
		return fmt.Sprintf("%s:%d", s.File, s.Line)
	}
	return s.File
}

// Resource is one Istio configuration object. Spec is the istio.io/api
// message of its kind (*networking.VirtualService for KindVirtualService, and
// so on). A Resource is immutable once it is in a Snapshot.
type Resource struct {
	Kind        Kind
	APIVersion  string // as written: "networking.istio.io/v1"
	Name        string
	Namespace   string
	Labels      map[string]string
	Annotations map[string]string
	Spec        proto.Message
	Source      Source
}

// Key returns the resource's key.
func (r *Resource) Key() Key { return Key{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name} }

// Error is a problem with one resource, with everything a user needs to find
// it: where it was read, which resource, and the field path within it.
//
// Its text is "FILE:LINE: KIND NAMESPACE/NAME: FIELD: MESSAGE", with parts
// left out when unknown.
type Error struct {
	Source Source
	Key    Key    // Kind may be empty when the document had no readable kind
	Field  string // "spec.http[0].route[1].weight"; empty for the whole document
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	if s := e.Source.String(); s != "" {
		b.WriteString(s)
		b.WriteString(": ")
	}
	if e.Key.Kind != "" {
		b.WriteString(string(e.Key.Kind))
		if e.Key.Name != "" {
			b.WriteString(" ")
			b.WriteString(e.Key.Namespace)
			b.WriteString("/")
			b.WriteString(e.Key.Name)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is a list of resource errors; it is an error itself when not empty.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Err returns es as an error, or nil when it is empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

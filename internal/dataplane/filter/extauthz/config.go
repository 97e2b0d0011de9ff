package extauthz

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extauthznetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/matcher"
)

// Names and type URLs of the filters.
const (
	Name            = "envoy.filters.http.ext_authz"
	TypeURL         = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	PerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
	NetworkName     = "envoy.filters.network.ext_authz"
	NetworkTypeURL  = "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"
)

// Envoy's defaults.
const (
	// DefaultGRPCTimeout is the check's timeout when grpc_service.timeout
	// is unset.
	DefaultGRPCTimeout = 200 * time.Millisecond
	// DefaultStatusOnError answers a failed check (status_on_error unset).
	DefaultStatusOnError = http.StatusForbidden
	// maxResponseBody bounds what is read of an HTTP authorization
	// service's response.
	maxResponseBody = 1 << 20
)

// GRPCService is a check over Envoy's gRPC API
// (envoy.service.auth.v3.Authorization/Check) to an envoy_grpc cluster.
type GRPCService struct {
	Cluster   string
	Authority string // "" means the cluster name
	Timeout   time.Duration
}

// HTTPService is a check by a plain HTTP request to a cluster
// (ExtAuthz.http_service).
type HTTPService struct {
	Cluster    string
	Timeout    time.Duration
	PathPrefix string
	// HeadersToAdd are authorization_request.headers_to_add, set on the
	// check request.
	HeadersToAdd [][2]string
	// UpstreamHeaders (allowed_upstream_headers) are the check response's
	// headers set on the request when it is allowed;
	// UpstreamHeadersToAppend are appended.
	UpstreamHeaders         matcher.StringList
	UpstreamHeadersToAppend matcher.StringList
	// ClientHeaders (allowed_client_headers) are the check response's
	// headers sent to the client with a denial; nil means all of them
	// but Host. ClientHeadersOnSuccess are added to the response of an
	// allowed request.
	ClientHeaders          matcher.StringList
	ClientHeadersOnSuccess matcher.StringList
}

// Body is with_request_body: the request body sent with the check.
type Body struct {
	MaxBytes     int
	AllowPartial bool
	PackAsBytes  bool
}

// Config is a parsed envoy.extensions.filters.http.ext_authz.v3.ExtAuthz,
// or a route's ExtAuthzPerRoute. It is immutable.
type Config struct {
	GRPC *GRPCService // one of GRPC and HTTP
	HTTP *HTTPService
	// FailureModeAllow lets a request through when the check fails;
	// FailureModeAllowHeaderAdd then adds
	// x-envoy-auth-failure-mode-allowed: true to it.
	FailureModeAllow          bool
	FailureModeAllowHeaderAdd bool
	// StatusOnError answers a failed check when failure is not allowed.
	StatusOnError int
	// Body is nil when the request body is not sent.
	Body *Body
	// EnabledMetadata, when set, runs the check only for a request whose
	// dynamic metadata matches (filter_enabled_metadata: Istio's CUSTOM
	// action sets it on its RBAC shadow result).
	EnabledMetadata *matcher.MetadataMatch
	// AllowedHeaders and DisallowedHeaders select the request headers
	// sent with the check; for an HTTP service, :authority (Host),
	// :method, :path, content-length and authorization always are.
	AllowedHeaders    matcher.StringList
	DisallowedHeaders matcher.StringList
	// MetadataNamespaces are the dynamic metadata namespaces sent in a
	// gRPC check's metadata_context.
	MetadataNamespaces     []string
	IncludePeerCertificate bool
	IncludeTLSSession      bool

	// Route overrides (ExtAuthzPerRoute): Disabled skips the check for the
	// route; ContextExtensions go in the check's context_extensions.
	Disabled          bool
	ContextExtensions map[string]string
	override          bool
}

// Factory builds the HTTP ext_authz filter (envoy.filters.http.ext_authz).
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// TypeURLs implements filter.Factory.
func (Factory) TypeURLs() []string { return []string{TypeURL, PerRouteTypeURL} }

// Parse validates an ExtAuthz. It refuses what would change a decision
// and Loom does not implement: runtime-fraction enabling, deny_at_disable,
// clear_route_cache, header mutation rules, dynamic metadata from the
// check, shadow mode, retry policies and google_grpc services.
func (Factory) Parse(a *anypb.Any) (filter.Config, error) {
	if a == nil {
		return nil, errors.New("typed_config: must be set")
	}
	if a.GetTypeUrl() != TypeURL {
		return nil, fmt.Errorf("type_url = %q: must be %s", a.GetTypeUrl(), TypeURL)
	}
	var m extauthzv3.ExtAuthz
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode ExtAuthz: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("violates Envoy's constraints: %w", err)
	}
	switch {
	case m.GetFilterEnabled() != nil:
		return nil, errors.New("filter_enabled: not supported (use filter_enabled_metadata)")
	case m.GetDenyAtDisable() != nil:
		return nil, errors.New("deny_at_disable: not supported")
	case m.GetClearRouteCache() || len(m.GetClearRouteCacheHeaders()) > 0:
		return nil, errors.New("clear_route_cache: not supported (this filter does not clear the route cache yet)")
	case m.GetDecoderHeaderMutationRules() != nil:
		return nil, errors.New("decoder_header_mutation_rules: not supported")
	case m.GetShadowMode():
		return nil, errors.New("shadow_mode: not supported")
	case len(m.GetTypedMetadataContextNamespaces()) > 0 || len(m.GetRouteMetadataContextNamespaces()) > 0 || len(m.GetRouteTypedMetadataContextNamespaces()) > 0:
		return nil, errors.New("typed and route metadata context namespaces: not supported (use metadata_context_namespaces)")
	}
	if err := apiVersion(m.GetTransportApiVersion()); err != nil {
		return nil, err
	}
	c := &Config{
		FailureModeAllow:          m.GetFailureModeAllow(),
		FailureModeAllowHeaderAdd: m.GetFailureModeAllowHeaderAdd(),
		StatusOnError:             DefaultStatusOnError,
		MetadataNamespaces:        m.GetMetadataContextNamespaces(),
		IncludePeerCertificate:    m.GetIncludePeerCertificate(),
		IncludeTLSSession:         m.GetIncludeTlsSession(),
	}
	if s := m.GetStatusOnError(); s != nil && s.GetCode() != 0 {
		c.StatusOnError = int(s.GetCode())
	}
	var err error
	switch svc := m.GetServices().(type) {
	case *extauthzv3.ExtAuthz_GrpcService:
		if c.GRPC, err = grpcService(svc.GrpcService); err != nil {
			return nil, fmt.Errorf("grpc_service.%w", err)
		}
	case *extauthzv3.ExtAuthz_HttpService:
		if c.HTTP, err = httpService(svc.HttpService); err != nil {
			return nil, fmt.Errorf("http_service.%w", err)
		}
	default:
		return nil, errors.New("services: must be grpc_service or http_service")
	}
	if b := m.GetWithRequestBody(); b != nil {
		c.Body = &Body{MaxBytes: int(b.GetMaxRequestBytes()), AllowPartial: b.GetAllowPartialMessage(), PackAsBytes: b.GetPackAsBytes()}
	}
	if fm := m.GetFilterEnabledMetadata(); fm != nil {
		mm, err := matcher.NewMetadata(fm)
		if err != nil {
			return nil, fmt.Errorf("filter_enabled_metadata.%w", err)
		}
		c.EnabledMetadata = &mm
	}
	if c.AllowedHeaders, err = matcher.NewStringList(m.GetAllowedHeaders()); err != nil {
		return nil, fmt.Errorf("allowed_headers.%w", err)
	}
	if c.DisallowedHeaders, err = matcher.NewStringList(m.GetDisallowedHeaders()); err != nil {
		return nil, fmt.Errorf("disallowed_headers.%w", err)
	}
	return c, nil
}

// ParseOverride validates a route's ExtAuthzPerRoute: disabled skips the
// check; check_settings' context_extensions are sent with it.
func (Factory) ParseOverride(a *anypb.Any) (filter.Config, error) {
	if a.GetTypeUrl() != PerRouteTypeURL {
		return nil, fmt.Errorf("type_url = %q: must be %s", a.GetTypeUrl(), PerRouteTypeURL)
	}
	var m extauthzv3.ExtAuthzPerRoute
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode ExtAuthzPerRoute: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("violates Envoy's constraints: %w", err)
	}
	cs := m.GetCheckSettings()
	switch {
	case cs.GetWithRequestBody() != nil || cs.GetDisableRequestBodyBuffering():
		return nil, errors.New("check_settings: only context_extensions are supported")
	case cs.GetGrpcService() != nil || cs.GetHttpService() != nil:
		return nil, errors.New("check_settings: a per-route service is not supported")
	}
	return &Config{override: true, Disabled: m.GetDisabled(), ContextExtensions: cs.GetContextExtensions()}, nil
}

func apiVersion(v corev3.ApiVersion) error {
	if v != corev3.ApiVersion_V3 && v != corev3.ApiVersion_AUTO {
		return fmt.Errorf("transport_api_version = %q: must be V3", v)
	}
	return nil
}

func grpcService(g *corev3.GrpcService) (*GRPCService, error) {
	eg := g.GetEnvoyGrpc()
	if eg == nil {
		return nil, errors.New("envoy_grpc: must be set (google_grpc is not supported)")
	}
	if eg.GetClusterName() == "" {
		return nil, errors.New("envoy_grpc.cluster_name: must not be empty")
	}
	if len(g.GetInitialMetadata()) > 0 || eg.GetRetryPolicy() != nil || g.GetRetryPolicy() != nil {
		return nil, errors.New("initial_metadata and retry_policy: not supported")
	}
	s := &GRPCService{Cluster: eg.GetClusterName(), Authority: eg.GetAuthority(), Timeout: DefaultGRPCTimeout}
	if s.Authority == "" {
		s.Authority = s.Cluster
	}
	if t := g.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, fmt.Errorf("timeout: %v", err)
		}
		s.Timeout = t.AsDuration()
	}
	return s, nil
}

func httpService(h *extauthzv3.HttpService) (*HTTPService, error) {
	uri := h.GetServerUri()
	if uri.GetCluster() == "" {
		return nil, errors.New("server_uri.cluster: must not be empty")
	}
	if _, err := url.Parse(uri.GetUri()); err != nil {
		return nil, fmt.Errorf("server_uri.uri = %q: %v", uri.GetUri(), err)
	}
	if h.GetRetryPolicy() != nil {
		return nil, errors.New("retry_policy: not supported")
	}
	if h.GetPathOverride() != "" {
		return nil, errors.New("path_override: not supported (use path_prefix)")
	}
	if h.GetAuthorizationResponse().GetDynamicMetadataFromHeaders() != nil {
		return nil, errors.New("authorization_response.dynamic_metadata_from_headers: not supported")
	}
	if h.GetAuthorizationRequest().GetAllowedHeaders() != nil {
		return nil, errors.New("authorization_request.allowed_headers: not supported (use the filter's allowed_headers)")
	}
	if p := h.GetPathPrefix(); p != "" && !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("path_prefix = %q: must start with /", p)
	}
	s := &HTTPService{Cluster: uri.GetCluster(), PathPrefix: h.GetPathPrefix()}
	if err := uri.GetTimeout().CheckValid(); err != nil {
		return nil, fmt.Errorf("server_uri.timeout: %v", err)
	}
	s.Timeout = uri.GetTimeout().AsDuration()
	for i, hv := range h.GetAuthorizationRequest().GetHeadersToAdd() {
		if hv.GetKey() == "" {
			return nil, fmt.Errorf("authorization_request.headers_to_add[%d].key: must not be empty", i)
		}
		s.HeadersToAdd = append(s.HeadersToAdd, [2]string{hv.GetKey(), hv.GetValue()})
	}
	resp := h.GetAuthorizationResponse()
	var err error
	if s.UpstreamHeaders, err = matcher.NewStringList(resp.GetAllowedUpstreamHeaders()); err != nil {
		return nil, fmt.Errorf("authorization_response.allowed_upstream_headers.%w", err)
	}
	if s.UpstreamHeadersToAppend, err = matcher.NewStringList(resp.GetAllowedUpstreamHeadersToAppend()); err != nil {
		return nil, fmt.Errorf("authorization_response.allowed_upstream_headers_to_append.%w", err)
	}
	if s.ClientHeaders, err = matcher.NewStringList(resp.GetAllowedClientHeaders()); err != nil {
		return nil, fmt.Errorf("authorization_response.allowed_client_headers.%w", err)
	}
	if s.ClientHeadersOnSuccess, err = matcher.NewStringList(resp.GetAllowedClientHeadersOnSuccess()); err != nil {
		return nil, fmt.Errorf("authorization_response.allowed_client_headers_on_success.%w", err)
	}
	return s, nil
}

// NetworkConfig is a parsed
// envoy.extensions.filters.network.ext_authz.v3.ExtAuthz.
type NetworkConfig struct {
	GRPC                   *GRPCService
	FailureModeAllow       bool
	EnabledMetadata        *matcher.MetadataMatch
	IncludePeerCertificate bool
	IncludeTLSSession      bool
	MetadataNamespaces     []string
}

func parseNetwork(a *anypb.Any) (*NetworkConfig, error) {
	if a == nil {
		return nil, errors.New("typed_config: must be set")
	}
	if a.GetTypeUrl() != NetworkTypeURL {
		return nil, fmt.Errorf("type_url = %q: must be %s", a.GetTypeUrl(), NetworkTypeURL)
	}
	var m extauthznetv3.ExtAuthz
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode ExtAuthz: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("violates Envoy's constraints: %w", err)
	}
	if m.GetShadowMode() || m.GetSendTlsAlertOnDenial() || len(m.GetTypedMetadataContextNamespaces()) > 0 {
		return nil, errors.New("shadow_mode, send_tls_alert_on_denial and typed_metadata_context_namespaces: not supported")
	}
	if err := apiVersion(m.GetTransportApiVersion()); err != nil {
		return nil, err
	}
	if m.GetGrpcService() == nil {
		return nil, errors.New("grpc_service: must be set")
	}
	g, err := grpcService(m.GetGrpcService())
	if err != nil {
		return nil, fmt.Errorf("grpc_service.%w", err)
	}
	c := &NetworkConfig{GRPC: g, FailureModeAllow: m.GetFailureModeAllow(), IncludePeerCertificate: m.GetIncludePeerCertificate(),
		IncludeTLSSession: m.GetIncludeTlsSession(), MetadataNamespaces: m.GetMetadataContextNamespaces()}
	if fm := m.GetFilterEnabledMetadata(); fm != nil {
		mm, err := matcher.NewMetadata(fm)
		if err != nil {
			return nil, fmt.Errorf("filter_enabled_metadata.%w", err)
		}
		c.EnabledMetadata = &mm
	}
	return c, nil
}

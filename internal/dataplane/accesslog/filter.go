package accesslog

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/interpreter"
)

// AccessLogger is one compiled access_log entry of an HTTP connection
// manager or a tcp_proxy (Envoy's envoy.access_loggers.file or
// envoy.access_loggers.stdout): where lines go, how they look and which
// requests are logged. It is immutable and safe for concurrent use.
type AccessLogger struct {
	// Path is the file's path; "/dev/stdout" (stdout logger) and
	// "/dev/stderr" are the proxy's own streams. It is "" for an
	// OpenTelemetry logger.
	Path   string
	Format *Formatter
	// OTel, when set, exports log records over OTLP/gRPC instead of
	// writing lines (Format is then unused).
	OTel *OTelLog
	// Filter, if non-nil, logs only the requests it matches.
	Filter *Filter
}

// LoggersNeed is what the formats of ls read of Needs.
func LoggersNeed(ls []*AccessLogger) Needs {
	var n Needs
	for _, l := range ls {
		n |= l.Format.Needs()
		if o := l.OTel; o != nil {
			n |= o.Body.Needs()
			for _, a := range o.Attributes {
				n |= a.Value.Needs()
			}
		}
	}
	return n
}

// OTelLog is Envoy's envoy.access_loggers.open_telemetry
// (OpenTelemetryAccessLogConfig; Istio's envoyOtelAls provider): each
// request becomes an OTLP LogRecord whose body and attributes are format
// strings over the entry, exported to Cluster's LogsService.
type OTelLog struct {
	// Cluster and Authority are the grpc_service's envoy_grpc.
	Cluster, Authority string
	// LogName is log_name (Envoy's builtin "log_name" resource label).
	LogName string
	// Body formats the record's body; nil: no body.
	Body *Formatter
	// Attributes are the record's attributes, in config order.
	Attributes []OTelAttribute
	// ResourceAttributes are resource_attributes (literal strings), and
	// BuiltinLabels is !disable_builtin_labels: Envoy's log_name,
	// zone_name, cluster_name and node_name resource attributes.
	ResourceAttributes []OTelAttribute
	BuiltinLabels      bool
}

// OTelAttribute is one attribute: Value formats it, or Literal is a
// resource attribute's fixed value.
type OTelAttribute struct {
	Key     string
	Value   *Formatter
	Literal string
}

// Filter is a compiled CEL access log filter
// (envoy.access_loggers.extension_filters.cel, Istio's Telemetry
// accessLogging filter.expression) over Envoy's attributes:
// request.{path,url_path,host,scheme,method,headers,useragent,id,protocol,
// duration,size,time}, response.{code,code_details,flags,headers,size},
// source.{address,port}, destination.{address,port},
// upstream.{address,port}, connection.requested_server_name and
// xds.{cluster_name,route_name}. response.flags is Loom's string of
// Envoy's short flags ("UF,URX"), not Envoy's bit mask. An expression
// whose evaluation fails, or is not a bool, logs nothing, as in Envoy.
type Filter struct {
	prg  cel.Program
	expr string
}

var (
	filterEnvOnce sync.Once
	filterEnv     *cel.Env
	filterEnvErr  error
)

func celEnv() (*cel.Env, error) {
	filterEnvOnce.Do(func() {
		var opts []cel.EnvOption
		for _, v := range []string{"request", "response", "source", "destination", "upstream", "connection", "xds"} {
			opts = append(opts, cel.Variable(v, cel.MapType(cel.StringType, cel.DynType)))
		}
		filterEnv, filterEnvErr = cel.NewEnv(opts...)
	})
	return filterEnv, filterEnvErr
}

// CompileFilter compiles a CEL expression; the error says why it is not
// one.
func CompileFilter(expr string) (*Filter, error) {
	env, err := celEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		msg, _, _ := strings.Cut(iss.Err().Error(), "\n")
		return nil, fmt.Errorf("%s", strings.TrimPrefix(msg, "ERROR: <input>:"))
	}
	prg, err := env.Program(ast)
	if err != nil {
		return nil, err
	}
	return &Filter{prg: prg, expr: expr}, nil
}

// Match evaluates the filter for e. To evaluate several filters on one
// request, share one Activation with MatchIn.
func (f *Filter) Match(e *Entry) bool { return f.MatchIn(NewActivation(e)) }

// MatchIn evaluates the filter on a's request.
func (f *Filter) MatchIn(a *Activation) bool {
	out, _, err := f.prg.Eval(a)
	if err != nil {
		return false
	}
	b, ok := out.Value().(bool)
	return ok && b
}

// The filter's variables, in Activation.vars order.
const (
	varRequest = iota
	varResponse
	varSource
	varDestination
	varUpstream
	varConnection
	varXDS
	numVars
)

// Activation is the attributes of one request for Filter.MatchIn
// (cel-go's interpreter.Activation). Each variable's map is built the
// first time an expression reads it and kept, so the filters of every
// access logger of a request share one set of maps, and a filter that
// reads only response.code never builds the header maps. One Activation
// serves one request on one goroutine; it reads e, which must not change
// while it is in use.
type Activation struct {
	e    *Entry
	vars [numVars]map[string]any
}

// NewActivation makes the lazy attributes of e.
func NewActivation(e *Entry) *Activation { return &Activation{e: e} }

// Parent implements interpreter.Activation: there is none.
func (a *Activation) Parent() interpreter.Activation { return nil }

// ResolveName implements interpreter.Activation for the variables the
// filter environment declares (celEnv).
func (a *Activation) ResolveName(name string) (any, bool) {
	var i int
	switch name {
	case "request":
		i = varRequest
	case "response":
		i = varResponse
	case "source":
		i = varSource
	case "destination":
		i = varDestination
	case "upstream":
		i = varUpstream
	case "connection":
		i = varConnection
	case "xds":
		i = varXDS
	default:
		return nil, false
	}
	if a.vars[i] == nil {
		a.vars[i] = a.build(i)
	}
	return a.vars[i], true
}

// build makes variable i's map from a.e: Envoy's attribute names and
// types (strings, int64 sizes and ports, a duration, a timestamp).
func (a *Activation) build(i int) map[string]any {
	e := a.e
	switch i {
	case varRequest:
		urlPath, _, _ := strings.Cut(e.RequestURI, "?")
		scheme := "http"
		if e.RequestedServerName != "" {
			scheme = "https"
		}
		return map[string]any{
			"path": e.RequestURI, "url_path": urlPath, "host": e.Authority, "scheme": scheme, "method": e.Method,
			"headers": lowerHeaders(e.RequestHeader), "useragent": e.UserAgent, "id": e.RequestID, "protocol": e.Protocol,
			"duration": e.Duration, "size": e.BytesReceived, "time": e.StartTime,
		}
	case varResponse:
		return map[string]any{
			"code": int64(e.ResponseCode), "code_details": e.ResponseCodeDetails, "flags": e.ResponseFlags,
			"headers": lowerHeaders(e.ResponseHeader), "size": e.BytesSent,
		}
	case varSource:
		return addressAttrs(e.DownstreamRemoteAddress)
	case varDestination:
		return addressAttrs(e.DownstreamLocalAddress)
	case varUpstream:
		return addressAttrs(e.UpstreamHost)
	case varConnection:
		return map[string]any{"requested_server_name": e.RequestedServerName}
	default: // varXDS
		return map[string]any{"cluster_name": e.UpstreamCluster, "route_name": e.RouteName}
	}
}

// lowerHeaders is h's first values under lower-case names, as Envoy's
// header attribute maps are keyed.
func lowerHeaders(h http.Header) map[string]string {
	m := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			m[strings.ToLower(k)] = v[0]
		}
	}
	return m
}

// addressAttrs is an {address, port} attribute map of "ip:port" hp:
// Envoy's address attributes are the whole "ip:port" string, the port
// also on its own (0 when hp has none).
func addressAttrs(hp string) map[string]any {
	var port int64
	if _, p, err := net.SplitHostPort(hp); err == nil {
		port, _ = strconv.ParseInt(p, 10, 64)
	}
	return map[string]any{"address": hp, "port": port}
}

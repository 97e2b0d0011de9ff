package accesslog

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
)

// AccessLogger is one compiled access_log entry of an HTTP connection
// manager or a tcp_proxy (Envoy's envoy.access_loggers.file or
// envoy.access_loggers.stdout): where lines go, how they look and which
// requests are logged. It is immutable and safe for concurrent use.
type AccessLogger struct {
	// Path is the file's path; "/dev/stdout" (stdout logger) and
	// "/dev/stderr" are the proxy's own streams.
	Path   string
	Format *Formatter
	// Filter, if non-nil, logs only the requests it matches.
	Filter *Filter
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

// Match evaluates the filter for e.
func (f *Filter) Match(e *Entry) bool {
	out, _, err := f.prg.Eval(attributes(e))
	if err != nil {
		return false
	}
	b, ok := out.Value().(bool)
	return ok && b
}

func attributes(e *Entry) map[string]any {
	urlPath, _, _ := strings.Cut(e.RequestURI, "?")
	reqH := map[string]string{}
	for k, v := range e.RequestHeader {
		if len(v) > 0 {
			reqH[strings.ToLower(k)] = v[0]
		}
	}
	respH := map[string]string{}
	for k, v := range e.ResponseHeader {
		if len(v) > 0 {
			respH[strings.ToLower(k)] = v[0]
		}
	}
	scheme := "http"
	if e.RequestedServerName != "" {
		scheme = "https"
	}
	host := func(hp string) (string, int64) {
		h, p, err := net.SplitHostPort(hp)
		if err != nil {
			return hp, 0
		}
		n, _ := strconv.ParseInt(p, 10, 64)
		_ = h
		return hp, n
	}
	src, srcPort := host(e.DownstreamRemoteAddress)
	dst, dstPort := host(e.DownstreamLocalAddress)
	up, upPort := host(e.UpstreamHost)
	return map[string]any{
		"request": map[string]any{
			"path": e.RequestURI, "url_path": urlPath, "host": e.Authority, "scheme": scheme, "method": e.Method,
			"headers": reqH, "useragent": e.UserAgent, "id": e.RequestID, "protocol": e.Protocol,
			"duration": e.Duration, "size": e.BytesReceived, "time": e.StartTime,
		},
		"response": map[string]any{
			"code": int64(e.ResponseCode), "code_details": e.ResponseCodeDetails, "flags": e.ResponseFlags,
			"headers": respH, "size": e.BytesSent,
		},
		"source":      map[string]any{"address": src, "port": srcPort},
		"destination": map[string]any{"address": dst, "port": dstPort},
		"upstream":    map[string]any{"address": up, "port": upPort},
		"connection":  map[string]any{"requested_server_name": e.RequestedServerName},
		"xds":         map[string]any{"cluster_name": e.UpstreamCluster, "route_name": e.RouteName},
	}
}

// Package accesslog is the proxy's access log formats and filters: the
// Entry a request or TCP connection fills, Envoy's substitution format
// strings (text and json_format) compiled into a Formatter, CEL filters
// (envoy.access_loggers.extension_filters.cel) compiled into a Filter, and
// AccessLogger, one compiled access_log entry of an HCM or a tcp_proxy.
//
// Data flow: internal/dataplane/config compiles access_log into
// AccessLoggers at the xDS edge (an unknown command or a bad expression is
// a NACK); the HTTP connection manager and the TCP proxy fill an Entry and
// hand it to telemetry.Sinks, which formats and writes it.
//
// It is a leaf: it imports no other Loom package.
package accesslog

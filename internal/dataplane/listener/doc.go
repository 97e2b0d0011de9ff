// Package listener binds the proxy's listening sockets and serves HTTP/1.1
// and h2c (HTTP/2 with prior knowledge) on them through net/http, or, for a
// listener whose filter chain is a tcp_proxy, hands each accepted
// connection to a ConnHandler (the TCP proxy).
//
// Sockets are keyed by listener name and address, so a listener whose
// address does not change keeps its socket across generations; a listener
// that leaves the config stops accepting and drains its in-flight requests
// (a TCP listener: its open connections, closed when the drain times out).
//
// Data flow: the proxy calls Manager.Update with each published Generation;
// accepted requests go to the handler made by Options.Handler (the HTTP
// connection manager) or to the ConnHandler made by Options.TCP, which
// read the Generation themselves.
//
// It must not import internal/controlplane.
package listener

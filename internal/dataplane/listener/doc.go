// Package listener binds the proxy's listening sockets and serves the
// filter chains behind them, as Envoy's listeners do.
//
// Each accepted connection runs its listener's listener filters
// (original_dst restores an iptables-redirected destination with
// SO_ORIGINAL_DST; tls_inspector has crypto/tls parse the ClientHello for
// SNI and ALPN without consuming it; http_inspector tells HTTP/1.x from
// h2c), within listener_filters_timeout. A use_original_dst listener then
// hands the connection to the listener of its original destination (those
// have bind_to_port false and are never bound). The listener's filter
// chain is selected by Envoy's FilterChainMatch rules
// (config.Listener.Select); no match closes the connection.
//
// Every filter chain has a server of its own, keyed by listener name and
// chain key: it terminates TLS (certificates resolved by name in the
// secret store at each handshake), runs the chain's network filters, and
// gives the connection to its http.Server (HCM chains: HTTP/1.1, h2c, h2
// over TLS) or to its TCP handler (tcp_proxy chains). Every request's
// context, and a TCP handler's, carries the connection's facts
// (filter.Connection). A chain unchanged in a new generation (same key and
// hash) keeps its server and connections; a changed or removed one drains
// alone. Sockets are keyed by listener name and address and survive
// generations.
//
// Data flow: the proxy calls Manager.Update with each published
// Generation; HTTP chains serve through the handler Options.Handler makes
// (the HTTP connection manager), TCP chains through Options.TCP's (the TCP
// proxy).
//
// It must not import internal/controlplane.
package listener

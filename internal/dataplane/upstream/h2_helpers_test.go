package upstream

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// h2cServer is an httptest server speaking HTTP/2 with prior knowledge
// (h2c) that counts the connections it accepts and the requests its
// handler runs at once, so tests can see how streams are spread over
// connections.
type h2cServer struct {
	*httptest.Server
	mu       sync.Mutex
	conns    int
	live     map[net.Conn]bool
	active   int // requests in the handler now
	maxSeen  int // most requests in the handler at once
	perConn  map[string]int
	maxPerCx int // most requests in the handler at once on one connection
}

func newH2CServer(tb testing.TB, h http.HandlerFunc) *h2cServer {
	s := &h2cServer{live: map[net.Conn]bool{}, perConn: map[string]int{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.active++
		s.maxSeen = max(s.maxSeen, s.active)
		s.perConn[r.RemoteAddr]++
		s.maxPerCx = max(s.maxPerCx, s.perConn[r.RemoteAddr])
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.active--
			s.perConn[r.RemoteAddr]--
			s.mu.Unlock()
		}()
		h(w, r)
	}))
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch st {
		case http.StateNew:
			s.conns++
			s.live[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(s.live, c)
		}
	}
	s.Start()
	tb.Cleanup(s.Close)
	return s
}

func (s *h2cServer) addr() string { return strings.TrimPrefix(s.URL, "http://") }

// stats returns the connections accepted, those open now, and the most
// requests seen at once in all and on one connection.
func (s *h2cServer) stats() (accepted, open, maxActive, maxPerConn int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, len(s.live), s.maxSeen, s.maxPerCx
}

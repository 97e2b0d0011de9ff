package upstream

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// h2cServer is a countingServer speaking HTTP/2 with prior knowledge
// (h2c) that also counts the requests its handler runs at once, so tests
// can see how streams are spread over connections.
type h2cServer struct {
	*countingServer
	// hmu guards the handler's counters.
	hmu      sync.Mutex
	active   int // requests in the handler now
	maxSeen  int // most requests in the handler at once
	perConn  map[string]int
	maxPerCx int // most requests in the handler at once on one connection
}

func newH2CServer(tb testing.TB, h http.HandlerFunc) *h2cServer {
	s := &h2cServer{perConn: map[string]int{}}
	s.countingServer = newCountingServerWith(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hmu.Lock()
		s.active++
		s.maxSeen = max(s.maxSeen, s.active)
		s.perConn[r.RemoteAddr]++
		s.maxPerCx = max(s.maxPerCx, s.perConn[r.RemoteAddr])
		s.hmu.Unlock()
		defer func() {
			s.hmu.Lock()
			s.active--
			s.perConn[r.RemoteAddr]--
			s.hmu.Unlock()
		}()
		h(w, r)
	}), func(c *http.Server) {
		c.Protocols = new(http.Protocols)
		c.Protocols.SetUnencryptedHTTP2(true)
	})
	return s
}

func (s *h2cServer) addr() string { return strings.TrimPrefix(s.URL, "http://") }

// stats returns the connections accepted, those open now, and the most
// requests seen at once in all and on one connection.
func (s *h2cServer) stats() (accepted, open, maxActive, maxPerConn int) {
	s.mu.Lock()
	accepted, open = s.conns, len(s.live)
	s.mu.Unlock()
	s.hmu.Lock()
	defer s.hmu.Unlock()
	return accepted, open, s.maxSeen, s.maxPerCx
}

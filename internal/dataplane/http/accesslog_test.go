package http_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// operatorsFormat logs the request id, then the operators
// TestAccessLogOperators checks, space separated.
const operatorsFormat = `"%REQ(X-REQUEST-ID)%" %CONNECTION_ID% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %UPSTREAM_PROTOCOL% ` +
	`%REQUEST_DURATION% %REQUEST_TX_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION% %DURATION% ` +
	`%DOWNSTREAM_HANDSHAKE_DURATION% %DOWNSTREAM_PEER_URI_SAN% %UPSTREAM_CONNECTION_ID%` + "\n"

// logAs makes every filter chain of g log in format to /dev/stdout.
func logAs(t *testing.T, g *config.Generation, format string) {
	t.Helper()
	f, err := accesslog.ParseTextFormat(format, accesslog.FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range g.Listeners {
		for _, fc := range append(append([]*config.FilterChain{}, l.FilterChains...), l.DefaultFilterChain) {
			if fc != nil {
				fc.AccessLogs = []*accesslog.AccessLogger{{Path: "/dev/stdout", Format: f}}
			}
		}
	}
}

// opsLine is one line of operatorsFormat; a duration is -1 when "-".
type opsLine struct {
	connID, attempts                            string
	proto                                       string
	reqRx, reqTx, respStart, respTx, total, hsk int64
	peerSAN, upConnID                           string
}

func (p *proxy) opsLine(rid string) opsLine {
	p.t.Helper()
	line := p.logLine(rid)
	f := strings.Fields(line)
	if len(f) != 12 {
		p.t.Fatalf("line %q: %d fields", line, len(f))
	}
	ms := func(s string) int64 {
		if s == "-" {
			return -1
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			p.t.Fatalf("line %q: %q is not a duration", line, s)
		}
		return n
	}
	return opsLine{connID: f[1], attempts: f[2], proto: f[3], reqRx: ms(f[4]), reqTx: ms(f[5]), respStart: ms(f[6]),
		respTx: ms(f[7]), total: ms(f[8]), hsk: ms(f[9]), peerSAN: f[10], upConnID: f[11]}
}

// TestAccessLogOperators: Envoy's timing, attempt, connection and
// protocol operators over real sockets: the response's first byte after
// the upstream's delay, the response's last byte after its slow body,
// the request's last byte after a slow upload, retries counted, local
// replies without upstream values, keep-alive requests sharing a
// connection id that a new connection does not, and the upstream
// connection's id, from the same sequence.
func TestAccessLogOperators(t *testing.T) {
	var mu sync.Mutex
	failures := map[string]int{}
	app := startBackend(t, "reviews", false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow-headers":
			time.Sleep(60 * time.Millisecond) // the upstream's think time: what RESPONSE_DURATION measures
		case "/slow-body":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			// Between the response's first and last byte: 70ms, of which
			// the check below wants 40 (the proxy may read the first
			// part late, under load, which shortens what it measures).
			time.Sleep(70 * time.Millisecond)
			io.WriteString(w, "done")
		case "/upload":
			io.Copy(io.Discard, r.Body)
		case "/fail":
			mu.Lock()
			failures[r.Header.Get("X-Request-Id")]++
			n := failures[r.Header.Get("X-Request-Id")]
			mu.Unlock()
			if n <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}
	})
	h2 := startBackend(t, "h2", true, nil)
	lAddr := closedAddr(t)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "out")},
		[]*routev3.RouteConfiguration{routeConfig("out", vhost("reviews", []string{"reviews:9080"},
			withRetry(prefixRoute("fail", "/fail", "reviews"), "5xx", 2),
			prefixRoute("h2", "/h2", "h2"),
			prefixRoute("all", "/", "reviews")))},
		[]*clusterv3.Cluster{staticCluster(t, "reviews", false, app.addr), staticCluster(t, "h2", true, h2.addr)})
	logAs(t, g, operatorsFormat)
	p := startProxy(t, g)

	get := func(rid, host, path string) {
		t.Helper()
		p.do("GET", host, path, map[string]string{"X-Request-Id": rid}, nil)
	}
	get("a", "reviews:9080", "/slow-headers")
	get("b", "reviews:9080", "/slow-body")
	get("d", "reviews:9080", "/fail")
	get("e", "nope", "/")
	get("f", "reviews:9080", "/h2/x")

	// A slow upload: the request's last byte comes 80ms after the client
	// took its first (the transport may take it before the headers reach
	// the proxy, which starts the clock: the check below wants 50ms).
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("first half "))
		time.Sleep(80 * time.Millisecond) // the client's pause mid-body: what REQUEST_DURATION measures
		pw.Write([]byte("second half"))
		pw.Close()
	}()
	if r := p.do("POST", "reviews:9080", "/upload", map[string]string{"X-Request-Id": "c"}, pr); r.code != http.StatusOK {
		t.Fatalf("upload: status %d", r.code)
	}

	// Another connection.
	req, _ := http.NewRequest("GET", "http://"+p.addr("l")+"/", nil)
	req.Host, req.Close = "reviews:9080", true
	req.Header.Set("X-Request-Id", "g")
	other := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := other.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	a, b, c, d, e, f, gl := p.opsLine("a"), p.opsLine("b"), p.opsLine("c"), p.opsLine("d"), p.opsLine("e"), p.opsLine("f"), p.opsLine("g")
	for _, tt := range []struct {
		rid           string
		l             opsLine
		attempts      string
		proto         string
		upstreamTimed bool
	}{
		{"a", a, "1", "HTTP/1.1", true}, {"b", b, "1", "HTTP/1.1", true}, {"c", c, "1", "HTTP/1.1", true},
		{"d", d, "3", "HTTP/1.1", true}, {"e", e, "0", "-", false}, {"f", f, "1", "HTTP/2", true}, {"g", gl, "1", "HTTP/1.1", true},
	} {
		l := tt.l
		if l.attempts != tt.attempts || l.proto != tt.proto {
			t.Errorf("%s: attempts %s, upstream protocol %s; want %s, %s", tt.rid, l.attempts, l.proto, tt.attempts, tt.proto)
		}
		if l.connID == "0" || l.hsk != -1 || l.peerSAN != "-" {
			t.Errorf("%s: connection id %s, handshake %d, peer SAN %s; want an id, no TLS", tt.rid, l.connID, l.hsk, l.peerSAN)
		}
		// Envoy's order of events, each truncated to ms: the request
		// ends downstream, then upstream; the response starts, then ends
		// downstream before the stream does.
		if l.reqRx < 0 || l.total < l.reqRx {
			t.Errorf("%s: request duration %d of %d", tt.rid, l.reqRx, l.total)
		}
		if (l.upConnID != "0") != tt.upstreamTimed || l.upConnID == l.connID {
			t.Errorf("%s: upstream connection id %s (downstream %s)", tt.rid, l.upConnID, l.connID)
		}
		if !tt.upstreamTimed {
			if l.reqTx != -1 || l.respStart != -1 || l.respTx != -1 {
				t.Errorf("%s: a local reply has upstream timing: %+v", tt.rid, l)
			}
			continue
		}
		if l.reqTx < l.reqRx || l.respStart < l.reqTx || l.respTx < 0 || l.respStart+l.respTx > l.total {
			t.Errorf("%s: timing out of order: %+v", tt.rid, l)
		}
	}
	if a.respStart < 60 {
		t.Errorf("a: response duration %dms, want >= the upstream's 60ms", a.respStart)
	}
	if b.respTx < 40 {
		t.Errorf("b: response tx duration %dms, want >= 40ms of the body's 70ms pause", b.respTx)
	}
	if c.reqRx < 50 || c.reqTx < 50 {
		t.Errorf("c: request duration %dms, tx %dms, want >= 50ms of the upload's 80ms pause", c.reqRx, c.reqTx)
	}
	if a.connID != b.connID || a.connID != e.connID {
		t.Errorf("keep-alive requests on connections %s, %s, %s", a.connID, b.connID, e.connID)
	}
	if gl.connID == a.connID {
		t.Errorf("a new connection has the id %s of another", gl.connID)
	}
	// The upstream pool keeps its connection to the app between
	// requests; the HTTP/2 cluster's is another.
	if a.upConnID != b.upConnID || f.upConnID == a.upConnID {
		t.Errorf("upstream connections %s, %s (kept alive), %s (HTTP/2)", a.upConnID, b.upConnID, f.upConnID)
	}
}

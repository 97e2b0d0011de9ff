package authzoracle

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/filter/extauthz"
	"github.com/loom-mesh/loom/internal/dataplane/filter/rbac"
)

// probe is one generated request (or, for TCP, connection).
type probe struct {
	method, path, host string
	headers            map[string]string
	src, remote        netip.Addr // peer, and X-Forwarded-For's client
	dst                netip.AddrPort
	sni                string
	principal          string // peer certificate URI SAN; "" for plaintext
	claims             map[string]any
	meta               any // experimental envoy.filters.a.b[c] value; nil for none
}

func (p probe) String() string {
	return fmt.Sprintf("%s %s host=%q h=%v src=%v xff=%v dst=%v sni=%q peer=%q claims=%v meta=%v",
		p.method, p.path, p.host, p.headers, p.src, p.remote, p.dst, p.sni, p.principal, p.claims, p.meta)
}

// outcome is what a proxy's chain of authorization filters did.
type outcome struct {
	passed   bool
	details  string // the denial's response code details
	extAuthz bool   // a CUSTOM check would be sent to the provider
	shadow   string // the shadow rules' results, as metadata renders
}

// chain is one set of filters compiled by the proxy's own factories.
type chain struct {
	http []filter.Filter
	// enabled holds each ext_authz filter's filter_enabled_metadata (nil
	// entries for rbac filters); the check itself is not made: that it
	// would be is the decision compared.
	enabled []*extauthz.Config
	tcp     []filter.NetworkFilter
	tcpExt  []*extauthz.NetworkConfig
}

// compile builds the filters with the proxy's factories: the proxy must
// accept every filter Istio and Loom emit (no NACK).
func compile(t *testing.T, tcp bool, fs []proto.Message) *chain {
	t.Helper()
	c := &chain{}
	for _, m := range fs {
		if tcp {
			f := m.(*listenerv3.Filter)
			switch f.GetName() {
			case rbac.NetworkName:
				cfg, err := rbac.NetworkFactory{}.Parse(f.GetTypedConfig())
				if err != nil {
					t.Fatalf("the proxy refuses %s: %v", f.GetName(), err)
				}
				nf, err := rbac.NetworkFactory{}.Build(cfg)
				if err != nil {
					t.Fatal(err)
				}
				c.tcp, c.tcpExt = append(c.tcp, nf), append(c.tcpExt, nil)
			case extauthz.NetworkName:
				cfg, err := extauthz.NetworkFactory{}.Parse(f.GetTypedConfig())
				if err != nil {
					t.Fatalf("the proxy refuses %s: %v", f.GetName(), err)
				}
				if _, err := (extauthz.NetworkFactory{}).Build(cfg); err != nil {
					t.Fatal(err)
				}
				c.tcp, c.tcpExt = append(c.tcp, nil), append(c.tcpExt, cfg.(*extauthz.NetworkConfig))
			default:
				t.Fatalf("unexpected network filter %s", f.GetName())
			}
			continue
		}
		f := m.(*hcmv3.HttpFilter)
		switch f.GetName() {
		case rbac.Name:
			cfg, err := rbac.Factory{}.Parse(f.GetTypedConfig())
			if err != nil {
				t.Fatalf("the proxy refuses %s: %v", f.GetName(), err)
			}
			hf, err := rbac.Factory{}.Build(cfg, filter.Deps{})
			if err != nil {
				t.Fatal(err)
			}
			c.http, c.enabled = append(c.http, hf), append(c.enabled, nil)
		case extauthz.Name:
			cfg, err := extauthz.Factory{}.Parse(f.GetTypedConfig())
			if err != nil {
				t.Fatalf("the proxy refuses %s: %v", f.GetName(), err)
			}
			if _, err := (extauthz.Factory{}).Build(cfg, filter.Deps{}); err != nil {
				t.Fatal(err)
			}
			c.http, c.enabled = append(c.http, nil), append(c.enabled, cfg.(*extauthz.Config))
		default:
			t.Fatalf("unexpected HTTP filter %s", f.GetName())
		}
	}
	return c
}

func (p probe) tls() *tls.ConnectionState {
	if p.principal == "" {
		return nil
	}
	cert := &x509.Certificate{}
	if u, err := url.Parse(p.principal); err == nil {
		cert.URIs = []*url.URL{u}
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, ServerName: p.sni}
}

// shadowOf renders the shadow results and audit hints the filters left,
// and only those.
func shadowOf(st *filter.State) string {
	return fmt.Sprint(st.Metadata[rbac.Name], st.Metadata[rbac.NetworkName], st.Metadata["envoy.common"])
}

func (p probe) state() *filter.State {
	st := &filter.State{}
	if p.claims != nil {
		st.SetMetadata("envoy.filters.http.jwt_authn", "payload", p.claims)
	}
	if p.meta != nil {
		st.SetMetadata("envoy.filters.a.b", "c", p.meta)
	}
	return st
}

// decide runs the probe through the chain as the proxy's connection
// manager (or listener) would.
func (c *chain) decide(p probe, tcp bool) outcome {
	st := p.state()
	conn := &filter.Connection{Source: netip.AddrPortFrom(p.src, 40000), Destination: p.dst, ServerName: p.sni, TLS: p.tls()}
	if tcp {
		ctx := filter.NewContext(context.Background(), st)
		for i, f := range c.tcp {
			if cfg := c.tcpExt[i]; cfg != nil {
				if cfg.EnabledMetadata == nil || cfg.EnabledMetadata.Match(st.Metadata) {
					return outcome{extAuthz: true, shadow: shadowOf(st)}
				}
				continue
			}
			if err := f.OnConnection(ctx, conn); err != nil {
				return outcome{details: err.Error(), shadow: shadowOf(st)}
			}
		}
		return outcome{passed: true, shadow: shadowOf(st)}
	}
	// Built by hand, so that a method or path the policies name with
	// brackets ("rule[0]-to[0]-method[1]") can be sent.
	r := httptest.NewRequest("GET", "/", nil)
	r.Method, r.Host, r.RequestURI = p.method, p.host, p.path
	if u, err := url.ParseRequestURI(p.path); err == nil {
		r.URL = u
	}
	for k, v := range p.headers {
		r.Header.Set(k, v)
	}
	if p.remote.IsValid() {
		r.Header.Set("X-Forwarded-For", p.remote.String())
	}
	r = r.WithContext(filter.NewContext(filter.WithConnection(r.Context(), conn), st))
	for i, f := range c.http {
		if cfg := c.enabled[i]; cfg != nil {
			if cfg.EnabledMetadata == nil || cfg.EnabledMetadata.Match(st.Metadata) {
				return outcome{extAuthz: true, shadow: shadowOf(st)}
			}
			continue
		}
		passed := false
		w := httptest.NewRecorder()
		f.ServeHTTP(w, r, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { passed = true }))
		if !passed {
			return outcome{details: st.ReplyDetails, shadow: shadowOf(st)}
		}
	}
	return outcome{passed: true, shadow: shadowOf(st)}
}

// generator draws probes from the values a case's policies use, for the
// field each value was written in, each written the ways that make its
// exact, prefix, suffix and presence matches go either way.
type generator struct {
	rng *rand.Rand
	// pools by the policy field the values come from
	methods, hosts, paths, principals, ips, words, claims []string
	ports                                                 []uint16
	headers                                               []string // header names the policies read
}

func newGenerator(t *testing.T, input string, seed uint64) *generator {
	t.Helper()
	data, err := os.ReadFile(input)
	if err != nil {
		t.Fatal(err)
	}
	g := &generator{rng: rand.New(rand.NewPCG(seed, 0xa17)),
		methods:    []string{"GET", "POST", "PUT"},
		hosts:      []string{"httpbin.foo", "example.com"},
		paths:      []string{"/", "/x", "/productpage"},
		principals: []string{"", "spiffe://cluster.local/ns/foo/sa/sleep", "spiffe://other.td/ns/bar/sa/x"},
		ips:        []string{"8.8.8.8", "10.0.0.9"},
		words:      []string{"x", ""},
		claims:     []string{"x"},
		ports:      []uint16{80, 8080, 9000, 9001},
	}
	variants := func(tok string) []string {
		bare := strings.Trim(tok, "*[]")
		return []string{tok, bare, "x" + bare, bare + "x", strings.ToUpper(bare)}
	}
	var tds []string
	var idents []string // principals, namespaces and service accounts as written
	for _, doc := range strings.Split(string(data), "\n---") {
		var v any
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
		walkFields(v, "", func(field, tok string) {
			if field == "key" && strings.HasPrefix(tok, "request.headers[") {
				g.headers = append(g.headers, strings.TrimSuffix(strings.TrimPrefix(tok, "request.headers["), "]"))
			}
			g.words = append(g.words, variants(tok)...)
			switch field {
			case "methods", "notMethods":
				g.methods = append(g.methods, variants(tok)...)
			case "hosts", "notHosts":
				g.hosts = append(g.hosts, variants(tok)...)
			case "requestPrincipals", "notRequestPrincipals":
				g.claims = append(g.claims, variants(tok)...)
				if iss, sub, ok := strings.Cut(tok, "/"); ok {
					g.claims = append(g.claims, variants(iss)...)
					g.claims = append(g.claims, variants(sub)...)
				}
			case "trustDomains", "notTrustDomains":
				tds = append(tds, variants(tok)...)
			case "principals", "notPrincipals", "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "values", "notValues":
				idents = append(idents, tok)
				g.claims = append(g.claims, variants(tok)...)
			}
			if n, err := strconv.Atoi(tok); err == nil && n > 0 && n < 65536 {
				g.ports = append(g.ports, uint16(n), uint16(n+1))
			}
			if pfx, err := netip.ParsePrefix(tok); err == nil {
				g.ips = append(g.ips, pfx.Addr().String(), pfx.Addr().Next().String(), lastAddr(pfx).Next().String())
			} else if a, err := netip.ParseAddr(tok); err == nil {
				g.ips = append(g.ips, a.String(), a.Next().String())
			}
			if strings.HasPrefix(tok, "/") || strings.HasPrefix(tok, "*/") {
				p := strings.NewReplacer("{**}", "a/b", "{*}", "a", "*", "x").Replace(tok)
				g.paths = append(g.paths, "/"+strings.TrimPrefix(p, "/"), "/"+strings.TrimPrefix(p, "/")+"/y", strings.TrimSuffix(p, "x")+"y/z")
			}
		})
	}
	// Identities: principals as written (trust domain first) under the
	// trust domains of the cases, and SPIFFE IDs built from namespaces
	// and service accounts.
	tds = append(tds, "cluster.local", "td1", "some-td", "foobar", "new-td", "old-td", "some-trustdomain", "x-td", "other")
	for _, id := range idents {
		bare := strings.Trim(id, "*")
		if _, rest, ok := strings.Cut(bare, "/ns/"); ok {
			for _, td := range tds {
				g.principals = append(g.principals, "spiffe://"+strings.Trim(td, "*")+"/ns/"+rest)
			}
		}
		ns, sa, hasNS := strings.Cut(bare, "/")
		if !hasNS {
			ns, sa = "foo", bare
		}
		g.principals = append(g.principals, "spiffe://"+bare, "spiffe://"+bare+"x", "spiffe://x"+bare,
			"spiffe://cluster.local/ns/"+bare+"/sa/x", "spiffe://td/ns/"+ns+"/sa/"+sa, "spiffe://td/ns/"+ns+"/sa/"+sa+"x")
	}
	for _, td := range tds {
		g.principals = append(g.principals, "spiffe://"+strings.Trim(td, "*")+"/ns/foo/sa/x")
	}
	return g
}

// walkFields calls f with each string of v and the name of the field
// that holds it (the list's or the map value's key).
func walkFields(v any, field string, f func(field, s string)) {
	switch t := v.(type) {
	case string:
		f(field, t)
	case []any:
		for _, e := range t {
			walkFields(e, field, f)
		}
	case map[string]any:
		for k, e := range t {
			walkFields(e, k, f)
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}

func (g *generator) pick(l []string) string { return l[g.rng.IntN(len(l))] }

func (g *generator) maybe(l []string) string {
	if g.rng.IntN(3) == 0 {
		return ""
	}
	return g.pick(l)
}

func (g *generator) probe() probe {
	p := probe{
		method:    g.pick(g.methods),
		path:      g.pick(g.paths),
		host:      g.pick(g.hosts),
		headers:   map[string]string{},
		src:       netip.MustParseAddr(g.pick(g.ips)),
		dst:       netip.AddrPortFrom(netip.MustParseAddr(g.pick(g.ips)), g.ports[g.rng.IntN(len(g.ports))]),
		sni:       g.maybe(g.hosts),
		principal: g.pick(g.principals),
	}
	if p.method == "" {
		p.method = "GET"
	}
	if p.host == "" {
		p.host = "httpbin.foo"
	}
	if g.rng.IntN(2) == 0 {
		p.remote = netip.MustParseAddr(g.pick(g.ips))
	}
	for _, h := range g.headers {
		if v := g.maybe(g.words); v != "" {
			p.headers[h] = v
		}
	}
	if g.rng.IntN(4) != 0 {
		p.claims = map[string]any{}
		for _, c := range []string{"iss", "sub", "aud", "azp", "groups"} {
			switch g.rng.IntN(3) {
			case 1:
				p.claims[c] = g.pick(g.claims)
			case 2:
				p.claims[c] = []any{g.pick(g.claims), g.pick(g.claims)}
			}
		}
		if g.rng.IntN(2) == 0 {
			p.claims["nested1"] = map[string]any{"nested2": g.pick(g.claims)}
		}
	}
	switch g.rng.IntN(3) {
	case 1:
		p.meta = g.pick(g.words)
	case 2:
		p.meta = []any{g.pick(g.words)}
	}
	return p
}

// TestAuthzDecisions compiles Loom's filters and Istio's expected ones for
// every oracle case with the proxy's own factories (the proxy accepts
// both) and runs the same generated requests through both: every
// decision, denial detail, shadow result and ext_authz trigger must be
// the same.
func TestAuthzDecisions(t *testing.T) {
	const perCase = 3000
	total := map[string]int{}
	for i, c := range AuthzOracleCases() {
		t.Run(c.Name, func(t *testing.T) {
			ours := compile(t, c.TCP, oracleFilters(t, c))
			istio := compile(t, c.TCP, oracleExpected(t, c))
			g := newGenerator(t, filepath.Join(c.dir(), c.In), uint64(i)+1)
			seen := map[string]int{}
			shadows := map[string]bool{}
			for range perCase {
				p := g.probe()
				a, b := ours.decide(p, c.TCP), istio.decide(p, c.TCP)
				if a != b {
					t.Fatalf("%s\nloom:  %+v\nistio: %+v", p, a, b)
				}
				k := "denied"
				switch {
				case a.extAuthz:
					k = "ext_authz"
				case a.passed:
					k = "passed"
				}
				seen[k]++
				total[k]++
				shadows[a.shadow] = true
			}
			t.Logf("%d probes: %v, %d shadow results", perCase, seen, len(shadows))
			if len(seen) < 2 && slices.Contains(variedCases, c.Name) {
				t.Errorf("every probe decided alike (%v): the generator does not exercise this case", seen)
			}
			if len(shadows) < 2 && strings.HasPrefix(strings.TrimPrefix(c.Name, "tcp/"), "dry-run") {
				t.Errorf("every probe had the same shadow result: the generator does not exercise the dry-run rules")
			}
		})
	}
	t.Logf("all cases: %v", total)
}

// variedCases are the cases whose policies some requests match and some
// do not: the generated probes must reach both sides.
// (single-policy cannot match at all: each source wants an exact
// principal without "/ns/" and a namespace; dry-run-only cases always
// pass and are checked by their shadow results instead.)
var variedCases = []string{
	"deny-and-allow", "multiple-policies", "dry-run-mix",
	"custom-grpc-provider", "custom-http-provider", "custom-bad-multiple-providers", "custom-bad-invalid-config",
	"trust-domain-one-alias", "trust-domain-multiple-aliases", "trust-domain-wildcard-in-principal",
	"trust-domain-aliases-in-source-principal", "trust-domains-field", "tcp/allow-both-http-tcp",
}

package e2e

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// jwtSamples is Istio's JWT test data: the task's JWKS and tokens, the e2e
// token set and the jwt-server's test certificate.
const jwtSamples = "../../../shared/istio-samples"

func readShared(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(jwtSamples, name))
	if err != nil {
		t.Fatalf("Istio's samples are missing (%v): shared/istio-samples must be beside the module", err)
	}
	return strings.TrimSpace(string(b))
}

// e2eToken returns the token called name in jwt/e2e/tokens.json.
func e2eToken(t *testing.T, name string) string {
	t.Helper()
	var f struct {
		Tokens []struct{ Name, Token string } `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(readShared(t, "jwt/e2e/tokens.json")), &f); err != nil {
		t.Fatal(err)
	}
	for _, tk := range f.Tokens {
		if tk.Name == name {
			return tk.Token
		}
	}
	t.Fatalf("no token %s", name)
	return ""
}

// headersApp answers 200 with the JWT-related request headers it got.
type headersApp struct{}

func (headersApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	json.NewEncoder(w).Encode(map[string]string{
		"payload":       r.Header.Get("X-Jwt-Payload"),
		"authorization": r.Header.Get("Authorization"),
	})
}

// taskPolicy is the RequestAuthentication of Istio's JWT task on httpbin
// (the task's JWKS inline, outputPayloadToHeader x-jwt-payload) with
// moreRules (YAML list items) added to its jwtRules.
func taskPolicy(t *testing.T, moreRules string) string {
	return `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: default}
spec:
  selector:
    matchLabels: {app: httpbin}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '` + readShared(t, "jwt/jwks.json") + `'
    outputPayloadToHeader: x-jwt-payload
` + moreRules
}

// startE2EJWKSServer serves jwks over HTTPS with the jwt-server's test
// certificate at https://localhost:PORT/jwks and counts the fetches. The
// certificate's CA is written to a file for loomd's --jwks-ca-file.
func startE2EJWKSServer(t *testing.T, jwks string) (uri, caFile string, hits *atomic.Int64) {
	t.Helper()
	cert, err := tls.X509KeyPair([]byte(readShared(t, "jwt-server/testdata/server.crt")), []byte(readShared(t, "jwt-server/testdata/server.key")))
	if err != nil {
		t.Fatal(err)
	}
	hits = &atomic.Int64{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(jwks))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	caFile = filepath.Join(t.TempDir(), "jwks-ca.pem")
	if err := os.WriteFile(caFile, []byte(readShared(t, "jwt-server/testdata/ca.crt")), 0o644); err != nil {
		t.Fatal(err)
	}
	return "https://localhost:" + port + "/jwks", caFile, hits
}

// TestRequestAuthentication follows Istio's JWT task on an httpbin
// workload behind its sidecar, through the client's sidecar:
//
//   - with the task's RequestAuthentication (inline jwks): an invalid
//     token gets 401, demo.jwt and no token get 200, the verified payload
//     reaches the app in outputPayloadToHeader and the token does not;
//   - adding a rule whose jwksUri is an HTTPS JWKS server (fetched by
//     loomd, trusted through --jwks-ca-file): Istio's e2e token of that
//     issuer gets 200 once the key set is fetched, its expired token and a
//     token of an issuer no rule names get 401, demo.jwt still 200;
//   - nothing leaks: no log or output of loomd and the proxies, and no
//     proxy's /config_dump, holds a token used or a PEM private key.
//
// The AuthorizationPolicy steps of the task are in
// TestRequestAuthenticationWithAuthorization.
func TestRequestAuthentication(t *testing.T) {
	jwksURI, caFile, fetches := startE2EJWKSServer(t, readShared(t, "jwt/e2e/jwks.json"))
	m := startAppMeshArgs(t, "127.91.0", []appWorkload{{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: headersApp{}}}, "",
		"--jwks-ca-file", caFile)
	hc := m.client(5 * time.Second)
	const url = "http://httpbin:9080/headers"

	demo, groups := readShared(t, "jwt/demo.jwt"), readShared(t, "jwt/groups-scope.jwt")
	issuer1, expired, issuer2 := e2eToken(t, "TokenIssuer1"), e2eToken(t, "TokenExpired"), e2eToken(t, "TokenIssuer2")
	used := []string{demo, groups, issuer1, expired, issuer2, "invalidToken"}

	get := func(tok string) (int, string, map[string]string) {
		t.Helper()
		hdr := map[string]string{}
		if tok != "" {
			hdr["Authorization"] = "Bearer " + tok
		}
		code, body, _ := getBody(t, hc, url, hdr)
		var seen map[string]string
		_ = json.Unmarshal([]byte(body), &seen)
		return code, body, seen
	}
	expect := func(step, name, tok string, wantCode int, wantBody string) {
		t.Helper()
		code, body, _ := get(tok)
		if code != wantCode || (wantBody != "" && body != wantBody) {
			t.Errorf("%s: %s: got %d %q, want %d %q", step, name, code, body, wantCode, wantBody)
		}
	}

	// Before any policy every request passes.
	expect("no policy", "invalid token", "invalidToken", 200, "")

	m.applyFor(taskPolicy(t, ""), "httpbin-v1")
	step := "inline jwks"
	expect(step, "invalid token", "invalidToken", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
	expect(step, "no token", "", 200, "")
	expect(step, "groups-scope.jwt", groups, 200, "")
	expect(step, "expired token of another issuer", expired, 401, "Jwt issuer is not configured")
	if code, _, seen := get(demo); code != 200 {
		t.Errorf("%s: demo.jwt: got %d, want 200", step, code)
	} else {
		payload, _ := base64.RawURLEncoding.DecodeString(seen["payload"])
		if !strings.Contains(string(payload), `"foo":"bar"`) || seen["authorization"] != "" {
			t.Errorf("%s: the app saw payload %q and authorization %q; want demo.jwt's payload and no token", step, payload, seen["authorization"])
		}
	}

	m.applyFor(taskPolicy(t, "  - issuer: test-issuer-1@istio.io\n    jwksUri: "+jwksURI+"\n"), "httpbin-v1")
	step = "jwksUri"
	if !poll(15*time.Second, func() bool { code, _, _ := get(issuer1); return code == 200 }) {
		t.Fatalf("%s: TokenIssuer1 is not accepted 15 s after the policy (%d JWKS fetches)\n%s", step, fetches.Load(), m.tails())
	}
	if fetches.Load() == 0 {
		t.Fatalf("%s: the JWKS server was never asked", step)
	}
	expect(step, "expired token", expired, 401, "Jwt is expired")
	expect(step, "token of an issuer no rule names", issuer2, 401, "Jwt issuer is not configured")
	expect(step, "invalid token", "invalidToken", 401, "")
	expect(step, "demo.jwt", demo, 200, "")
	expect(step, "no token", "", 200, "")

	// Nothing leaks: every output of the run, and every proxy's config.
	var dumps []string
	for _, ip := range []string{m.ip(11), m.ip(clientOctet)} {
		dumps = append(dumps, configDump(t, ip))
	}
	if !strings.Contains(dumps[0], "envoy.filters.http.jwt_authn") || !strings.Contains(dumps[0], "tT_w9LRNrY7wJalGsTYSt7rutZi86Gvyc0EKR4CaQAw") {
		t.Fatal("httpbin's config_dump lacks the jwt_authn filter with the fetched key set: the leak check would look at the wrong config")
	}
	m.stop() // flushes every process's output
	outputs := map[string]string{"httpbin config_dump": dumps[0], "client config_dump": dumps[1]}
	for _, p := range m.logs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		outputs[filepath.Base(p)] = string(b)
	}
	if !strings.Contains(outputs["httpbin-v1-proxy.log"], "/headers") {
		t.Fatal("the httpbin proxy's output has no access log line: the leak check would look at nothing")
	}
	for name, out := range outputs {
		for _, tok := range used {
			if strings.Contains(out, tok) {
				t.Errorf("%s contains a token (%.12s...)", name, tok)
			}
		}
		for _, pemHeader := range []string{"PRIVATE KEY-----", "BEGIN EC PRIVATE", "BEGIN RSA PRIVATE"} {
			if strings.Contains(out, pemHeader) {
				t.Errorf("%s contains a PEM private key header", name)
			}
		}
	}
}

// TestRequestAuthenticationWithAuthorization is the rest of Istio's JWT
// task, with AuthorizationPolicy reading the payload jwt_authn leaves in
// the dynamic metadata: with require-jwt
// (requestPrincipals testing@secure.istio.io/testing@secure.istio.io) a
// request without a token gets 403 and demo.jwt 200; with the groups
// condition (request.auth.claims[groups] in [group1]) groups-scope.jwt
// gets 200 and demo.jwt 403.
func TestRequestAuthenticationWithAuthorization(t *testing.T) {
	m := startAppMeshArgs(t, "127.92.0", []appWorkload{{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: headersApp{}}}, "")
	hc := m.client(5 * time.Second)
	const url = "http://httpbin:9080/headers"
	demo, groups := readShared(t, "jwt/demo.jwt"), readShared(t, "jwt/groups-scope.jwt")
	get := func(tok string) int {
		t.Helper()
		hdr := map[string]string{}
		if tok != "" {
			hdr["Authorization"] = "Bearer " + tok
		}
		code, _, _ := getBody(t, hc, url, hdr)
		return code
	}
	m.applyFor(taskPolicy(t, "")+`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector:
    matchLabels: {app: httpbin}
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
`, "httpbin-v1")
	if code := get(""); code != 403 {
		t.Errorf("require-jwt: no token: %d, want 403", code)
	}
	if code := get(demo); code != 200 {
		t.Errorf("require-jwt: demo.jwt: %d, want 200", code)
	}
	if code := get("invalidToken"); code != 401 {
		t.Errorf("require-jwt: invalid token: %d, want 401", code)
	}
	m.applyFor(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector:
    matchLabels: {app: httpbin}
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
`, "httpbin-v1")
	if code := get(groups); code != 200 {
		t.Errorf("groups rule: groups-scope.jwt: %d, want 200", code)
	}
	if code := get(demo); code != 403 {
		t.Errorf("groups rule: demo.jwt: %d, want 403", code)
	}
}

// TestJWTClaimRouting follows Istio's "JWT claim based routing" task at an
// ingress gateway: the task's RequestAuthentication on the gateway and a
// VirtualService whose /headers route matches
// "@request.auth.claims.groups: {exact: group1}". groups-scope.jwt (groups
// [group1, group2]) reaches httpbin; no token and demo.jwt (no groups
// claim) get 404, an invalid token 401, as in the task. withoutHeaders on
// the claim routes the other way. On a sidecar the same match never
// matches (Istio supports it at gateways only: the sidecar picks its
// route before any JWT is verified), so the client's sidecar answers 404
// even with groups-scope.jwt.
func TestJWTClaimRouting(t *testing.T) {
	m := startAppMesh(t, "127.93.0", []appWorkload{
		{Name: "istio-ingressgateway", App: "istio-ingressgateway", Octet: 10, Gateway: true},
		{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: headersApp{}},
	}, `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
`)
	demo, groups := readShared(t, "jwt/demo.jwt"), readShared(t, "jwt/groups-scope.jwt")
	direct, viaSidecar := &http.Client{Timeout: 10 * time.Second}, m.client(10*time.Second)
	getWith := func(hc *http.Client, url, tok string) int {
		t.Helper()
		hdr := map[string]string{}
		if tok != "" {
			hdr["Authorization"] = "Bearer " + tok
		}
		code, _, _ := getBody(t, hc, url, hdr)
		return code
	}
	get := func(url, tok string) int { t.Helper(); return getWith(direct, url, tok) }
	gw := "http://" + m.ip(10) + ":8080/headers"
	vs := func(match string) string {
		return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http:
  - match:
    - uri: {prefix: /headers}
` + match + `    route:
    - destination: {host: httpbin.default.svc.cluster.local, port: {number: 9080}}
`
	}
	m.applyFor(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ingress-jwt, namespace: istio-system}
spec:
  selector:
    matchLabels: {istio: ingressgateway}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '`+readShared(t, "jwt/jwks.json")+`'
---
`+vs("      headers:\n        \"@request.auth.claims.groups\": {exact: group1}\n"), "istio-ingressgateway")
	for _, c := range []struct {
		name, tok string
		want      int
	}{
		{"groups-scope.jwt (group1)", groups, 200},
		{"demo.jwt (no groups claim)", demo, 404},
		{"no token", "", 404},
		{"invalid token", "invalidToken", 401},
	} {
		if got := get(gw, c.tok); got != c.want {
			t.Errorf("headers: %s: %d, want %d", c.name, got, c.want)
		}
	}

	m.applyFor(vs("      withoutHeaders:\n        \"@request.auth.claims.groups\": {exact: group1}\n"), "istio-ingressgateway")
	for _, c := range []struct {
		name, tok string
		want      int
	}{
		{"groups-scope.jwt (group1)", groups, 404},
		{"demo.jwt (no groups claim)", demo, 200},
		{"no token", "", 200},
	} {
		if got := get(gw, c.tok); got != c.want {
			t.Errorf("withoutHeaders: %s: %d, want %d", c.name, got, c.want)
		}
	}

	// The same match for the mesh, with the RequestAuthentication on
	// httpbin: the client's sidecar routes before any JWT is verified.
	m.applyFor(taskPolicy(t, "")+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-mesh, namespace: default}
spec:
  hosts: [httpbin]
  http:
  - match:
    - headers:
        "@request.auth.claims.groups": {exact: group1}
    route:
    - destination: {host: httpbin.default.svc.cluster.local, port: {number: 9080}}
`, "client")
	if got := getWith(viaSidecar, "http://httpbin:9080/headers", groups); got != 404 {
		t.Errorf("sidecar: groups-scope.jwt: %d, want 404 (claim routes match at gateways only)", got)
	}
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// samples holds Istio's sample certificates, used unchanged.
const samples = "/work/shared/istio-samples/certs"

// TestTLSListenerFromFilesAndNACK runs the loom-proxy binary with a
// listener that terminates TLS with Istio's file secrets
// (file-cert:CERT~KEY and file-root:ROOT over the sds-grpc cluster), read
// from Istio's sample workload certificate; /config_dump lists the
// secrets without their key. A TLS field the proxy does not implement is
// NACKed with its path, and the proxy goes on serving TLS with the old
// generation.
func TestTLSListenerFromFilesAndNACK(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the loom-proxy binary")
	}
	if _, err := os.Stat(samples + "/workload-foo-cert.pem"); err != nil {
		t.Skipf("Istio sample certificates not found: %v", err)
	}
	bin := proxyBinary(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello over tls")
	}))
	defer up.Close()

	withTLS := func(extra func(dc *tlsv3.DownstreamTlsContext)) func(l *listenerv3.Listener) {
		return func(l *listenerv3.Listener) {
			dc := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				AlpnProtocols: []string{"h2", "http/1.1"},
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{
					xdstest.SDSGRPC("file-cert:" + samples + "/workload-foo-cert.pem~" + samples + "/workload-foo-key.pem")},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: xdstest.SDSGRPC("file-root:" + samples + "/root-cert.pem")},
			}}
			if extra != nil {
				extra(dc)
			}
			l.FilterChains[0].TransportSocket = xdstest.TLSSocket(t, dc)
		}
	}
	ads := startADS(t)
	proxyAddr, adminAddr := freeAddr(t), freeAddr(t)
	setSnapshotWith(t, ads.snaps, "1", proxyAddr, up.Listener.Addr().String(), "/.*", withTLS(nil))
	p := runProxy(t, bin, ads.addr, adminAddr)

	rootPEM, err := os.ReadFile(samples + "/root-cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{
		// The sample certificate has a SPIFFE ID and no DNS name: verify
		// the chain and the ID, as a mesh client does.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return err
			}
			if u := cs.PeerCertificates[0].URIs; len(u) == 0 || u[0].String() != "spiffe://trust-domain-foo/ns/foo/sa/foo" {
				return errors.New("unexpected server identity")
			}
			return nil
		}}}
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	defer tr.CloseIdleConnections()
	get := func() (string, error) {
		resp, err := client.Get("https://" + proxyAddr + "/hello")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.Proto + " " + string(b), err
	}
	waitFor(t, "a request over TLS through the proxy", func() bool {
		body, err := get()
		return err == nil && body == "HTTP/2.0 hello over tls"
	})

	dump := httpBody(t, "http://"+adminAddr+"/config_dump")
	if !strings.Contains(dump, "SecretsConfigDump") || !strings.Contains(dump, "file-cert:"+samples) ||
		!strings.Contains(dump, "[redacted]") || strings.Contains(dump, "PRIVATE KEY") {
		t.Errorf("config_dump: want the secrets, their keys redacted:\n%s", dump)
	}

	// session_timeout is not implemented: NACKed with its path.
	setSnapshotWith(t, ads.snaps, "2", proxyAddr, up.Listener.Addr().String(), "/.*", withTLS(func(dc *tlsv3.DownstreamTlsContext) {
		dc.SessionTimeout = durationpb.New(time.Minute)
	}))
	nack := ads.waitNACK(t, xdsapi.ListenerType)
	const want = `listener "virtualOutbound": filter_chains[0].transport_socket.typed_config.session_timeout: not supported`
	if msg := nack.GetErrorDetail().GetMessage(); msg != want {
		t.Errorf("NACK error %q, want %q", msg, want)
	}
	for range 3 {
		if body, err := get(); err != nil || body != "HTTP/2.0 hello over tls" {
			t.Fatalf("after the NACK: %q, %v; want the old generation's TLS listener", body, err)
		}
	}
	if err := p.terminate(); err != nil {
		t.Errorf("proxy exit after SIGTERM: %v", err)
	}
}

func httpBody(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
	loomapi "github.com/loom-mesh/loom/internal/loomctl"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// agentStatus is the part of a proxy's /agent this test reads.
type agentStatus struct {
	Serial    string `json:"serial"`
	Rotations uint64 `json:"rotations"`
	LastError string `json:"last_error"`
}

// certsPage is the part of Envoy's /certs this test reads.
type certsPage struct {
	Certificates []struct {
		CertChain []struct {
			Path            string `json:"path"`
			SerialNumber    string `json:"serial_number"`
			SubjectAltNames []struct {
				URI string `json:"uri"`
			} `json:"subject_alt_names"`
		} `json:"cert_chain"`
		CACert []struct {
			Path string `json:"path"`
		} `json:"ca_cert"`
	} `json:"certificates"`
}

func getJSON(url string, v any) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.Unmarshal(b, v)
}

// TestCertificateAuthority runs loomd with its CA (4 s certificates) and
// three loom-proxy processes with bootstrap tokens minted by `loomctl token
// create`:
//   - httpbin-v1 gets its certificate and takes its xDS over mTLS on
//     15012 only, so its being SYNCED shows the mTLS xDS path; it rotates;
//   - sleep-v1 gets its certificate and keeps plaintext xDS on 15010 (the
//     demo's setup);
//   - intruder holds httpbin's token but claims service account ratings:
//     its CSR is refused (PermissionDenied) and it gets no certificate.
//
// Then no line any process wrote holds a PEM private key header or a
// token.
func TestCertificateAuthority(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	const prefix = "127.87.0"
	m := &appMesh{t: t, prefix: prefix, configDir: t.TempDir(), logsDir: t.TempDir()}
	t.Cleanup(m.stop)
	dataDir := filepath.Join(t.TempDir(), "loomd-data")
	tokensDir := t.TempDir()
	ws := []appWorkload{
		{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11},
		{Name: "sleep-v1", App: "sleep", Version: "v1", Octet: 12},
	}
	if err := os.WriteFile(filepath.Join(m.configDir, "mesh.yaml"), []byte(meshYAML(prefix, ws)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Tokens first, as loomctl demo does: loomd reads the registry at
	// start (and again when it changes).
	var tokens []string
	mint := func(workload, sa string) string {
		file := filepath.Join(tokensDir, workload+".token")
		out, err := exec.Command(filepath.Join(binDir, "loomctl"), "token", "create", "--data-dir", dataDir,
			"--service-account", sa, "--workload", workload, "--out", file).CombinedOutput()
		if err != nil {
			t.Fatalf("loomctl token create: %v\n%s", err, out)
		}
		tok, err := bootstraptoken.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), tok) {
			t.Errorf("loomctl printed the token: %s", out)
		}
		tokens = append(tokens, tok)
		return file
	}
	httpbinToken, sleepToken := mint("httpbin-v1", "httpbin"), mint("sleep-v1", "sleep")

	xds, secure := m.ip(1)+":15010", m.ip(1)+":15012"
	m.start("loomd", "loomd", "--config-dir", m.configDir, "--xds-addr", xds, "--monitoring-addr", m.ip(1)+":15014", "--dashboard-addr", m.ip(1)+":20001",
		"--data-dir", dataDir, "--secure-xds-addr", secure, "--workload-cert-ttl", "4s", "--log-level", "debug")
	m.loomd = loomapi.NewClient(m.ip(1)+":15014", &http.Client{Timeout: 2 * time.Second})
	rootCert := filepath.Join(dataDir, "root-cert.pem")
	if !poll(20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ok, err := m.loomd.Ready(ctx)
		return err == nil && ok
	}) {
		t.Fatalf("loomd not ready\n%s", m.tails())
	}
	if fi, err := os.Stat(dataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", fi.Mode(), err)
	}

	sidecar := func(w appWorkload, sa, tokenFile, xdsAddr string, extra ...string) {
		args := append([]string{"sidecar", "--ip", m.ip(w.Octet), "--name", w.Name, "--namespace", "default",
			"--labels", "app=" + w.App + ",version=" + w.Version, "--service-account", sa, "--xds-addr", xdsAddr,
			"--ca-addr", secure, "--token-file", tokenFile, "--root-cert", rootCert, "--log-level", "debug"}, extra...)
		m.start(w.Name+"-proxy", "loom-proxy", args...)
	}
	sidecar(ws[0], "httpbin", httpbinToken, secure, "--xds-mtls")
	sidecar(ws[1], "sleep", sleepToken, xds)
	sidecar(appWorkload{Name: "intruder", App: "ratings", Version: "v1", Octet: 13}, "ratings", httpbinToken, xds)

	nodeID := func(w appWorkload) string {
		return xdsapi.NodeID{Type: xdsapi.Sidecar, IP: m.ip(w.Octet), Name: w.Name, Namespace: "default", Domain: "default.svc.cluster.local"}.String()
	}
	if !poll(30*time.Second, func() bool { return m.synced([]string{nodeID(ws[0]), nodeID(ws[1])}) }) {
		t.Fatalf("proxies not SYNCED (httpbin-v1 over mTLS on 15012, sleep-v1 on 15010)\n%s", m.tails())
	}

	for _, w := range []struct {
		octet int
		id    string
	}{{11, "spiffe://cluster.local/ns/default/sa/httpbin"}, {12, "spiffe://cluster.local/ns/default/sa/sleep"}} {
		admin := fmt.Sprintf("http://%s:15000", m.ip(w.octet))
		var page certsPage
		if !poll(20*time.Second, func() bool { return getJSON(admin+"/certs", &page) == nil && certURI(page) == w.id }) {
			t.Fatalf("%s/certs: no certificate for %s: %+v\n%s", admin, w.id, page, m.tails())
		}
	}
	// 4 s certificates rotate about every 2 s.
	var st agentStatus
	if !poll(20*time.Second, func() bool {
		return getJSON(fmt.Sprintf("http://%s:15000/agent", m.ip(11)), &st) == nil && st.Rotations >= 3 && st.LastError == ""
	}) {
		t.Fatalf("httpbin-v1 agent: %+v, want 3 certificates or more\n%s", st, m.tails())
	}
	var intruder agentStatus
	if !poll(20*time.Second, func() bool {
		return getJSON(fmt.Sprintf("http://%s:15000/agent", m.ip(13)), &intruder) == nil && intruder.LastError != ""
	}) {
		t.Fatalf("intruder agent: %+v\n%s", intruder, m.tails())
	}
	if !strings.Contains(intruder.LastError, "PermissionDenied") || intruder.Rotations != 0 || intruder.Serial != "" {
		t.Errorf("intruder agent: %+v, want PermissionDenied and no certificate", intruder)
	}

	// Nothing leaked: stop the processes so that their logs are complete.
	m.stop()
	logs := 0
	for _, p := range m.logs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		logs += len(b)
		for i, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "PRIVATE KEY-----") {
				t.Errorf("%s:%d holds a PEM private key header: %.200s", filepath.Base(p), i+1, line)
			}
			for _, tok := range tokens {
				if strings.Contains(line, tok) {
					t.Errorf("%s:%d holds a bootstrap token", filepath.Base(p), i+1)
				}
			}
		}
	}
	if logs == 0 {
		t.Fatal("the processes wrote no log: the leak check checked nothing")
	}
}

// certURI is the URI SAN of the "default" certificate in a /certs page.
func certURI(p certsPage) string {
	for _, c := range p.Certificates {
		for _, d := range c.CertChain {
			if d.Path == "default" && len(d.SubjectAltNames) > 0 {
				return d.SubjectAltNames[0].URI
			}
		}
	}
	return ""
}

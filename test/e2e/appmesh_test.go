package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	loomapi "github.com/loom-mesh/loom/internal/loomctl"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// appMesh is loomd plus one loom-proxy sidecar per workload on its own
// loopback /24, for scenarios that need backends bookinfo does not have.
// The apps are HTTP handlers served by the test process on IP:9080; the
// proxies and loomd are real processes, stopped by PID at cleanup. A
// client workload (no app) gives the test its own sidecar.
type appMesh struct {
	t         *testing.T
	prefix    string // "127.44.0"
	configDir string
	logsDir   string
	// meshConfig is loomd's --mesh-config file (empty: Istio's defaults);
	// setMeshConfig rewrites it.
	meshConfig string
	loomd      *loomapi.Client
	procs      []*exec.Cmd
	logs       []string
}

// appWorkload is one instance of a service in an appMesh.
type appWorkload struct {
	Name    string // "httpbin-v1": the WorkloadEntry and the proxy's name
	App     string // "httpbin": the service, httpbin.default.svc.cluster.local
	Version string // the version label, for subsets
	Octet   int    // the workload's IP is prefix.Octet
	// Handler serves the app on IP:9080; nil for a client workload, which
	// has a sidecar and no app.
	Handler http.Handler
	// Protocol is the ServiceEntry port's protocol: "HTTP" when empty.
	Protocol string
	// Port is the ServiceEntry port's number: 9080 when 0.
	Port int
	// NoServiceEntry leaves the app without a ServiceEntry: its service
	// comes from the extra YAML (a Kubernetes Service selecting app=App).
	NoServiceEntry bool
	// Locality is the WorkloadEntry's locality and the proxy's
	// --locality, "region/zone/subzone"; none when empty.
	Locality string
	// Gateway makes the workload an ingress gateway: a `loom-proxy
	// router` in istio-system labelled istio=ingressgateway (App is its
	// app label), with no app, ServiceEntry or WorkloadEntry.
	Gateway bool
	// ProxyArgs are extra flags of the workload's sidecar.
	ProxyArgs []string
}

// clientOctet is the client workload's address in every appMesh.
const clientOctet = 100

// startAppMesh writes a ServiceEntry per app and a WorkloadEntry per
// workload plus extra (Istio YAML) into a config dir, starts the handlers,
// loomd and the sidecars, and waits until every proxy is SYNCED.
func startAppMesh(t *testing.T, prefix string, workloads []appWorkload, extra string) *appMesh {
	t.Helper()
	return startAppMeshArgs(t, prefix, workloads, extra)
}

// startAppMeshArgs is startAppMesh with extra loomd flags.
func startAppMeshArgs(t *testing.T, prefix string, workloads []appWorkload, extra string, loomdArgs ...string) *appMesh {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	m := &appMesh{t: t, prefix: prefix, configDir: t.TempDir(), logsDir: t.TempDir()}
	m.meshConfig = filepath.Join(t.TempDir(), "meshconfig.yaml")
	t.Cleanup(m.stop)
	if err := os.WriteFile(m.meshConfig, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A workload named "client" (at clientOctet) replaces the default one.
	if !slices.ContainsFunc(workloads, func(w appWorkload) bool { return w.Name == "client" }) {
		workloads = append(workloads, appWorkload{Name: "client", App: "client", Version: "v1", Octet: clientOctet})
	}
	if err := os.WriteFile(filepath.Join(m.configDir, "mesh.yaml"), []byte(meshYAML(prefix, workloads)), 0o644); err != nil {
		t.Fatal(err)
	}
	if extra != "" {
		if err := os.WriteFile(filepath.Join(m.configDir, "extra.yaml"), []byte(extra), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range workloads {
		if w.Handler == nil {
			continue
		}
		ln, err := net.Listen("tcp", m.ip(w.Octet)+":9080")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: w.Handler, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	xds := m.ip(1) + ":15010"
	m.start("loomd", "loomd", append([]string{"--config-dir", m.configDir, "--xds-addr", xds, "--monitoring-addr", m.ip(1) + ":15014",
		"--dashboard-addr", m.ip(1) + ":20001", "--mesh-config", m.meshConfig}, loomdArgs...)...)
	var want []string
	for _, w := range workloads {
		if w.Gateway {
			m.start(w.Name+"-proxy", "loom-proxy", "router", "--ip", m.ip(w.Octet), "--name", w.Name, "--namespace", "istio-system",
				"--labels", "app="+w.App+",istio=ingressgateway", "--service-account", w.App, "--xds-addr", xds)
			want = append(want, xdsapi.NodeID{Type: xdsapi.Router, IP: m.ip(w.Octet), Name: w.Name, Namespace: "istio-system", Domain: "istio-system.svc.cluster.local"}.String())
			continue
		}
		args := []string{"sidecar", "--ip", m.ip(w.Octet), "--name", w.Name, "--namespace", "default",
			"--labels", "app=" + w.App + ",version=" + w.Version, "--service-account", w.App, "--xds-addr", xds}
		if w.Locality != "" {
			args = append(args, "--locality", w.Locality)
		}
		args = append(args, w.ProxyArgs...)
		m.start(w.Name+"-proxy", "loom-proxy", args...)
		want = append(want, xdsapi.NodeID{Type: xdsapi.Sidecar, IP: m.ip(w.Octet), Name: w.Name, Namespace: "default", Domain: "default.svc.cluster.local"}.String())
	}
	m.loomd = loomapi.NewClient(m.ip(1)+":15014", &http.Client{Timeout: 2 * time.Second})
	if !poll(30*time.Second, func() bool { return m.synced(want) }) {
		t.Fatalf("the mesh's proxies are not all SYNCED after 30 s\n%s", m.tails())
	}
	return m
}

func (m *appMesh) ip(octet int) string { return fmt.Sprintf("%s.%d", m.prefix, octet) }

// pid is the PID of the process the mesh started as name ("client-proxy").
func (m *appMesh) pid(name string) int {
	m.t.Helper()
	for i, l := range m.logs {
		if filepath.Base(l) == name+".log" {
			return m.procs[i].Process.Pid
		}
	}
	m.t.Fatalf("no process %s in the mesh", name)
	return 0
}

// start runs binary with args, its output in logsDir/name.log.
func (m *appMesh) start(name, binary string, args ...string) {
	t := m.t
	logPath := filepath.Join(m.logsDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(filepath.Join(binDir, binary), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = envWithout("HTTP_PROXY")
	cmd.SysProcAttr = demoSysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.procs = append(m.procs, cmd)
	m.logs = append(m.logs, logPath)
}

func (m *appMesh) synced(want []string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ss, err := m.loomd.Syncz(ctx)
	if err != nil {
		return false
	}
	byID := map[string]loomapi.SyncStatus{}
	for _, s := range ss {
		byID[s.ID] = s
	}
	for _, id := range want {
		s, ok := byID[id]
		if !ok || !loomapi.AllSynced([]loomapi.SyncStatus{s}) {
			return false
		}
	}
	return true
}

// apply applies Istio YAML through loomd's config API and waits until
// every proxy has ACKed a push made after it: some type's ACKed version
// moved on every proxy, and all are SYNCED.
func (m *appMesh) apply(yaml string) { m.t.Helper(); m.applyFor(yaml) }

// applyFor is apply for config that changes only some proxies' resources
// (an EnvoyFilter with a selector, say): it waits for a new push to the
// proxies whose names are given (all when none are), and for all to be
// SYNCED.
func (m *appMesh) applyFor(yaml string, proxies ...string) {
	m.t.Helper()
	before := m.ackedVersions()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.loomd.Apply(ctx, "e2e", []byte(yaml)); err != nil {
		m.t.Fatalf("apply: %v", err)
	}
	m.waitPushedSince(before, proxies...)
}

// setMeshConfig replaces loomd's mesh config file (written beside and
// renamed) and waits until every proxy has ACKed a push made after it.
func (m *appMesh) setMeshConfig(yaml string) {
	m.t.Helper()
	before := m.ackedVersions()
	tmp := m.meshConfig + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, m.meshConfig); err != nil {
		m.t.Fatal(err)
	}
	m.waitPushedSince(before)
}

// waitPushedSince waits until some type's ACKed version moved since
// before on every proxy named (node ID "sidecar~IP~NAME.NS~..."; all
// proxies when none are named), and all are SYNCED.
func (m *appMesh) waitPushedSince(before map[string]string, proxies ...string) {
	m.t.Helper()
	named := func(id string) bool {
		if len(proxies) == 0 {
			return true
		}
		for _, p := range proxies {
			if strings.Contains(id, "~"+p+".") {
				return true
			}
		}
		return false
	}
	pushed := func() bool {
		after := m.ackedVersions()
		if after == nil || len(after) != len(before) {
			return false
		}
		for id, v := range after {
			if named(id) && v == before[id] {
				return false
			}
		}
		return m.allSynced()
	}
	if !poll(10*time.Second, pushed) {
		m.t.Fatalf("proxies did not ACK a new push within 10 s of apply\n%s", m.tails())
	}
}

// ackedVersions maps each proxy to its ACKed versions of all types.
func (m *appMesh) ackedVersions() map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ss, err := m.loomd.Syncz(ctx)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, s := range ss {
		var vs []string
		for _, ty := range s.Types {
			vs = append(vs, ty.Short+"="+ty.Acked)
		}
		sort.Strings(vs)
		out[s.ID] = strings.Join(vs, ",")
	}
	return out
}

func (m *appMesh) allSynced() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ss, err := m.loomd.Syncz(ctx)
	return err == nil && len(ss) > 0 && loomapi.AllSynced(ss)
}

// client returns an HTTP client whose requests go through the client
// workload's sidecar (explicit mode: HTTP_PROXY), as an app's would.
func (m *appMesh) client(timeout time.Duration) *http.Client {
	proxy := &url.URL{Scheme: "http", Host: m.ip(clientOctet) + ":15001"}
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{Proxy: http.ProxyURL(proxy), MaxIdleConnsPerHost: 16, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// stop ends every process by PID (SIGTERM, then SIGKILL after 5 s).
func (m *appMesh) stop() {
	for _, cmd := range m.procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range m.procs {
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	outputs := logFiles(m.t, m.logs...)
	if len(m.logs) > 0 && len(outputs) == 0 {
		m.t.Error("the leak check read no process log")
	}
	checkNoSecrets(m.t, outputs)
	if m.t.Failed() {
		m.t.Log(m.tails())
	}
}

// tails returns the last lines of every process's log.
func (m *appMesh) tails() string {
	var b strings.Builder
	for _, p := range m.logs {
		data, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", filepath.Base(p), strings.Join(lines, "\n"))
	}
	return b.String()
}

// meshYAML is the registry of an appMesh: a ServiceEntry per app (port
// 9080 unless the app's workloads set Port) and a WorkloadEntry per workload, in the mesh with sidecars.
func meshYAML(prefix string, ws []appWorkload) string {
	protocols, ports := map[string]string{}, map[string]int{}
	ws = slices.DeleteFunc(slices.Clone(ws), func(w appWorkload) bool { return w.Gateway })
	for _, w := range ws {
		if w.NoServiceEntry {
			continue
		}
		p := w.Protocol
		if p == "" {
			p = "HTTP"
		}
		protocols[w.App] = p
		ports[w.App] = cmp.Or(w.Port, 9080)
	}
	apps := make([]string, 0, len(protocols))
	for a := range protocols {
		apps = append(apps, a)
	}
	sort.Strings(apps)
	var b strings.Builder
	for _, a := range apps {
		fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s, namespace: default}
spec:
  hosts: [%[1]s.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: %[4]d, name: %[3]s, protocol: %[2]s}]
  workloadSelector: {labels: {app: %[1]s}}
---
`, a, protocols[a], strings.ToLower(protocols[a]), ports[a])
	}
	for _, w := range ws {
		fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %s, namespace: default}
spec:
  address: %s.%d
  labels: {app: %s, version: %s, security.istio.io/tlsMode: istio}
  serviceAccount: %s
  locality: %q
---
`, w.Name, prefix, w.Octet, w.App, w.Version, w.App, w.Locality)
	}
	return b.String()
}

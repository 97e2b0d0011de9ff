package local

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
	"github.com/loom-mesh/loom/internal/controlplane/config"
)

func TestSubnetPrefix(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"127.0.0.0/24", "127.0.0", false},
		{"127.42.0.0/24", "127.42.0", false},
		{"127.42.7.9/24", "127.42.7", false},
		{"127.0.0.0/25", "", true},
		{"10.0.0.0/24", "", true},
		{"::1/128", "", true},
		{"nonsense", "", true},
	}
	for _, tt := range tests {
		got, err := subnetPrefix(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("subnetPrefix(%q) = %q, %v; want %q, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestPlan(t *testing.T) {
	loomd, rest, proxies, tokens := plan("127.42.0", "/cfg", "/st", func() string { return "abcde" })
	want := process{Name: "loomd", Binary: "loomd", Args: []string{"--config-dir", "/cfg", "--xds-addr", "127.42.0.1:15010", "--monitoring-addr", "127.42.0.1:15014",
		"--dashboard-addr", "127.42.0.1:20001",
		"--data-dir", "/st/loomd", "--secure-xds-addr", "127.42.0.1:15012"}}
	if diff := cmp.Diff(want, loomd); diff != "" {
		t.Errorf("loomd (-want +got):\n%s", diff)
	}
	byName := map[string]process{}
	for _, p := range rest {
		byName[p.Name] = p
	}
	if len(byName) != 13 || len(rest) != 13 {
		t.Fatalf("got %d processes (%d names), want 6 apps, 6 sidecars, 1 router", len(rest), len(byName))
	}
	wantProcs := []process{
		{Name: "reviews-v2", Binary: "bookinfo", Args: []string{"reviews", "--listen", "127.42.0.14:9080", "--version", "v2", "--instance", "reviews-v2-abcde"}, HTTPProxy: "http://127.42.0.14:15001"},
		{Name: "reviews-v2-proxy", Binary: "loom-proxy", Args: []string{"sidecar", "--ip", "127.42.0.14", "--name", "reviews-v2", "--namespace", "default", "--labels", "app=reviews,version=v2", "--service-account", "bookinfo-reviews", "--xds-addr", "127.42.0.1:15010",
			"--ca-addr", "127.42.0.1:15012", "--token-file", "/st/workloads/reviews-v2.token", "--root-cert", "/st/loomd/root-cert.pem"}},
		{Name: "istio-ingressgateway", Binary: "loom-proxy", Args: []string{"router", "--ip", "127.42.0.10", "--name", "istio-ingressgateway", "--namespace", "istio-system", "--labels", "istio=ingressgateway,app=istio-ingressgateway",
			"--service-account", "istio-ingressgateway-service-account", "--xds-addr", "127.42.0.1:15010",
			"--ca-addr", "127.42.0.1:15012", "--token-file", "/st/workloads/istio-ingressgateway.token", "--root-cert", "/st/loomd/root-cert.pem"}},
	}
	for _, w := range wantProcs {
		if diff := cmp.Diff(w, byName[w.Name]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", w.Name, diff)
		}
	}
	if len(proxies) != 7 {
		t.Fatalf("got %d proxies, want 7", len(proxies))
	}
	if len(tokens) != 7 {
		t.Fatalf("got %d tokens, want one per proxy", len(tokens))
	}
	if diff := cmp.Diff(workloadToken{File: "/st/workloads/istio-ingressgateway.token", Binding: bootstraptoken.Binding{
		Namespace: "istio-system", ServiceAccount: "istio-ingressgateway-service-account", Workload: "istio-ingressgateway"}}, tokens[6]); diff != "" {
		t.Errorf("gateway token (-want +got):\n%s", diff)
	}
	if got, want := proxies[0].NodeID, "sidecar~127.42.0.11~productpage-v1.default~default.svc.cluster.local"; got != want {
		t.Errorf("first proxy = %q, want %q", got, want)
	}
	if got, want := proxies[6].NodeID, "router~127.42.0.10~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"; got != want {
		t.Errorf("router = %q, want %q", got, want)
	}
}

func TestGatewayYAMLIsIstios(t *testing.T) {
	path := "../../../shared/istio-samples/bookinfo/networking/bookinfo-gateway.yaml"
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not present: nothing to compare with", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(data), bookinfoGatewayYAML); diff != "" {
		t.Errorf("bookinfoGatewayYAML differs from Istio's sample (-istio +ours):\n%s", diff)
	}
}

func TestMeshConfigDecodes(t *testing.T) {
	data, err := servicesYAML()
	if err != nil {
		t.Fatal(err)
	}
	ses, errs := config.Decode("services.yaml", data)
	if len(errs) > 0 {
		t.Fatalf("services.yaml: %v", errs)
	}
	if len(ses) != 4 {
		t.Fatalf("got %d ServiceEntries, want 4", len(ses))
	}
	se := ses[2].Spec.(*networking.ServiceEntry)
	if ses[2].Name != "reviews" || se.GetHosts()[0] != "reviews.default.svc.cluster.local" || se.GetWorkloadSelector().GetLabels()["app"] != "reviews" ||
		se.GetResolution() != networking.ServiceEntry_STATIC || se.GetPorts()[0].GetNumber() != 9080 {
		t.Errorf("reviews ServiceEntry = %v", se)
	}
	wes, errs := config.Decode("workloads.yaml", workloadEntriesYAML("127.42.0"))
	if len(errs) > 0 {
		t.Fatalf("workloads.yaml: %v", errs)
	}
	got := map[string]string{}
	for _, r := range wes {
		we := r.Spec.(*networking.WorkloadEntry)
		got[r.Name] = we.GetAddress() + " " + we.GetLabels()["app"] + " " + we.GetLabels()["version"] + " " + we.GetLabels()["security.istio.io/tlsMode"] + " " + we.GetServiceAccount()
	}
	want := map[string]string{
		"productpage-v1": "127.42.0.11 productpage v1 istio bookinfo-productpage",
		"details-v1":     "127.42.0.12 details v1 istio bookinfo-details",
		"reviews-v1":     "127.42.0.13 reviews v1 istio bookinfo-reviews",
		"reviews-v2":     "127.42.0.14 reviews v2 istio bookinfo-reviews",
		"reviews-v3":     "127.42.0.15 reviews v3 istio bookinfo-reviews",
		"ratings-v1":     "127.42.0.16 ratings v1 istio bookinfo-ratings",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WorkloadEntries (-want +got):\n%s", diff)
	}
}

func TestNewMissingBinary(t *testing.T) {
	_, err := New(Options{BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make build") || !strings.Contains(err.Error(), "loomd") {
		t.Fatalf("New with an empty bin dir: err = %v, want one naming loomd and make build", err)
	}
}

func TestChildEnv(t *testing.T) {
	t.Setenv("NO_PROXY", "example.com")
	t.Setenv("http_proxy", "http://corp:3128")
	env := childEnv("http://127.0.0.13:15001")
	var got []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY":
			got = append(got, kv)
		}
	}
	if diff := cmp.Diff([]string{"HTTP_PROXY=http://127.0.0.13:15001"}, got); diff != "" {
		t.Errorf("proxy variables (-want +got):\n%s", diff)
	}
}

func TestForwarder(t *testing.T) {
	// An echo server stands in for the ingress gateway.
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		c, err := up.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newForwarder(ln, up.Addr().String(), slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() { defer close(done); f.serve() }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Errorf("through the forwarder: %q, %v; want hello", got, err)
	}
	c.Close()
	f.close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("forwarder did not stop")
	}
	<-upDone
}

func TestSupervisorStops(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	s := &supervisor{logsDir: t.TempDir(), stopTimeout: 300 * time.Millisecond, exited: make(chan childExit, 4), log: slog.New(slog.DiscardHandler)}
	// One child stops on SIGTERM; the other ignores it and must be killed.
	if err := s.start(process{Name: "polite", Args: []string{"-c", "echo up; exec sleep 30"}}, sh); err != nil {
		t.Fatal(err)
	}
	if err := s.start(process{Name: "stubborn", Args: []string{"-c", "trap '' TERM; echo up; while :; do sleep 1; done"}}, sh); err != nil {
		t.Fatal(err)
	}
	pids := []int{s.children[0].cmd.Process.Pid, s.children[1].cmd.Process.Pid}
	// Both must have set up their signal handling before we stop them.
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range []string{"polite", "stubborn"} {
		for {
			data, _ := os.ReadFile(filepath.Join(s.logsDir, n+".log"))
			if strings.Contains(string(data), "up") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not start", n)
			}
			time.Sleep(10 * time.Millisecond) // poll interval
		}
	}
	start := time.Now()
	s.stopAll()
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("stopAll took %s, want the 300ms grace period then a kill", d)
	}
	for _, pid := range pids {
		if err := syscallKill0(pid); err == nil {
			t.Errorf("pid %d still exists after stopAll", pid)
		}
	}
}

func TestSupervisorReportsEarlyExit(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	s := &supervisor{logsDir: t.TempDir(), stopTimeout: time.Second, exited: make(chan childExit, 4), log: slog.New(slog.DiscardHandler)}
	defer s.stopAll()
	if err := s.start(process{Name: "crasher", Args: []string{"-c", "echo listen 127.0.0.1:9080: address already in use; exit 3"}}, sh); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-s.exited:
		err := s.exitError(ex)
		for _, want := range []string{"crasher stopped early", "exit status 3", "address already in use"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit reported")
	}
}

func TestPrepareDirs(t *testing.T) {
	var out bytes.Buffer
	state := filepath.Join(t.TempDir(), "state")
	r := &Runtime{opts: Options{ConfigDir: filepath.Join(t.TempDir(), "cfg"), LogsDir: filepath.Join(t.TempDir(), "logs"), StateDir: state, Out: &out}, prefix: "127.42.0"}
	cfg, logs, gotState, err := r.prepareDirs()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"services.yaml", "workloads.yaml", "bookinfo-gateway.yaml"} {
		if _, err := os.Stat(filepath.Join(cfg, f)); err != nil {
			t.Errorf("config file: %v", err)
		}
	}
	if fi, err := os.Stat(logs); err != nil || !fi.IsDir() {
		t.Errorf("logs dir: %v", err)
	}
	if fi, err := os.Stat(gotState); gotState != state || err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir %q: %v %v", gotState, fi.Mode(), err)
	}
}

// TestMintTokens: every proxy of the plan gets a token file (0600) whose
// token loomd's registry binds to the proxy's namespace and service
// account.
func TestMintTokens(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	_, _, _, tokens := plan("127.42.0", "/cfg", state, func() string { return "abcde" })
	if err := mintTokens(state, tokens); err != nil {
		t.Fatal(err)
	}
	entries, bad, err := bootstraptoken.LoadRegistry(bootstraptoken.RegistryDir(filepath.Join(state, "loomd")))
	if err != nil || len(bad) != 0 || len(entries) != 7 {
		t.Fatalf("registry: %d entries, bad %v, err %v", len(entries), bad, err)
	}
	byWorkload := map[string]bootstraptoken.Entry{}
	for _, e := range entries {
		byWorkload[e.Workload] = e
	}
	for _, tok := range tokens {
		fi, err := os.Stat(tok.File)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("token file %s: %v %v", tok.File, fi.Mode(), err)
		}
		v, err := bootstraptoken.ReadFile(tok.File)
		if err != nil {
			t.Fatal(err)
		}
		e := byWorkload[tok.Binding.Workload]
		sum := bootstraptoken.Hash(v)
		if e.SHA256 != hex.EncodeToString(sum[:]) || e.Binding != tok.Binding {
			t.Errorf("%s: registry entry %+v does not bind its token to %+v", tok.File, e, tok.Binding)
		}
	}
	for _, d := range []string{filepath.Join(state, "loomd"), filepath.Join(state, "workloads")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, fi.Mode(), err)
		}
	}
}

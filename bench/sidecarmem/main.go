// Command sidecarmem measures the memory of a sidecar that holds the routes
// of many services: it writes -services ServiceEntries, each with two
// WorkloadEntries, a DestinationRule with two subsets and a VirtualService
// splitting 90/10 between them, starts loomd and one loom-proxy from
// -bin-dir on their own loopback addresses, waits until the proxy has
// ACKed all four xDS types, lets it settle, and prints the proxy's and
// loomd's resident memory (VmRSS now, VmHWM peak) and the time to sync.
// With -scoped it also writes a Sidecar in namespace default (no
// workloadSelector) importing only every tenth service
// ("./svc-0.default.svc.cluster.local", "./svc-10...", ...), so the
// proxy holds 10 % of the mesh: run it with and without to see what
// scoping saves. Every process it starts is stopped by PID before it
// exits.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loom-mesh/loom/internal/loomctl"
)

func main() {
	binDir := flag.String("bin-dir", "bin", "directory holding loomd and loom-proxy")
	n := flag.Int("services", 1000, "number of services (1..5000)")
	prefix := flag.String("prefix", "127.0.57.", "loopback /24 prefix for loomd and the proxy")
	settle := flag.Duration("settle", 3*time.Second, "wait after sync before reading memory")
	scoped := flag.Bool("scoped", false, "also write a Sidecar in namespace default importing only every tenth service")
	flag.Parse()
	if *n < 1 || *n > 5000 {
		fmt.Fprintln(os.Stderr, "sidecarmem: -services must be 1..5000")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *binDir, *prefix, *n, *settle, *scoped); err != nil {
		fmt.Fprintln(os.Stderr, "sidecarmem:", err)
		os.Exit(1)
	}
}

// meshYAML is n services svc-I, each with endpoints in 127.58.0.0/16 (no
// process listens there: only the config matters), subsets v1 and v2 and
// a 90/10 VirtualService.
func meshYAML(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-%[1]d}
spec:
  hosts: [svc-%[1]d.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: svc-%[1]d}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-%[1]d-v1}
spec: {address: "127.58.%[2]d.%[3]d", labels: {app: svc-%[1]d, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-%[1]d-v2}
spec: {address: "127.59.%[2]d.%[3]d", labels: {app: svc-%[1]d, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-%[1]d}
spec:
  host: svc-%[1]d
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-%[1]d}
spec:
  hosts: [svc-%[1]d]
  http:
  - route:
    - {destination: {host: svc-%[1]d, subset: v1}, weight: 90}
    - {destination: {host: svc-%[1]d, subset: v2}, weight: 10}
    retries: {attempts: 2, retryOn: 5xx}
---
`, i, i/250, i%250+1)
	}
	return b.String()
}

// sidecarYAML is the Sidecar of namespace default importing svc-0,
// svc-10, ... of n services.
func sidecarYAML(n int) string {
	var b strings.Builder
	b.WriteString("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress:\n  - hosts:\n")
	for i := 0; i < n; i += 10 {
		fmt.Fprintf(&b, "    - ./svc-%d.default.svc.cluster.local\n", i)
	}
	return b.String()
}

func run(ctx context.Context, binDir, prefix string, n int, settle time.Duration, scoped bool) error {
	dir, err := os.MkdirTemp("", "loom-sidecarmem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "config")
	if err := os.Mkdir(cfg, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg, "mesh.yaml"), []byte(meshYAML(n)), 0o644); err != nil {
		return err
	}
	if scoped {
		if err := os.WriteFile(filepath.Join(cfg, "sidecar.yaml"), []byte(sidecarYAML(n)), 0o644); err != nil {
			return err
		}
	}

	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				p.Process.Kill()
				<-done
			}
		}
	}()
	start := func(name string, args ...string) (*exec.Cmd, error) {
		c := exec.Command(filepath.Join(binDir, name), args...)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return nil, err
		}
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, c)
		return c, nil
	}
	loomd, err := start("loomd", "--config-dir", cfg, "--xds-addr", prefix+"1:15010", "--monitoring-addr", prefix+"1:15014", "--dashboard-addr", "off", "--log-level", "warn")
	if err != nil {
		return err
	}
	t0 := time.Now()
	proxy, err := start("loom-proxy", "sidecar", "--ip", prefix+"2", "--name", "client", "--namespace", "default",
		"--labels", "app=client", "--xds-addr", prefix+"1:15010", "--log-level", "warn", "--access-log=false")
	if err != nil {
		return err
	}
	api := loomctl.NewClient(prefix+"1:15014", &http.Client{Timeout: 2 * time.Second})
	synced := false
	for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		ss, err := api.Syncz(c)
		cancel()
		if err == nil && len(ss) == 1 && loomctl.AllSynced(ss) {
			synced = true
			break
		}
	}
	if !synced {
		return fmt.Errorf("the proxy did not sync %d services within 120 s (logs in %s)", n, dir)
	}
	syncTime := time.Since(t0)
	time.Sleep(settle) // let the proxy's GC run once the update is built
	pr, err := memory(proxy.Process.Pid)
	if err != nil {
		return err
	}
	lr, err := memory(loomd.Process.Pid)
	if err != nil {
		return err
	}
	held := fmt.Sprintf("%d services", n)
	if scoped {
		held = fmt.Sprintf("%d of %d services (a Sidecar imports every tenth)", (n+9)/10, n)
	}
	fmt.Printf("sidecar holding %s (each: 2 endpoints, 2 subsets, a 90/10 route with retries)\n", held)
	fmt.Printf("| process | VmRSS | VmHWM |\n|---|---|---|\n")
	fmt.Printf("| loom-proxy | %.1f MiB | %.1f MiB |\n| loomd | %.1f MiB | %.1f MiB |\n", pr.rss, pr.hwm, lr.rss, lr.hwm)
	fmt.Printf("time from proxy start to all four types ACKed: %v\n", syncTime.Round(time.Millisecond))
	return nil
}

type mem struct{ rss, hwm float64 } // MiB

// memory reads VmRSS and VmHWM of pid from /proc (Linux).
func memory(pid int) (mem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return mem{}, err
	}
	defer f.Close()
	var m mem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb float64
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%f", &kb)
			m.rss = kb / 1024
		case strings.HasPrefix(line, "VmHWM:"):
			fmt.Sscanf(strings.TrimPrefix(line, "VmHWM:"), "%f", &kb)
			m.hwm = kb / 1024
		}
	}
	if m.rss == 0 {
		return m, errors.New("no VmRSS in /proc/" + fmt.Sprint(pid) + "/status")
	}
	return m, sc.Err()
}

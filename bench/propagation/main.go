// Command propagation measures Loom's config propagation: the time from a
// file write in loomd's --config-dir to the first request a real loom-proxy
// routes by the new rule. It starts loomd and one sidecar from -bin-dir on
// its own loopback addresses, two in-process upstreams (v1, v2), and flips a
// VirtualService between them -n times, polling through the proxy every
// millisecond. Every process it starts is stopped by PID before it exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	binDir := flag.String("bin-dir", "bin", "directory holding loomd and loom-proxy")
	n := flag.Int("n", 20, "number of config flips to time (1..1000)")
	prefix := flag.String("prefix", "127.0.55.", "loopback /24 prefix to use")
	flag.Parse()
	if *n < 1 || *n > 1000 {
		fmt.Fprintln(os.Stderr, "propagation: -n must be 1..1000")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *binDir, *prefix, *n); err != nil {
		fmt.Fprintln(os.Stderr, "propagation:", err)
		os.Exit(1)
	}
}

const mesh = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-v1}
spec: {address: "PREFIX3", labels: {app: echo, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-v2}
spec: {address: "PREFIX4", labels: {app: echo, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

const vs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - route:
    - destination: {host: echo, subset: SUBSET}
`

func run(ctx context.Context, binDir, prefix string, n int) error {
	dir, err := os.MkdirTemp("", "loom-propagation-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "config")
	if err := os.Mkdir(cfg, 0o755); err != nil {
		return err
	}
	m := strings.ReplaceAll(mesh, "PREFIX", prefix)
	if err := os.WriteFile(filepath.Join(cfg, "mesh.yaml"), []byte(m), 0o644); err != nil {
		return err
	}
	vsPath := filepath.Join(cfg, "vs.yaml")
	writeVS := func(subset string) error {
		tmp := vsPath + ".tmp"
		if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(vs, "SUBSET", subset)), 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, vsPath)
	}
	if err := writeVS("v1"); err != nil {
		return err
	}

	for _, v := range []string{"v1", "v2"} {
		addr := prefix + map[string]string{"v1": "3", "v2": "4"}[v] + ":9080"
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("upstream %s: %w", v, err)
		}
		body := []byte(v)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) })}
		go srv.Serve(ln)
		defer srv.Close()
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
	start := func(name string, args ...string) error {
		c := exec.Command(filepath.Join(binDir, name), args...)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return err
		}
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, c)
		return nil
	}
	if err := start("loomd", "--config-dir", cfg, "--xds-addr", prefix+"1:15010", "--monitoring-addr", prefix+"1:15014", "--dashboard-addr", "off", "--log-level", "warn"); err != nil {
		return err
	}
	if err := start("loom-proxy", "sidecar", "--ip", prefix+"2", "--name", "client", "--namespace", "default",
		"--labels", "app=client", "--xds-addr", prefix+"1:15010", "--log-level", "warn", "--access-log=false"); err != nil {
		return err
	}

	proxyURL, _ := url.Parse("http://" + prefix + "2:15001")
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	get := func() string {
		resp, err := client.Get("http://echo:9080/")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return ""
		}
		return string(b)
	}
	waitFor := func(want string, limit time.Duration) (time.Duration, error) {
		t0 := time.Now()
		for time.Since(t0) < limit {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if get() == want {
				return time.Since(t0), nil
			}
			time.Sleep(time.Millisecond)
		}
		return 0, fmt.Errorf("no %s response within %v (logs in %s)", want, limit, dir)
	}
	if _, err := waitFor("v1", 30*time.Second); err != nil {
		return errors.New("mesh did not come up: " + err.Error())
	}

	var ds []time.Duration
	subset := "v1"
	for i := 0; i < n; i++ {
		subset = map[string]string{"v1": "v2", "v2": "v1"}[subset]
		if err := writeVS(subset); err != nil {
			return err
		}
		d, err := waitFor(subset, 10*time.Second)
		if err != nil {
			return err
		}
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1)+0.5)] }
	fmt.Printf("config propagation (file write in --config-dir -> first request routed by the new rule), n=%d\n", n)
	fmt.Printf("| min | p50 | p90 | max |\n|---|---|---|---|\n| %v | %v | %v | %v |\n",
		ds[0].Round(time.Millisecond), q(0.5).Round(time.Millisecond), q(0.9).Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	return nil
}

package local

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/samples/bookinfo"
)

// subnetPrefix checks that subnet is an IPv4 /24 (or wider) inside
// 127.0.0.0/8 and returns its first three octets, "127.0.0".
func subnetPrefix(subnet string) (string, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return "", fmt.Errorf("subnet %q: %w", subnet, err)
	}
	if !p.Addr().Is4() || p.Bits() > 24 || !netip.MustParsePrefix("127.0.0.0/8").Contains(p.Addr()) {
		return "", fmt.Errorf("subnet %q: must be a /24 of 127.0.0.0/8, as 127.0.0.0/24", subnet)
	}
	a := p.Masked().Addr().As4()
	return fmt.Sprintf("%d.%d.%d", a[0], a[1], a[2]), nil
}

// process is one child process of the local mesh.
type process struct {
	Name   string   // log file name and what messages call it: "loomd", "reviews-v2", "reviews-v2-proxy"
	Binary string   // "loomd", "loom-proxy" or "bookinfo"
	Args   []string // without the binary
	// HTTPProxy, when set, is the app's HTTP_PROXY (its sidecar's outbound
	// listener).
	HTTPProxy string
}

// proxyIdentity is the node ID a proxy of the mesh connects with.
type proxyIdentity struct {
	Name   string // "reviews-v1.default", as proxy-status prints it
	NodeID string
}

// plan lists the processes of the mesh in start order (loomd first) and
// the proxies loomd must see. suffix gives the random part of each app's
// instance name.
func plan(prefix, configDir string, suffix func() string) (loomd process, rest []process, proxies []proxyIdentity) {
	ip := func(octet int) string { return fmt.Sprintf("%s.%d", prefix, octet) }
	xdsAddr := ip(loomdOctet) + ":15010"
	loomd = process{
		Name:   "loomd",
		Binary: "loomd",
		Args: []string{"--config-dir", configDir,
			"--xds-addr", xdsAddr,
			"--monitoring-addr", ip(loomdOctet) + ":15014"},
	}
	for _, w := range bookinfo.Workloads {
		wip := ip(w.HostOctet)
		rest = append(rest, process{
			Name:      w.Name,
			Binary:    "bookinfo",
			Args:      []string{w.App, "--listen", wip + ":9080", "--version", w.Version, "--instance", w.Name + "-" + suffix()},
			HTTPProxy: "http://" + wip + ":15001",
		})
	}
	for _, w := range bookinfo.Workloads {
		wip := ip(w.HostOctet)
		rest = append(rest, process{
			Name:   w.Name + "-proxy",
			Binary: "loom-proxy",
			Args: []string{"sidecar", "--ip", wip, "--name", w.Name, "--namespace", "default",
				"--labels", "app=" + w.App + ",version=" + w.Version,
				"--service-account", w.ServiceAccount, "--xds-addr", xdsAddr},
		})
		proxies = append(proxies, proxyIdentity{
			Name:   w.Name + ".default",
			NodeID: xdsapi.NodeID{Type: xdsapi.Sidecar, IP: wip, Name: w.Name, Namespace: "default", Domain: "default.svc.cluster.local"}.String(),
		})
	}
	gw := ip(ingressOctet)
	rest = append(rest, process{
		Name:   "istio-ingressgateway",
		Binary: "loom-proxy",
		Args: []string{"router", "--ip", gw, "--name", "istio-ingressgateway", "--namespace", "istio-system",
			"--labels", "istio=ingressgateway,app=istio-ingressgateway", "--xds-addr", xdsAddr},
	})
	proxies = append(proxies, proxyIdentity{
		Name:   "istio-ingressgateway.istio-system",
		NodeID: xdsapi.NodeID{Type: xdsapi.Router, IP: gw, Name: "istio-ingressgateway", Namespace: "istio-system", Domain: "istio-system.svc.cluster.local"}.String(),
	})
	return loomd, rest, proxies
}

// randomSuffix returns five characters as Kubernetes' pod-name suffixes
// have: consonants and digits that spell no word.
func randomSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// childEnv is the environment of a child: ours without any proxy setting,
// plus HTTP_PROXY when httpProxy is set. NO_PROXY stays unset so that the
// app's calls to plain service names all go to its sidecar.
func childEnv(httpProxy string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "REQUEST_METHOD":
			continue
		}
		env = append(env, kv)
	}
	if httpProxy != "" {
		env = append(env, "HTTP_PROXY="+httpProxy)
	}
	return env
}

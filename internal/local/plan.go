package local

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
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
	// Netns, when set, is the network namespace the process runs in
	// (`ip netns exec NETNS`, which also bind-mounts /etc/netns/NETNS/hosts
	// over /etc/hosts).
	Netns string
}

// proxyIdentity is the node ID a proxy of the mesh connects with.
type proxyIdentity struct {
	Name   string // "reviews-v1.default", as proxy-status prints it
	NodeID string
}

// workloadToken is a bootstrap token to mint before the mesh starts: its
// file (the proxy's --token-file) and what it stands for.
type workloadToken struct {
	File    string
	Binding bootstraptoken.Binding
}

// ingressServiceAccount is the ingress gateway's service account, Istio's
// default for istio-ingressgateway.
const ingressServiceAccount = "istio-ingressgateway-service-account"

// layout says where the processes of a mesh run: each workload's address
// and network namespace, and loomd's address.
type layout struct {
	// ip is the address of the workload at host octet octet.
	ip func(octet int) string
	// loomdIP is loomd's address, reachable from every workload.
	loomdIP string
	// netns is the network namespace of the workload called name; nil
	// runs everything in loomctl's own.
	netns func(name string) string
	// redirect runs the sidecars with --interception redirect and the
	// apps without HTTP_PROXY.
	redirect bool
}

// loopbackLayout is explicit mode's: one loopback address per workload of
// the /24 whose first three octets are prefix ("127.0.0"), loomd at .1.
func loopbackLayout(prefix string) layout {
	ip := func(octet int) string { return fmt.Sprintf("%s.%d", prefix, octet) }
	return layout{ip: ip, loomdIP: ip(loomdOctet)}
}

// netnsLayout is transparent mode's: every workload, the ingress gateway
// included, in its namespace of n at .HostOctet; loomd on the bridge.
func netnsLayout(n *netnsPlan) layout {
	return layout{
		ip:       func(octet int) string { return n.addr(octet).String() },
		loomdIP:  n.BridgeAddr().String(),
		netns:    func(name string) string { return n.Prefix + "-" + name },
		redirect: true,
	}
}

// plan lists the processes of the explicit-mode mesh on the loopback /24
// whose first three octets are prefix (planLayout).
func plan(prefix, configDir, stateDir string, suffix func() string) (loomd process, rest []process, proxies []proxyIdentity, tokens []workloadToken) {
	return planLayout(loopbackLayout(prefix), configDir, stateDir, suffix)
}

// planLayout lists the processes of the mesh laid out as l in start order
// (loomd first), the proxies loomd must see, and the bootstrap tokens to
// mint. stateDir holds loomd's data directory (stateDir/loomd: its CA) and
// the proxies' token files (stateDir/workloads/NAME.token); every proxy
// runs the certificate agent against loomd's CA on 15012, while xDS stays
// on plaintext 15010. suffix gives the random part of each app's instance
// name.
func planLayout(l layout, configDir, stateDir string, suffix func() string) (loomd process, rest []process, proxies []proxyIdentity, tokens []workloadToken) {
	xdsAddr := l.loomdIP + ":15010"
	caAddr := l.loomdIP + ":15012"
	dataDir := filepath.Join(stateDir, "loomd")
	rootCert := filepath.Join(dataDir, "root-cert.pem")
	// agentArgs are a proxy's certificate agent flags, and its token.
	agentArgs := func(name, ns, sa string) []string {
		file := filepath.Join(stateDir, "workloads", name+".token")
		tokens = append(tokens, workloadToken{File: file, Binding: bootstraptoken.Binding{Namespace: ns, ServiceAccount: sa, Workload: name}})
		return []string{"--ca-addr", caAddr, "--token-file", file, "--root-cert", rootCert}
	}
	netns := func(name string) string {
		if l.netns == nil {
			return ""
		}
		return l.netns(name)
	}
	loomd = process{
		Name:   "loomd",
		Binary: "loomd",
		Args: []string{"--config-dir", configDir,
			"--xds-addr", xdsAddr,
			"--monitoring-addr", l.loomdIP + ":15014",
			"--dashboard-addr", l.loomdIP + ":20001",
			"--data-dir", dataDir,
			"--secure-xds-addr", caAddr},
	}
	for _, w := range bookinfo.Workloads {
		wip := l.ip(w.HostOctet)
		p := process{
			Name:   w.Name,
			Binary: "bookinfo",
			Args:   []string{w.App, "--listen", wip + ":9080", "--version", w.Version, "--instance", w.Name + "-" + suffix()},
			Netns:  netns(w.Name),
		}
		if !l.redirect {
			p.HTTPProxy = "http://" + wip + ":15001"
		}
		rest = append(rest, p)
	}
	for _, w := range bookinfo.Workloads {
		wip := l.ip(w.HostOctet)
		args := append([]string{"sidecar", "--ip", wip, "--name", w.Name, "--namespace", "default",
			"--labels", "app=" + w.App + ",version=" + w.Version,
			"--service-account", w.ServiceAccount, "--xds-addr", xdsAddr},
			agentArgs(w.Name, "default", w.ServiceAccount)...)
		if l.redirect {
			args = append(args, "--interception", "redirect")
		}
		rest = append(rest, process{Name: w.Name + "-proxy", Binary: "loom-proxy", Args: args, Netns: netns(w.Name)})
		proxies = append(proxies, proxyIdentity{
			Name:   w.Name + ".default",
			NodeID: xdsapi.NodeID{Type: xdsapi.Sidecar, IP: wip, Name: w.Name, Namespace: "default", Domain: "default.svc.cluster.local"}.String(),
		})
	}
	gw := l.ip(ingressOctet)
	rest = append(rest, process{
		Name:   "istio-ingressgateway",
		Binary: "loom-proxy",
		Args: append([]string{"router", "--ip", gw, "--name", "istio-ingressgateway", "--namespace", "istio-system",
			"--labels", "istio=ingressgateway,app=istio-ingressgateway",
			"--service-account", ingressServiceAccount, "--xds-addr", xdsAddr},
			agentArgs("istio-ingressgateway", "istio-system", ingressServiceAccount)...),
		Netns: netns(ingressName),
	})
	proxies = append(proxies, proxyIdentity{
		Name:   "istio-ingressgateway.istio-system",
		NodeID: xdsapi.NodeID{Type: xdsapi.Router, IP: gw, Name: "istio-ingressgateway", Namespace: "istio-system", Domain: "istio-system.svc.cluster.local"}.String(),
	})
	return loomd, rest, proxies, tokens
}

// mintTokens creates loomd's data directory (0700) and the workloads'
// token directory (0700), and mints every token: its file (0600) and its
// entry in loomd's registry.
func mintTokens(stateDir string, tokens []workloadToken) error {
	reg := bootstraptoken.RegistryDir(filepath.Join(stateDir, "loomd"))
	for _, d := range []string{filepath.Join(stateDir, "loomd"), filepath.Join(stateDir, "workloads")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	for _, t := range tokens {
		if err := bootstraptoken.Mint(reg, t.File, t.Binding); err != nil {
			return err
		}
	}
	return nil
}

// ingressName names the ingress gateway's network namespace (PREFIX-ingress).
const ingressName = "ingress"

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

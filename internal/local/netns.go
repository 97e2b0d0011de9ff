package local

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/samples/bookinfo"
)

// Transparent mode (`loomctl demo --interception redirect`): every
// workload runs in a network namespace of its own, joined to the host by
// a veth pair on one bridge, and its sidecar's iptables rules (Istio's
// istio-iptables) redirect its TCP to the sidecar. loomd stays in the
// host namespace on the bridge's address, reachable from every namespace.
//
//	host:       bridge PREFIX-br0 10.77.0.1/24, loomd on 10.77.0.1:15010/15014
//	PREFIX-NAME: eth0 10.77.0.N/24 (veth PREFIXpN, host end PREFIXhN on the bridge),
//	            lo up, default route via 10.77.0.1, /etc/netns/PREFIX-NAME/hosts
//
// Every name begins with the prefix, so a stop, or the next start after a
// crash, removes exactly what a mesh of that prefix created.

// Defaults of transparent mode.
const (
	// DefaultNetnsPrefix begins the name of every namespace, veth and
	// bridge of a redirect-mode mesh.
	DefaultNetnsPrefix = "loom"
	// DefaultNetnsSubnet is the private /24 of the namespaces.
	DefaultNetnsSubnet = "10.77.0.0/24"
	// VIPBase is where the runtime allocates service VIPs for the
	// ServiceEntries it writes: 240.240.0.1, .2, ... as Istio's DNS proxy
	// auto-allocates them from 240.240.0.0/16.
	VIPBase = "240.240.0.0"
)

// bridgeOctet is the host's (and loomd's) address on the bridge.
const bridgeOctet = 1

// netnsWorkload is one network namespace of the mesh.
type netnsWorkload struct {
	// Name is the namespace's name, PREFIX-WORKLOAD.
	Name string
	// HostVeth is the veth end on the bridge; PeerVeth the end moved into
	// the namespace and renamed eth0.
	HostVeth, PeerVeth string
	// Addr is the namespace's address on eth0.
	Addr netip.Addr
	// Redirect installs the sidecar's iptables rules; false for a
	// namespace without sidecar (the ingress gateway, a plain client).
	Redirect bool
}

// netnsPlan is the network of a redirect-mode mesh: what setupCommands
// creates and teardownCommands removes. It is a value: building it
// touches nothing.
type netnsPlan struct {
	Prefix string
	Bridge string
	// Subnet is the /24; the bridge has its .1.
	Subnet     netip.Prefix
	Namespaces []netnsWorkload
	// Hosts maps a service VIP to the names apps call it by, written to
	// every namespace's /etc/netns/NAME/hosts.
	Hosts []hostsEntry
}

// hostsEntry is one /etc/hosts line.
type hostsEntry struct {
	IP    string
	Names []string
}

// newNetnsPlan checks prefix (letters and digits, 1-6 of them, so that
// PREFIXhNNN fits Linux's 15-byte interface names) and subnet (an IPv4
// /24) and returns the plan with no namespace yet.
func newNetnsPlan(prefix, subnet string) (*netnsPlan, error) {
	if prefix == "" || len(prefix) > 6 || strings.IndexFunc(prefix, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) >= 0 {
		return nil, fmt.Errorf("netns prefix %q: must be 1-6 lower-case letters or digits", prefix)
	}
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return nil, fmt.Errorf("netns subnet %q: %w", subnet, err)
	}
	if !p.Addr().Is4() || p.Bits() != 24 || p.Addr().IsLoopback() {
		return nil, fmt.Errorf("netns subnet %q: must be an IPv4 /24 outside 127.0.0.0/8, as 10.77.0.0/24", subnet)
	}
	return &netnsPlan{Prefix: prefix, Bridge: prefix + "-br0", Subnet: p.Masked()}, nil
}

// addr returns the subnet's address with last octet octet.
func (n *netnsPlan) addr(octet int) netip.Addr {
	a := n.Subnet.Addr().As4()
	a[3] = byte(octet)
	return netip.AddrFrom4(a)
}

// BridgeAddr is the host's address on the bridge, where loomd listens.
func (n *netnsPlan) BridgeAddr() netip.Addr { return n.addr(bridgeOctet) }

// add adds the namespace of workload name at .octet and returns it.
func (n *netnsPlan) add(name string, octet int, redirect bool) netnsWorkload {
	o := strconv.Itoa(octet)
	w := netnsWorkload{
		Name:     n.Prefix + "-" + name,
		HostVeth: n.Prefix + "h" + o,
		PeerVeth: n.Prefix + "p" + o,
		Addr:     n.addr(octet),
		Redirect: redirect,
	}
	n.Namespaces = append(n.Namespaces, w)
	return w
}

// command is one command to run, with its standard input.
type command struct {
	Args  []string
	Stdin string
}

func (c command) String() string { return strings.Join(c.Args, " ") }

// setupCommands returns, in order, the commands that build n: the bridge
// with its address, then per namespace the namespace, its veth pair
// (host end on the bridge, peer moved in and renamed eth0), its address,
// lo and eth0 up, the default route via the bridge, and for a redirect
// namespace the iptables rules of iptablesRules (iptables-restore on
// stdin, inside the namespace).
func (n *netnsPlan) setupCommands() []command {
	bits := strconv.Itoa(n.Subnet.Bits())
	cmds := []command{
		{Args: []string{"ip", "link", "add", n.Bridge, "type", "bridge"}},
		{Args: []string{"ip", "addr", "add", n.BridgeAddr().String() + "/" + bits, "dev", n.Bridge}},
		{Args: []string{"ip", "link", "set", n.Bridge, "up"}},
	}
	for _, w := range n.Namespaces {
		in := func(args ...string) command { return command{Args: append([]string{"ip", "-n", w.Name}, args...)} }
		cmds = append(cmds,
			command{Args: []string{"ip", "netns", "add", w.Name}},
			command{Args: []string{"ip", "link", "add", w.HostVeth, "type", "veth", "peer", "name", w.PeerVeth}},
			command{Args: []string{"ip", "link", "set", w.HostVeth, "master", n.Bridge}},
			command{Args: []string{"ip", "link", "set", w.HostVeth, "up"}},
			command{Args: []string{"ip", "link", "set", w.PeerVeth, "netns", w.Name}},
			in("link", "set", w.PeerVeth, "name", "eth0"),
			in("addr", "add", w.Addr.String()+"/"+bits, "dev", "eth0"),
			in("link", "set", "lo", "up"),
			in("link", "set", "eth0", "up"),
			in("route", "add", "default", "via", n.BridgeAddr().String()),
		)
		if w.Redirect {
			cmds = append(cmds, command{
				Args:  []string{"ip", "netns", "exec", w.Name, "iptables-restore", "--noflush"},
				Stdin: iptablesRestoreInput(),
			})
		}
	}
	return cmds
}

// teardownCommands removes what setupCommands created, by name: each
// namespace (with it go its eth0, the veth's other end, and its iptables
// rules) and the bridge. Each may fail when the object is already gone.
func (n *netnsPlan) teardownCommands() []command {
	var cmds []command
	for _, w := range n.Namespaces {
		cmds = append(cmds, command{Args: []string{"ip", "netns", "del", w.Name}})
	}
	for _, w := range n.Namespaces {
		// Normally gone with its peer; a half-built namespace may have
		// left it.
		cmds = append(cmds, command{Args: []string{"ip", "link", "del", w.HostVeth}})
	}
	return append(cmds, command{Args: []string{"ip", "link", "del", n.Bridge}})
}

// staleCommands removes leftovers of a mesh with n's prefix that was not
// stopped cleanly, given what `ip netns list` and `ip -o link show`
// printed: every namespace named PREFIX-*, every link named PREFIXh* or
// the bridge.
func (n *netnsPlan) staleCommands(netnsList, linkList string) []command {
	var cmds []command
	for _, line := range strings.Split(netnsList, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], n.Prefix+"-") {
			cmds = append(cmds, command{Args: []string{"ip", "netns", "del", f[0]}})
		}
	}
	for _, line := range strings.Split(linkList, "\n") {
		// "7: loomh13@if6: <BROADCAST,..." or "7: loom-br0: <...".
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if name == n.Bridge || strings.HasPrefix(name, n.Prefix+"h") && isDigits(name[len(n.Prefix)+1:]) {
			cmds = append(cmds, command{Args: []string{"ip", "link", "del", name}})
		}
	}
	return cmds
}

func isDigits(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) < 0
}

// hostsFile is a namespace's /etc/hosts: localhost, the namespace's own
// name and every service VIP with its names.
func (n *netnsPlan) hostsFile(w netnsWorkload) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by loomctl demo --interception redirect: service names resolve to their VIPs.\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	fmt.Fprintf(&b, "%s\t%s\n", w.Addr, strings.TrimPrefix(w.Name, n.Prefix+"-"))
	for _, h := range n.Hosts {
		fmt.Fprintf(&b, "%s\t%s\n", h.IP, strings.Join(h.Names, " "))
	}
	return b.Bytes()
}

// Istio's capture ports (istio-iptables -p 15001 -z 15006 -u 1337 -g 1337
// -m REDIRECT -i '*' -b '*' -d 15090,15021,15020, as its injector runs
// it): 15008 is HBONE, 15090 Prometheus, 15021 health, 15020 the merged
// metrics port.
const (
	hbonePort         = 15008
	inboundExcludeCSV = "15090,15021,15020"
)

// iptablesRules returns, in order, the nat rules Istio's istio-iptables
// installs for a sidecar in REDIRECT mode with every inbound port and
// every outbound address captured and 15090, 15021 and 15020 excluded
// (the golden of tools/istio-iptables for that command line):
//
//   - inbound: PREROUTING sends TCP to ISTIO_INBOUND, which returns for
//     15008 and the excluded ports and redirects the rest to 15006;
//   - outbound: OUTPUT sends everything to ISTIO_OUTPUT, which returns
//     the proxy's inbound upstream (source 127.0.0.6 on lo), sends the
//     proxy's own calls to a local non-127.0.0.1 address through the
//     inbound path, returns other local and all proxy-owned traffic
//     (uid or gid 1337, xdsapi.ProxyGID) and traffic to 127.0.0.1, and
//     redirects the rest to 15001.
func iptablesRules() []string {
	id := strconv.Itoa(xdsapi.ProxyGID)
	out := []string{
		"-N ISTIO_INBOUND",
		"-N ISTIO_REDIRECT",
		"-N ISTIO_IN_REDIRECT",
		"-N ISTIO_OUTPUT",
		"-A ISTIO_INBOUND -p tcp --dport " + strconv.Itoa(hbonePort) + " -j RETURN",
		"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports " + strconv.Itoa(xdsapi.PortOutbound),
		"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports " + strconv.Itoa(xdsapi.PortInbound),
		"-A PREROUTING -p tcp -j ISTIO_INBOUND",
		"-A ISTIO_INBOUND -p tcp -m multiport --dports " + inboundExcludeCSV + " -j RETURN",
		"-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
		"-A OUTPUT -j ISTIO_OUTPUT",
		"-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
	}
	for _, owner := range []string{"--uid-owner", "--gid-owner"} {
		out = append(out,
			"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport "+strconv.Itoa(hbonePort)+" -m owner "+owner+" "+id+" -j ISTIO_IN_REDIRECT",
			"-A ISTIO_OUTPUT -o lo -m owner ! "+owner+" "+id+" -j RETURN",
			"-A ISTIO_OUTPUT -m owner "+owner+" "+id+" -j RETURN",
		)
	}
	return append(out,
		"-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
		"-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
	)
}

// iptablesRestoreInput is iptablesRules as iptables-restore reads it: one
// atomic commit of the nat table.
func iptablesRestoreInput() string {
	return "*nat\n" + strings.Join(iptablesRules(), "\n") + "\nCOMMIT\n"
}

// serviceVIPs allocates a VIP per Bookinfo service, in the order of
// bookinfo.Services, from VIPBase: .1, .2, ...
func serviceVIPs() map[string]netip.Addr {
	base := netip.MustParseAddr(VIPBase)
	out := map[string]netip.Addr{}
	for _, svc := range bookinfo.Services {
		base = base.Next()
		out[svc] = base
	}
	return out
}

// servicesWithVIPs returns services.yaml (bookinfo's ServiceEntries, one
// host each, "NAME.default.svc.cluster.local") with each entry's VIP
// added as its addresses, and the /etc/hosts entries that resolve the
// services' names to them.
func servicesWithVIPs(services []byte) ([]byte, []hostsEntry, error) {
	vips := serviceVIPs()
	var out bytes.Buffer
	var hosts []hostsEntry
	lines := strings.SplitAfter(string(services), "\n")
	for i := 0; i < len(lines); i++ {
		out.WriteString(lines[i])
		if strings.TrimRight(lines[i], "\n") != "  hosts:" || i+1 >= len(lines) {
			continue
		}
		host := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(lines[i+1]), "- "))
		name, _, _ := strings.Cut(host, ".")
		vip, ok := vips[name]
		if !ok {
			return nil, nil, fmt.Errorf("services.yaml: host %q: no VIP for it", host)
		}
		out.WriteString(lines[i+1])
		i++
		fmt.Fprintf(&out, "  addresses:\n  - %s\n", vip)
		ns := bookinfo.Namespace
		hosts = append(hosts, hostsEntry{IP: vip.String(), Names: []string{name, name + "." + ns, name + "." + ns + ".svc", host}})
	}
	if len(hosts) != len(vips) {
		return nil, nil, fmt.Errorf("services.yaml: found %d of %d services", len(hosts), len(vips))
	}
	return out.Bytes(), hosts, nil
}

// Command is a command JoinCommands or LeaveCommands returns: its
// arguments (Args[0] the program) and standard input.
type Command = command

// JoinCommands returns the commands that add one more network namespace,
// PREFIX-NAME at .octet of subnet, to the bridge of a running
// redirect-mode mesh with that prefix and subnet, with the sidecar's
// iptables rules when redirect is set (its sidecar must then run in it
// with --interception redirect), as the mesh's own workloads are set up.
// It fails on a bad prefix or subnet. LeaveCommands undoes it.
func JoinCommands(prefix, subnet, name string, octet int, redirect bool) ([]Command, error) {
	n, err := newNetnsPlan(prefix, subnet)
	if err != nil {
		return nil, err
	}
	n.add(name, octet, redirect)
	// The bridge exists: skip its three commands.
	return n.setupCommands()[3:], nil
}

// LeaveCommands removes what JoinCommands added: the namespace and, if
// still there, its veth.
func LeaveCommands(prefix, subnet, name string, octet int) ([]Command, error) {
	n, err := newNetnsPlan(prefix, subnet)
	if err != nil {
		return nil, err
	}
	n.add(name, octet, false)
	cmds := n.teardownCommands()
	return cmds[:len(cmds)-1], nil
}

package local

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/loomctl"
)

// TestIptablesRules pins the rule list to Istio's istio-iptables output
// for `-p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i '*' -b '*'
// -d 15090,15021,15020` (its capture goldens), in order.
func TestIptablesRules(t *testing.T) {
	want := []string{
		"-N ISTIO_INBOUND",
		"-N ISTIO_REDIRECT",
		"-N ISTIO_IN_REDIRECT",
		"-N ISTIO_OUTPUT",
		"-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
		"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
		"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
		"-A PREROUTING -p tcp -j ISTIO_INBOUND",
		"-A ISTIO_INBOUND -p tcp -m multiport --dports 15090,15021,15020 -j RETURN",
		"-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
		"-A OUTPUT -j ISTIO_OUTPUT",
		"-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
		"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
		"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
		"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
		"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
		"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
		"-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
		"-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
		"-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
	}
	if diff := cmp.Diff(want, iptablesRules()); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	in := iptablesRestoreInput()
	if !strings.HasPrefix(in, "*nat\n-N ISTIO_INBOUND\n") || !strings.HasSuffix(in, "-j ISTIO_REDIRECT\nCOMMIT\n") {
		t.Errorf("iptables-restore input:\n%s", in)
	}
}

func testPlan(t *testing.T) *netnsPlan {
	t.Helper()
	n, err := newNetnsPlan("loomt", "10.78.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	n.add("reviews-v1", 13, true)
	n.add("ingress", 10, false)
	return n
}

// TestNetnsPlan pins the commands that build and remove the network.
func TestNetnsPlan(t *testing.T) {
	n := testPlan(t)
	var got []string
	for _, c := range n.setupCommands() {
		s := c.String()
		if c.Stdin != "" {
			s += " <rules"
			if c.Stdin != iptablesRestoreInput() {
				t.Errorf("%s: stdin is not the rules", c)
			}
		}
		got = append(got, s)
	}
	want := []string{
		"ip link add loomt-br0 type bridge",
		"ip addr add 10.78.0.1/24 dev loomt-br0",
		"ip link set loomt-br0 up",
		"ip netns add loomt-reviews-v1",
		"ip link add loomth13 type veth peer name loomtp13",
		"ip link set loomth13 master loomt-br0",
		"ip link set loomth13 up",
		"ip link set loomtp13 netns loomt-reviews-v1",
		"ip -n loomt-reviews-v1 link set loomtp13 name eth0",
		"ip -n loomt-reviews-v1 addr add 10.78.0.13/24 dev eth0",
		"ip -n loomt-reviews-v1 link set lo up",
		"ip -n loomt-reviews-v1 link set eth0 up",
		"ip -n loomt-reviews-v1 route add default via 10.78.0.1",
		"ip netns exec loomt-reviews-v1 iptables-restore --noflush <rules",
		"ip netns add loomt-ingress",
		"ip link add loomth10 type veth peer name loomtp10",
		"ip link set loomth10 master loomt-br0",
		"ip link set loomth10 up",
		"ip link set loomtp10 netns loomt-ingress",
		"ip -n loomt-ingress link set loomtp10 name eth0",
		"ip -n loomt-ingress addr add 10.78.0.10/24 dev eth0",
		"ip -n loomt-ingress link set lo up",
		"ip -n loomt-ingress link set eth0 up",
		"ip -n loomt-ingress route add default via 10.78.0.1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("setup (-want +got):\n%s", diff)
	}
	got = nil
	for _, c := range n.teardownCommands() {
		got = append(got, c.String())
	}
	want = []string{
		"ip netns del loomt-reviews-v1",
		"ip netns del loomt-ingress",
		"ip link del loomth13",
		"ip link del loomth10",
		"ip link del loomt-br0",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("teardown (-want +got):\n%s", diff)
	}
}

// TestStaleCommands removes only what carries the prefix.
func TestStaleCommands(t *testing.T) {
	n := testPlan(t)
	netns := "loomt-reviews-v1 (id: 2)\nloom-reviews-v1 (id: 0)\nloomt-old\nother\n"
	links := `1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536
8: loomt-br0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500
10: loomth11@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500
11: loomthx: <BROADCAST> mtu 1500
12: loomh11@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500
13: loom-br0: <BROADCAST> mtu 1500
`
	var got []string
	for _, c := range n.staleCommands(netns, links) {
		got = append(got, c.String())
	}
	want := []string{
		"ip netns del loomt-reviews-v1",
		"ip netns del loomt-old",
		"ip link del loomt-br0",
		"ip link del loomth11",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stale (-want +got):\n%s", diff)
	}
}

func TestNewNetnsPlan(t *testing.T) {
	for _, tt := range []struct {
		prefix, subnet string
		ok             bool
	}{
		{"loom", "10.77.0.0/24", true},
		{"loomtoolong", "10.77.0.0/24", false},
		{"Loom", "10.77.0.0/24", false},
		{"lo-m", "10.77.0.0/24", false},
		{"loom", "10.77.0.0/16", false},
		{"loom", "127.0.0.0/24", false},
		{"loom", "fd00::/120", false},
	} {
		if _, err := newNetnsPlan(tt.prefix, tt.subnet); (err == nil) != tt.ok {
			t.Errorf("newNetnsPlan(%q, %q): error %v, want ok %v", tt.prefix, tt.subnet, err, tt.ok)
		}
	}
}

// TestServicesWithVIPs: every Bookinfo ServiceEntry gets a VIP from
// 240.240.0.0/16, the YAML still decodes, and the hosts file names it.
func TestServicesWithVIPs(t *testing.T) {
	data, err := servicesYAML()
	if err != nil {
		t.Fatal(err)
	}
	out, hosts, err := servicesWithVIPs(data)
	if err != nil {
		t.Fatal(err)
	}
	rs, errs := config.Decode("services.yaml", out)
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range rs {
		se := r.Spec.(interface{ GetAddresses() []string })
		got[r.Name] = strings.Join(se.GetAddresses(), ",")
	}
	want := map[string]string{"productpage": "240.240.0.1", "details": "240.240.0.2", "reviews": "240.240.0.3", "ratings": "240.240.0.4"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	n := testPlan(t)
	n.Hosts = hosts
	file := string(n.hostsFile(n.Namespaces[0]))
	for _, line := range []string{"10.78.0.13\treviews-v1\n", "240.240.0.3\treviews reviews.default reviews.default.svc reviews.default.svc.cluster.local\n"} {
		if !strings.Contains(file, line) {
			t.Errorf("hosts file lacks %q:\n%s", line, file)
		}
	}
}

// TestRedirectPlan: in transparent mode apps have no HTTP_PROXY, every
// process but loomd runs in its namespace, sidecars say so.
func TestRedirectPlan(t *testing.T) {
	n := testPlan(t)
	loomd, rest, proxies, _ := planLayout(netnsLayout(n), "/cfg", "/state", func() string { return "abcde" })
	if loomd.Netns != "" || !strings.Contains(strings.Join(loomd.Args, " "), "--xds-addr 10.78.0.1:15010") {
		t.Errorf("loomd: %+v", loomd)
	}
	for _, p := range rest {
		if p.Netns == "" || p.HTTPProxy != "" {
			t.Errorf("%s: netns %q, HTTP_PROXY %q", p.Name, p.Netns, p.HTTPProxy)
		}
		if strings.HasSuffix(p.Name, "-proxy") && !strings.HasSuffix(strings.Join(p.Args, " "), "--interception redirect") {
			t.Errorf("%s: args %v", p.Name, p.Args)
		}
	}
	if got := proxies[2].NodeID; got != "sidecar~10.78.0.13~reviews-v1.default~default.svc.cluster.local" {
		t.Errorf("reviews-v1 node ID %q", got)
	}
}

// TestJoinCommands: a namespace added to a running mesh is built as the
// mesh's own, without the bridge; leaving removes it and its veth only.
func TestJoinCommands(t *testing.T) {
	join, err := JoinCommands("loomt", "10.78.0.0/24", "reviews-v1", 13, true)
	if err != nil {
		t.Fatal(err)
	}
	n := testPlan(t)
	if diff := cmp.Diff(n.setupCommands()[3:14], join); diff != "" {
		t.Errorf("join (-want +got):\n%s", diff)
	}
	leave, err := LeaveCommands("loomt", "10.78.0.0/24", "reviews-v1", 13)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range leave {
		got = append(got, c.String())
	}
	if diff := cmp.Diff([]string{"ip netns del loomt-reviews-v1", "ip link del loomth13"}, got); diff != "" {
		t.Errorf("leave (-want +got):\n%s", diff)
	}
}

// TestProxiesSyncedSaysWhy: a proxy that NACKs its config is named with
// its error, so a demo that never gets ready says why.
func TestProxiesSyncedSaysWhy(t *testing.T) {
	want := []proxyIdentity{{Name: "reviews-v1.default", NodeID: "sidecar~10.78.0.13~reviews-v1.default~default.svc.cluster.local"}}
	ss := []loomctl.SyncStatus{{ID: want[0].NodeID, Types: []loomctl.TypeStatus{
		{Short: "LDS", Sent: "v2", Nacked: "v2", NackError: `listener "virtualOutbound": use_original_dst: not supported`},
	}}}
	ok, why := proxiesSynced(ss, want)
	if ok || !strings.Contains(why, `reviews-v1.default rejected LDS: listener "virtualOutbound": use_original_dst: not supported`) {
		t.Errorf("proxiesSynced = %v, %q", ok, why)
	}
}

package translate

import (
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// localityCLA builds the assignment outboundEndpoints would for one
// endpoint per locality (labels: version=LABEL when given as "loc|LABEL"),
// applies locality load balancing for a proxy at proxyLoc with labels,
// and returns "locality -> priority" or "locality -> weight".
func localityCLA(t *testing.T, proxyLoc string, proxyLabels map[string]string, tp *networking.TrafficPolicy, eps ...[2]string) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	var ws []wrappedEndpoint
	for i, e := range eps {
		var labels map[string]string
		if e[1] != "" {
			labels = map[string]string{"version": e[1]}
		}
		ws = append(ws, wrappedEndpoint{lb: lbEndpoint("10.0.0."+string(rune('1'+i)), 80, 1), locality: e[0], labels: labels})
	}
	groups := localityGroups(ws)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "c"}
	for _, g := range groups {
		cla.Endpoints = append(cla.Endpoints, g.lle)
	}
	loc, err := xdsapi.ParseLocality(proxyLoc)
	if err != nil {
		t.Fatal(err)
	}
	applyLocalityLB(cla, groups, tp, &model.Proxy{Locality: model.Locality(loc), Labels: proxyLabels})
	return cla
}

// summary maps "region/zone/subzone@IP" to priority, and to weight when set.
func summary(cla *endpointv3.ClusterLoadAssignment) map[string][2]uint32 {
	out := map[string][2]uint32{}
	for _, lle := range cla.GetEndpoints() {
		l := xdsapi.LocalityFromProto(lle.GetLocality()).String()
		for _, lb := range lle.GetLbEndpoints() {
			out[l+"@"+lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = [2]uint32{lle.GetPriority(), lle.GetLoadBalancingWeight().GetValue()}
		}
	}
	return out
}

var outlier = &networking.OutlierDetection{}

func lbSetting(l *networking.LocalityLoadBalancerSetting) *networking.TrafficPolicy {
	return &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{LocalityLbSetting: l}, OutlierDetection: outlier}
}

// TestLocalityPriorities checks priorities as Istio's
// applyLocalityFailover and applyFailoverPriorities assign them, and
// weights as its applyLocalityWeights.
func TestLocalityPriorities(t *testing.T) {
	fiveLocalities := [][2]string{{"region1/zone1"}, {"region1/zone2"}, {"region2/zone1"}, {"region3/zone1"}, {"region1/zone1/sub2"}}
	tests := []struct {
		name   string
		proxy  string
		labels map[string]string
		tp     *networking.TrafficPolicy
		eps    [][2]string
		want   map[string][2]uint32 // locality@IP -> {priority, weight}
	}{
		{"default failover: by locality match", "region1/zone1", nil, lbSetting(nil), fiveLocalities, map[string][2]uint32{
			"region1/zone1@10.0.0.1": {0, 0}, "region1/zone1/sub2@10.0.0.5": {1, 0}, "region1/zone2@10.0.0.2": {2, 0},
			"region2/zone1@10.0.0.3": {3, 0}, "region3/zone1@10.0.0.4": {3, 0}}},
		{"failover region1 to region2", "region1/zone1", nil,
			lbSetting(&networking.LocalityLoadBalancerSetting{Failover: []*networking.LocalityLoadBalancerSetting_Failover{{From: "region1", To: "region2"}}}),
			fiveLocalities, map[string][2]uint32{
				"region1/zone1@10.0.0.1": {0, 0}, "region1/zone1/sub2@10.0.0.5": {1, 0}, "region1/zone2@10.0.0.2": {2, 0},
				"region2/zone1@10.0.0.3": {3, 0}, "region3/zone1@10.0.0.4": {4, 0}}},
		{"failover rule of another region does not apply", "region3/zone1", nil,
			lbSetting(&networking.LocalityLoadBalancerSetting{Failover: []*networking.LocalityLoadBalancerSetting_Failover{{From: "region1", To: "region2"}}}),
			[][2]string{{"region1/zone1"}, {"region2/zone1"}, {"region3/zone1"}}, map[string][2]uint32{
				"region1/zone1@10.0.0.1": {1, 0}, "region2/zone1@10.0.0.2": {1, 0}, "region3/zone1@10.0.0.3": {0, 0}}},
		{"no outlierDetection: no priorities", "region1/zone1", nil,
			&networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{LocalityLbSetting: &networking.LocalityLoadBalancerSetting{}}},
			[][2]string{{"region1/zone1"}, {"region2/zone1"}}, map[string][2]uint32{
				"region1/zone1@10.0.0.1": {0, 0}, "region2/zone1@10.0.0.2": {0, 0}}},
		{"enabled false: no priorities", "region1/zone1", nil,
			lbSetting(&networking.LocalityLoadBalancerSetting{Enabled: wrapperspbBool(false)}),
			[][2]string{{"region1/zone1"}, {"region2/zone1"}}, map[string][2]uint32{
				"region1/zone1@10.0.0.1": {0, 0}, "region2/zone1@10.0.0.2": {0, 0}}},
		{"failoverPriority splits a locality by labels", "region1/zone1", map[string]string{"version": "v1"},
			lbSetting(&networking.LocalityLoadBalancerSetting{FailoverPriority: []string{"topology.kubernetes.io/region", "version"}}),
			[][2]string{{"region1/zone1", "v1"}, {"region1/zone1", "v2"}, {"region2/zone1", "v1"}}, map[string][2]uint32{
				"region1/zone1@10.0.0.1": {0, 0}, "region1/zone1@10.0.0.2": {1, 0}, "region2/zone1@10.0.0.3": {2, 0}}},
		{"failoverPriority key=value override", "region1/zone1", map[string]string{"version": "v1"},
			lbSetting(&networking.LocalityLoadBalancerSetting{FailoverPriority: []string{"version=v2"}}),
			[][2]string{{"region1/zone1", "v1"}, {"region1/zone2", "v2"}}, map[string][2]uint32{
				"region1/zone1@10.0.0.1": {1, 0}, "region1/zone2@10.0.0.2": {0, 0}}},
		{"distribute: weights, unmatched locality emptied", "region1/zone1",
			nil, lbSetting(&networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{
				{From: "region9/*", To: map[string]uint32{"region9/*": 100}},
				{From: "region1/zone1/*", To: map[string]uint32{"region1/zone1/*": 80, "region2/*": 20}}}}),
			[][2]string{{"region1/zone1"}, {"region1/zone1"}, {"region2/zone1"}, {"region2/zone2"}, {"region3/zone1"}}, map[string][2]uint32{
				"region1/zone1@10.0.0.1": {0, 80}, "region1/zone1@10.0.0.2": {0, 80},
				"region2/zone1@10.0.0.3": {0, 10}, "region2/zone2@10.0.0.4": {0, 10}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summary(localityCLA(t, tt.proxy, tt.labels, tt.tp, tt.eps...))
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("locality@IP -> {priority, weight} (-want +got):\n%s", d)
			}
		})
	}
}

// TestProxylessLocalityWeights: a proxyless client's localities keep
// their priorities and all carry a weight (grpc-go drops a locality
// without one): the sum of its endpoints' weights, or distribute's.
func TestProxylessLocalityWeights(t *testing.T) {
	failover := localityCLA(t, "region1/zone1", nil, lbSetting(nil), [][2]string{{"region1/zone1"}, {"region1/zone1"}, {"region2/zone1"}}...)
	weighLocalities(failover)
	if d := cmp.Diff(map[string][2]uint32{
		"region1/zone1@10.0.0.1": {0, 2}, "region1/zone1@10.0.0.2": {0, 2}, "region2/zone1@10.0.0.3": {1, 1},
	}, summary(failover)); d != "" {
		t.Errorf("failover: locality@IP -> {priority, weight} (-want +got):\n%s", d)
	}
	distribute := localityCLA(t, "region1/zone1", nil, lbSetting(&networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{
		{From: "region1/*", To: map[string]uint32{"region1/*": 100, "region2/*": 0}}}}),
		[][2]string{{"region1/zone1"}, {"region2/zone1"}, {"region3/zone1"}}...)
	weighLocalities(distribute)
	if d := cmp.Diff(map[string][2]uint32{"region1/zone1@10.0.0.1": {0, 100}}, summary(distribute)); d != "" {
		t.Errorf("distribute: locality@IP -> {priority, weight} (-want +got):\n%s", d)
	}
	if n := len(distribute.GetEndpoints()); n != 1 {
		t.Errorf("distribute: %d localities, want 1 (region2 at weight 0 and region3 unmatched dropped)", n)
	}
}

// TestLocalityWeightedLbConfig: distribute sets the cluster's
// locality_weighted_lb_config, failover does not.
func TestLocalityWeightedLbConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		tp   *networking.TrafficPolicy
		want bool
	}{
		{"distribute", lbSetting(&networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{{From: "a/*", To: map[string]uint32{"a/*": 100}}}}), true},
		{"failover", lbSetting(&networking.LocalityLoadBalancerSetting{Failover: []*networking.LocalityLoadBalancerSetting_Failover{{From: "a", To: "b"}}}), false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := buildOutboundCluster("c", "HTTP", false, tc.tp)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil; got != tc.want {
				t.Errorf("locality_weighted_lb_config set = %v, want %v", got, tc.want)
			}
		})
	}
}

func wrapperspbBool(v bool) *wrapperspb.BoolValue { return wrapperspb.Bool(v) }

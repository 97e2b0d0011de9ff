package xdsapi

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Locality is where a proxy or an endpoint runs: Envoy's
// envoy.config.core.v3.Locality, Istio's "region/zone/subzone" string
// (WorkloadEntry.locality, the istio-locality label). The zero value is
// no locality.
type Locality struct {
	Region, Zone, SubZone string
}

// ParseLocality reads "region/zone/subzone" as Istio's
// SplitLocalityLabel does: parts may be empty or left off ("region1",
// "region1/zone1"). It fails on more than three parts.
func ParseLocality(s string) (Locality, error) {
	if s == "" {
		return Locality{}, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) > 3 {
		return Locality{}, fmt.Errorf("locality %q: want region/zone/subzone", s)
	}
	var l Locality
	for i, p := range parts {
		switch i {
		case 0:
			l.Region = p
		case 1:
			l.Zone = p
		case 2:
			l.SubZone = p
		}
	}
	return l, nil
}

// String renders l as "region/zone/subzone", trailing empty parts left
// off; "" for no locality.
func (l Locality) String() string {
	switch {
	case l.SubZone != "":
		return l.Region + "/" + l.Zone + "/" + l.SubZone
	case l.Zone != "":
		return l.Region + "/" + l.Zone
	}
	return l.Region
}

// Proto returns l as an Envoy Locality; nil for no locality.
func (l Locality) Proto() *corev3.Locality {
	if l == (Locality{}) {
		return nil
	}
	return &corev3.Locality{Region: l.Region, Zone: l.Zone, SubZone: l.SubZone}
}

// LocalityFromProto reads an Envoy Locality; nil is no locality.
func LocalityFromProto(p *corev3.Locality) Locality {
	return Locality{Region: p.GetRegion(), Zone: p.GetZone(), SubZone: p.GetSubZone()}
}

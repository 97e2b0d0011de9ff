package xdsapi

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLocalityRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Locality
		wantErr bool
	}{
		{"", Locality{}, false},
		{"region1", Locality{Region: "region1"}, false},
		{"region1/zone1/sub1", Locality{"region1", "zone1", "sub1"}, false},
		{"a/b/c/d", Locality{}, true},
	} {
		got, err := ParseLocality(tc.in)
		if (err != nil) != tc.wantErr {
			t.Fatalf("ParseLocality(%q) err = %v, want error %v", tc.in, err, tc.wantErr)
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("ParseLocality(%q) (-want +got):\n%s", tc.in, d)
		}
		if err != nil {
			continue
		}
		// Through an Envoy node and back, as loom-proxy sends it to loomd.
		n, err := BuildNode(NodeID{Type: Sidecar, IP: "127.0.0.1", Name: "a", Namespace: "default"}, NodeMeta{Locality: got})
		if err != nil {
			t.Fatal(err)
		}
		if back := ParseNodeMeta(n).Locality; back != got || back.String() != tc.in {
			t.Errorf("node locality of %q came back as %+v (%q)", tc.in, back, back.String())
		}
	}
}

package e2e

import (
	"net/http"
	"testing"
	"time"
)

// TestLocalityFailover follows Istio's locality failover task: a client in
// region1/zone1 calls echo, which has an endpoint in region1/zone1 (local),
// region1/zone2 and region2/zone1, under a DestinationRule with
// outlierDetection and localityLbSetting failover region1 -> region2.
// Traffic stays local; when local fails (500) and is ejected it moves to
// region1/zone2 (same region first), when all of region1 fails to region2,
// and it comes back to local once local is healthy and its ejection ends.
func TestLocalityFailover(t *testing.T) {
	local, zone2, region2 := &nameApp{name: "echo-local"}, &nameApp{name: "echo-zone2"}, &nameApp{name: "echo-region2"}
	m := startAppMesh(t, "127.63.0", []appWorkload{
		{Name: local.name, App: "echo", Version: "v1", Octet: 11, Handler: local, Locality: "region1/zone1"},
		{Name: zone2.name, App: "echo", Version: "v1", Octet: 12, Handler: zone2, Locality: "region1/zone2"},
		{Name: region2.name, App: "echo", Version: "v1", Octet: 13, Handler: region2, Locality: "region2/zone1"},
		{Name: "client", App: "client", Version: "v1", Octet: clientOctet, Locality: "region1/zone1"},
	}, "")
	m.apply(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
spec:
  host: echo.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover:
        - from: region1
          to: region2
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3s
      maxEjectionPercent: 100
`)
	hc := m.client(10 * time.Second)
	const url = "http://echo:9080/"
	// only makes n calls and fails unless every 200 came from want and at
	// least min calls were 200 (a failing endpoint whose ejection ends is
	// tried once more, fails and is ejected again).
	only := func(step, want string, n, min int) {
		t.Helper()
		ok := 0
		for range n {
			code, body, _ := getBody(t, hc, url, nil)
			if code != http.StatusOK {
				continue
			}
			ok++
			if body != want {
				t.Fatalf("%s: a call reached %q, want only %q", step, body, want)
			}
		}
		if ok < min {
			t.Fatalf("%s: %d of %d calls succeeded, want at least %d", step, ok, n, min)
		}
	}
	// reaches polls until a call returns 200 from want.
	reaches := func(step, want string) {
		t.Helper()
		if !poll(15*time.Second, func() bool {
			code, body, _ := getBody(t, hc, url, nil)
			return code == http.StatusOK && body == want
		}) {
			t.Fatalf("%s: no call reached %s within 15 s", step, want)
		}
	}

	only("all healthy", local.name, 20, 20)
	if zone2.hits.Load()+region2.hits.Load() != 0 {
		t.Fatalf("all healthy: zone2 got %d calls, region2 %d; want none", zone2.hits.Load(), region2.hits.Load())
	}

	local.status.Store(http.StatusInternalServerError)
	reaches("local fails", zone2.name)
	only("local ejected", zone2.name, 20, 18)

	zone2.status.Store(http.StatusInternalServerError)
	reaches("region1 fails", region2.name)
	only("region1 ejected", region2.name, 20, 16)

	local.status.Store(0)
	zone2.status.Store(0)
	reaches("region1 healed", local.name)
	only("back to local", local.name, 20, 20)
}

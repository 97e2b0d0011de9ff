package model

// ProxyType is the kind of proxy: a sidecar beside one workload, or a
// router (gateway).
type ProxyType string

// Proxy types, as in Istio's node ID.
const (
	SidecarProxy ProxyType = "sidecar"
	RouterProxy  ProxyType = "router"
)

// Proxy is one connected proxy as translation sees it: who it is and where
// it runs. It is built by the xDS server from the node ID and metadata.
type Proxy struct {
	Type      ProxyType
	ID        string // the full node ID
	IP        string
	Name      string // workload or pod name
	Namespace string
	Labels    map[string]string
	// ServiceAccount is the proxy's service account name (not the SPIFFE ID).
	ServiceAccount string
	// InterceptionMode is "NONE" when no iptables rule feeds the proxy: its
	// listeners bind its own IP and apps reach it explicitly.
	InterceptionMode string
	// Locality is where the proxy runs (the node's locality), for Istio's
	// locality load balancing; zero when the proxy did not say.
	Locality Locality
}

// Locality is Istio's region/zone/subzone. It has the fields of
// xdsapi.Locality, so that the xDS side converts with a type conversion
// while the model stays free of xDS packages.
type Locality struct {
	Region, Zone, SubZone string
}

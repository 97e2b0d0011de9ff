package xdsapi

// MaxPipePath is the longest unix domain socket path, in bytes, of an
// Envoy Address.pipe: Linux's sockaddr_un sun_path is 108 bytes with the
// terminating NUL, and Envoy refuses a longer path. The control plane
// refuses a longer Sidecar unix:// address so the proxy never NACKs one.
const MaxPipePath = 107

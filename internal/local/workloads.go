package local

import (
	"fmt"

	"github.com/loom-mesh/loom/samples/bookinfo"
)

// The fixed host octets of the local mesh; the workloads' are in
// bookinfo.Workloads (.11 to .16).
const (
	loomdOctet   = 1
	ingressOctet = 10
)

// servicesYAML is Bookinfo's ServiceEntries (samples/bookinfo mesh/services.yaml).
func servicesYAML() ([]byte, error) {
	data, err := bookinfo.MeshFS.ReadFile("mesh/services.yaml")
	if err != nil {
		return nil, fmt.Errorf("read bookinfo services: %w", err)
	}
	return data, nil
}

// workloadEntriesYAML declares each workload at PREFIX.HostOctet; prefix is
// the subnet's first three octets, "127.0.0".
func workloadEntriesYAML(prefix string) []byte {
	return bookinfo.WorkloadEntriesYAML(prefix + ".")
}

// bookinfoGatewayYAML is Istio's samples/bookinfo/networking/bookinfo-gateway.yaml,
// byte for byte (a test compares it with the shared copy).
const bookinfoGatewayYAML = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  # The selector matches the ingress gateway pod labels.
  # If you installed Istio using Helm following the standard documentation, this would be "istio=ingress"
  selector:
    istio: ingressgateway # use istio default controller
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
`

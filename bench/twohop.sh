#!/usr/bin/env bash
# bench/twohop.sh plain|mtls: a proxy-overhead candidate (see
# ../shared/bench/README.md, "Candidate contract") made of two loom-proxy
# sidecars in a row, as a request between two meshed workloads crosses
# them: LISTEN_ADDR -> client sidecar -> server sidecar (LISTEN_PORT+200)
# -> UPSTREAM_ADDR. "plain" uses bench/loom-bootstrap.yaml for both hops;
# "mtls" the Istio ISTIO_MUTUAL / inbound mTLS shapes of
# bench/loom-2hop-{client,server}-mtls.yaml with Istio's sample workload
# certificates (CERT_DIR, default ../shared/istio-samples/certs). Both
# proxies are this script's children, so the harness sums their CPU; SIGTERM
# stops both.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/bin}
export CERT_DIR=${CERT_DIR:-$(cd "$ROOT/../shared/istio-samples/certs" && pwd)}
mode=${1:?plain or mtls}
client=$ROOT/bench/loom-bootstrap.yaml server=$ROOT/bench/loom-bootstrap.yaml
if [[ $mode == mtls ]]; then
  client=$ROOT/bench/loom-2hop-client-mtls.yaml server=$ROOT/bench/loom-2hop-server-mtls.yaml
fi
hop=127.0.0.1:$((LISTEN_PORT + 200))
LISTEN_ADDR=$hop ADMIN_ADDR=127.0.0.1:$((LISTEN_PORT + 300)) \
  "$BIN/loom-proxy" --bootstrap "$server" --access-log=false &
server_pid=$!
UPSTREAM_ADDR=$hop ADMIN_ADDR=127.0.0.1:$((LISTEN_PORT + 100)) \
  "$BIN/loom-proxy" --bootstrap "$client" --access-log=false &
client_pid=$!
trap 'kill -TERM $client_pid $server_pid 2>/dev/null; wait' TERM INT
wait -n $client_pid $server_pid
kill -TERM $client_pid $server_pid 2>/dev/null || true
wait
exit 1

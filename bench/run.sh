#!/usr/bin/env bash
# bench/run.sh: Loom's measurements for `make bench`.
#   1. proxy overhead: ../shared/bench/proxy-overhead.sh with loom-proxy as the
#      candidate, side by side with direct, nginx, HAProxy and Caddy;
#   2. route features: the same harness, direct plus loom-proxy with a plain
#      route (bench/loom-bootstrap.yaml) and then with Istio's default
#      retries, a 0 % fault filter, CORS and header rewrites
#      (bench/loom-bootstrap-features.yaml), so the two differ only in
#      the route;
#   3. config propagation: bench/propagation (file write -> first request
#      routed by the new rule), through real loomd and loom-proxy processes;
#   4. sidecar memory: bench/sidecarmem, one sidecar holding the routes of
#      1000 services (SIDECARMEM_N), then the same with a Sidecar resource
#      importing a tenth of them;
#   5. mTLS overhead: the same harness, direct plus two loom-proxy sidecars in
#      a row (bench/twohop.sh), in plaintext and then with Istio's mTLS
#      between them, so the two differ only in the transport socket.
# Results land in bench/results/ (raw data is git-ignored); bench/RESULTS.md
# is written by hand from them.
# Knobs: REPS (default 3), SKIP_OVERHEAD=1, SKIP_FEATURES=1, SKIP_PROPAGATION=1,
# SKIP_SIDECARMEM=1, SKIP_TWOHOP=1.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
BIN=${BIN:-$ROOT/bin}
export PATH="$PATH:$(go env GOPATH)/bin"

need() { # need BIN DEBIAN_PACKAGE
  command -v "$1" >/dev/null && return 0
  echo "installing $2 (for $1)" >&2
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "$2" >/dev/null
  fi
}

[[ -x $BIN/loom-proxy && -x $BIN/loomd ]] || (cd "$ROOT" && make build)

if [[ ${SKIP_OVERHEAD:-0} != 1 ]]; then
  [[ -d $SHARED ]] || { echo "bench: $SHARED not found (shared/ must be beside the project)" >&2; exit 1; }
  need nginx nginx
  need haproxy haproxy
  need caddy caddy
  # fortio is pinned: later releases need a module the proxy cannot fetch.
  command -v fortio >/dev/null || GOFLAGS= go install fortio.org/fortio@v1.68.2
  mkdir -p "$ROOT/bench/results"
  RESULTS_DIR="$ROOT/bench/results" REPS=${REPS:-3} \
    CANDIDATE_NAME=loom \
    CANDIDATE_DESC="loom-proxy --bootstrap bench/loom-bootstrap.yaml, GOMAXPROCS=\$WORKERS, access log off" \
    CANDIDATE_CMD="ADMIN_ADDR=127.0.0.1:\$((LISTEN_PORT+100)) exec $BIN/loom-proxy --bootstrap $ROOT/bench/loom-bootstrap.yaml --access-log=false" \
    "$SHARED/proxy-overhead.sh"
fi

if [[ ${SKIP_FEATURES:-0} != 1 ]]; then
  [[ -d $SHARED ]] || { echo "bench: $SHARED not found (shared/ must be beside the project)" >&2; exit 1; }
  command -v fortio >/dev/null || GOFLAGS= go install fortio.org/fortio@v1.68.2
  mkdir -p "$ROOT/bench/results"
  for variant in plain features; do
    file=$ROOT/bench/loom-bootstrap.yaml
    [[ $variant == features ]] && file=$ROOT/bench/loom-bootstrap-features.yaml
    RESULTS_DIR="$ROOT/bench/results/route-$variant" REPS=${REPS:-3} TARGETS=direct \
      CANDIDATE_NAME=loom-$variant \
      CANDIDATE_DESC="loom-proxy --bootstrap $(basename "$file"), GOMAXPROCS=\$WORKERS, access log off" \
      CANDIDATE_CMD="ADMIN_ADDR=127.0.0.1:\$((LISTEN_PORT+100)) exec $BIN/loom-proxy --bootstrap $file --access-log=false" \
      "$SHARED/proxy-overhead.sh"
  done
fi

if [[ ${SKIP_PROPAGATION:-0} != 1 ]]; then
  (cd "$ROOT" && go run ./bench/propagation -bin-dir "$BIN" -n "${PROPAGATION_N:-20}")
fi

if [[ ${SKIP_SIDECARMEM:-0} != 1 ]]; then
  (cd "$ROOT" && go run ./bench/sidecarmem -bin-dir "$BIN" -services "${SIDECARMEM_N:-1000}")
  (cd "$ROOT" && go run ./bench/sidecarmem -bin-dir "$BIN" -services "${SIDECARMEM_N:-1000}" -scoped)
fi

if [[ ${SKIP_TWOHOP:-0} != 1 ]]; then
  [[ -d $SHARED ]] || { echo "bench: $SHARED not found (shared/ must be beside the project)" >&2; exit 1; }
  command -v fortio >/dev/null || GOFLAGS= go install fortio.org/fortio@v1.68.2
  mkdir -p "$ROOT/bench/results"
  for variant in plain mtls; do
    RESULTS_DIR="$ROOT/bench/results/twohop-$variant" REPS=${REPS:-3} TARGETS=direct \
      CANDIDATE_NAME=loom-2hop-$variant \
      CANDIDATE_DESC="two loom-proxy sidecars in a row (bench/twohop.sh $variant), GOMAXPROCS=\$WORKERS each, access log off" \
      CANDIDATE_CMD="BIN=$BIN exec $ROOT/bench/twohop.sh $variant" \
      "$SHARED/proxy-overhead.sh"
  done
fi

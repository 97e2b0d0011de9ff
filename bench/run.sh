#!/usr/bin/env bash
# bench/run.sh: Loom's measurements for `make bench`.
#   1. proxy overhead: ../shared/bench/proxy-overhead.sh with loom-proxy as the
#      candidate, side by side with direct, nginx, HAProxy and Caddy;
#   2. route features: the same harness, direct plus loom-proxy with a plain
#      route (bench/loom-bootstrap.yaml) or with Istio's default
#      retries, a 0 % fault filter, CORS and header rewrites
#      (bench/loom-bootstrap-features.yaml), so the two differ only in
#      the route; the variants alternate run by run (see interleaved);
#   2b. telemetry (issue 5): the same, loom-proxy with no telemetry
#      (bench/loom-bootstrap.yaml) or full telemetry
#      (bench/loom-bootstrap-telemetry.yaml: istio.stats, 1 % tracing over
#      OTLP/gRPC to bench/otlpsink, an access log to a file), alternated;
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
# Knobs: REPS (default 3), SKIP_OVERHEAD=1, SKIP_FEATURES=1, SKIP_TELEMETRY=1,
# SKIP_PROPAGATION=1, SKIP_SIDECARMEM=1, SKIP_TWOHOP=1; BASE_PORT (the
# harness's, default 18080) moves every port of steps 1, 2 and 2b.
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

# Always build: the binaries measured are the tree's (go's cache makes it
# quick), and the summaries name that tree.
(cd "$ROOT" && make build)
TREE="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"

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

# interleaved GROUP VARIANT... : for each of REPS repetitions, one harness
# run (direct + loom-proxy, REPS=1) per variant, the variants' order
# rotated each repetition, so that the load of this shared machine, which
# changes over minutes, falls on every variant alike; then bench/abmedian
# prints each variant's medians over the runs and the paired differences
# to the first, into bench/results/GROUP-STAMP.md. The variant's
# bootstrap and description come from variant_file / variant_desc, its
# extra flags from variant_flags.
interleaved() {
  local group=$1; shift
  local variants=("$@") n=${#variants[@]} reps=${REPS:-3} stamp
  stamp=$(date -u +%Y%m%d-%H%M)
  ((reps >= 1 && reps <= 20)) || { echo "bench: REPS must be 1..20" >&2; exit 1; }
  local rep i v
  for ((rep = 1; rep <= reps; rep++)); do
    for ((i = 0; i < n; i++)); do
      v=${variants[$(((i + rep - 1) % n))]}
      echo "bench: $group rep $rep/$reps variant $v (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
      RESULTS_DIR="$ROOT/bench/results/$group-$v" NAME="loom-$group-$v-$stamp-r$rep" REPS=1 TARGETS=direct \
        CANDIDATE_NAME="loom-$v" \
        CANDIDATE_DESC="loom-proxy --bootstrap $(basename "$(variant_file "$v")") $(variant_flags "$v"), GOMAXPROCS=\$WORKERS; $(variant_desc "$v")" \
        CANDIDATE_CMD="$(variant_env "$v") ADMIN_ADDR=127.0.0.1:\$((LISTEN_PORT+100)) exec $BIN/loom-proxy --bootstrap $(variant_file "$v") --access-log=false $(variant_flags "$v")" \
        "$SHARED/proxy-overhead.sh"
    done
  done
  local IFS=,
  {
    echo "Tree measured: $TREE"
    echo
    (cd "$ROOT" && go run ./bench/abmedian -results bench/results -group "$group" -variants "${variants[*]}" -stamp "$stamp")
  } | tee "$ROOT/bench/results/$group-$stamp.md"
}

variant_file() {
  case $1 in
    features) echo "$ROOT/bench/loom-bootstrap-features.yaml" ;;
    full) echo "$ROOT/bench/loom-bootstrap-telemetry.yaml" ;;
    *) echo "$ROOT/bench/loom-bootstrap.yaml" ;;
  esac
}
variant_desc() {
  case $1 in
    features) echo "Istio's default retries, 0 % fault, CORS, header rewrites" ;;
    full) echo "istio.stats, 1 % tracing to OTLP sink, access log to a file" ;;
    *) echo "plain route, no telemetry, access log off" ;;
  esac
}
# The Istio metrics are served (--stats-addr) but not scraped during the run.
variant_flags() { [[ $1 == full ]] && echo "--stats-addr 127.0.0.1:\$((LISTEN_PORT+101))"; true; }
variant_env() { [[ $1 == full ]] && echo "OTLP_ADDR=$OTLP_ADDR"; true; }

if [[ ${SKIP_FEATURES:-0} != 1 || ${SKIP_TELEMETRY:-0} != 1 ]]; then
  [[ -d $SHARED ]] || { echo "bench: $SHARED not found (shared/ must be beside the project)" >&2; exit 1; }
  command -v fortio >/dev/null || GOFLAGS= go install fortio.org/fortio@v1.68.2
  mkdir -p "$ROOT/bench/results"
fi

if [[ ${SKIP_FEATURES:-0} != 1 ]]; then
  interleaved route plain features
fi

if [[ ${SKIP_TELEMETRY:-0} != 1 ]]; then
  # The trace collector runs beside the harness, not under the candidate,
  # so its CPU is not counted as the proxy's; stopped by PID.
  SINKDIR=$(mktemp -d)
  (cd "$ROOT" && go build -o "$SINKDIR/otlpsink" ./bench/otlpsink)
  OTLP_ADDR=127.0.0.1:$((${BASE_PORT:-18080} + 17))
  "$SINKDIR/otlpsink" -addr "$OTLP_ADDR" -max-duration 3h 2>"$SINKDIR/otlpsink.log" &
  SINK_PID=$!
  trap 'kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; rm -rf "$SINKDIR"' EXIT
  # The full variant must not measure an exporter with no collector.
  for ((i = 0; i < 50; i++)); do
    grep -q serving "$SINKDIR/otlpsink.log" 2>/dev/null && break
    kill -0 "$SINK_PID" 2>/dev/null || { cat "$SINKDIR/otlpsink.log" >&2; echo "bench: otlpsink did not start" >&2; exit 1; }
    sleep 0.1
  done
  grep -q serving "$SINKDIR/otlpsink.log" || { echo "bench: otlpsink not serving after 5s" >&2; exit 1; }
  interleaved telemetry none full
  kill "$SINK_PID" && wait "$SINK_PID" || true
  cat "$SINKDIR/otlpsink.log" >&2
  trap - EXIT
  rm -rf "$SINKDIR"
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

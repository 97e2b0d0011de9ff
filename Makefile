# Loom's entry points. `make demo` starts the local bookinfo mesh; `make test`
# is what CI runs (.ci/run). Everything builds into ./bin.
GO      ?= go
BIN     ?= $(CURDIR)/bin
PKGS    ?= ./...
# -race in CI and locally; the e2e binaries are built without it inside the test.
TESTFLAGS ?= -race -count=1 -timeout 30m

.PHONY: all build demo test lint fuzz bench clean netns-tools

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/loomd ./cmd/loom-proxy ./cmd/loomctl ./samples/bookinfo/cmd/bookinfo

demo: build netns-tools
	$(BIN)/loomctl demo $(DEMO_ARGS)

# Transparent interception (`loomctl demo --interception redirect` and its
# e2e tests) needs ip (iproute2) and iptables. Installed only when missing
# and only as root (the explicit-mode demo needs neither); idempotent.
netns-tools:
	@if [ "$$(id -u)" = 0 ] && ! { command -v ip && command -v iptables-restore; } >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing iproute2 and iptables"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 iptables </dev/null; \
	  else echo "netns-tools: install iproute2 and iptables (no apt-get here)"; fi; \
	fi

lint:
	@fmt_out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$fmt_out" ]; then echo "gofmt needed:"; echo "$$fmt_out"; exit 1; fi
	$(GO) vet $(PKGS)

test: lint netns-tools
	$(GO) test $(TESTFLAGS) $(PKGS)
	$(MAKE) fuzz

# Fuzz targets, each run briefly beyond its seed corpus (which plain
# `go test` runs): "package:FuzzName" pairs. FUZZTIME is a count of inputs
# rather than a duration: on a loaded machine a timed run can end with the
# fuzzer's own "context deadline exceeded".
FUZZ_TARGETS ?= ./internal/dataplane/filter/jwtauthn:FuzzVerify ./internal/dataplane/filter/rbac:FuzzPolicyMatching
FUZZTIME     ?= 20000x
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$name ($$pkg, $(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

# Benchmarks: Go micro-benchmarks of the proxy's hot path and of the CA's
# issuance rate (certs/s), then the shared
# proxy-overhead harness (needs nginx, haproxy, caddy and fortio; the script
# installs what is missing) and the config-propagation measurement.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./internal/dataplane/... ./internal/controlplane/ca/
	bench/run.sh

clean:
	rm -rf $(BIN)

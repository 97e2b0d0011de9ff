# Loom's entry points. `make demo` starts the local bookinfo mesh; `make test`
# is what CI runs (.ci/run). Everything builds into ./bin.
GO      ?= go
BIN     ?= $(CURDIR)/bin
PKGS    ?= ./...
# -race in CI and locally; the e2e binaries are built without it inside the test.
TESTFLAGS ?= -race -count=1 -timeout 30m

.PHONY: all build demo test test-deps lint fuzz bench clean ui browser-deps node-deps proto redis

all: build

build: ui
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/loomd ./cmd/loom-proxy ./cmd/loomctl ./samples/bookinfo/cmd/bookinfo

demo: build
	$(BIN)/loomctl demo $(DEMO_ARGS)

# The dashboard's front end: npm ci (from the committed package-lock.json)
# and esbuild bundle internal/dashboard/ui into internal/dashboard/web/dist,
# which loomd embeds. Rebuilt only when its sources change. Plain
# `go build ./...` works without it (loomd then says the page is not built).
UI_DIR := internal/dashboard/ui
UI_OUT := internal/dashboard/web/dist/app.js
UI_SRC := $(wildcard $(UI_DIR)/src/*) $(UI_DIR)/package.json $(UI_DIR)/package-lock.json

ui: $(UI_OUT)

$(UI_DIR)/node_modules/.installed: $(UI_DIR)/package.json $(UI_DIR)/package-lock.json | node-deps
	cd $(UI_DIR) && npm ci --no-audit --no-fund
	@touch $@

$(UI_OUT): $(UI_DIR)/node_modules/.installed $(UI_SRC)
	cd $(UI_DIR) && npm run build

# Node.js and npm from Debian when missing (this machine image has them).
node-deps:
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }

# Headless Chromium for the dashboard's browser tests, and a font with the
# lock glyph the graph draws, from Debian when missing.
browser-deps:
	@command -v chromium >/dev/null && dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-noto-color-emoji; }

lint:
	@fmt_out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$fmt_out" ]; then echo "gofmt needed:"; echo "$$fmt_out"; exit 1; fi
	$(GO) vet $(PKGS)

# Tools tests need, installed when missing (as root, with apt-get):
# iptables and iproute2 for the original_dst test's network namespace;
# prometheus (Debian's 2.42) for the dashboard's --prometheus-url test.
test-deps:
	@missing=""; \
	  command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	  command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	  command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing$$missing"; \
	      DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	    else echo "missing$$missing: tests that need them skip"; fi; \
	  fi

# LOOM_REQUIRE_BROWSER=1: the browser tests fail, rather than skip, without
# Chromium or the front-end bundle.
test: lint test-deps redis ui browser-deps
	LOOM_REQUIRE_BROWSER=1 $(GO) test $(TESTFLAGS) $(PKGS)
	$(MAKE) fuzz

# Fuzz targets, each run briefly beyond its seed corpus (which plain
# `go test` runs): "package:FuzzName" pairs. FUZZTIME is a count of inputs
# rather than a duration: on a loaded machine a timed run can end with the
# fuzzer's own "context deadline exceeded".
FUZZ_TARGETS ?= ./internal/dataplane/filter/jwtauthn:FuzzVerify ./internal/dataplane/filter/rbac:FuzzPolicyMatching ./internal/dataplane/listener:FuzzSniff
FUZZTIME     ?= 20000x
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$name ($$pkg, $(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

# The rate limit service's tests run a real redis-server (Debian's); install
# it when it is missing (as root, or with sudo), without starting the
# system service.
redis:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (for the rate limit service's tests)" >&2; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }

# Loom's own API types (loom.dev) and the foreign configs it declares (Istio's stats.PluginConfig): regenerate the Go code from the .proto
# files with protoc (Debian's protobuf-compiler) and protoc-gen-go at the
# module's google.golang.org/protobuf version.
PROTOS = $(shell find internal/controlplane/loomapi -name '*.proto')
XDSAPI_PROTOS = $(shell find internal/xdsapi -name '*.proto')
proto:
	@command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
	GOFLAGS= GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
	PATH=$(CURDIR)/bin:$$PATH protoc -I internal/controlplane --go_out=internal/controlplane --go_opt=paths=source_relative $(PROTOS:internal/controlplane/%=%)
	PATH=$(CURDIR)/bin:$$PATH protoc -I internal/xdsapi --go_out=internal/xdsapi --go_opt=paths=source_relative $(XDSAPI_PROTOS:internal/xdsapi/%=%)

# Benchmarks: Go micro-benchmarks of the proxy's hot path and of the CA's
# issuance rate (certs/s), then the shared
# proxy-overhead harness (needs nginx, haproxy, caddy and fortio; the script
# installs what is missing): loom-proxy against the baselines, route features
# and full telemetry each against a plain proxy (variants alternated run by
# run, medians by bench/abmedian), then the config-propagation measurement.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./internal/dataplane/... ./internal/controlplane/ca/ ./internal/dashboard/
	bench/run.sh

clean:
	rm -rf $(BIN) $(UI_DIR)/node_modules
	find internal/dashboard/web/dist -type f ! -name README.md ! -name .gitignore -delete

# dpop-broker tasks. `make test` is the one CI runs (.ci/run): it installs what the tests need
# (npm peers from interop/package-lock.json, Debian's chromium when missing), then runs
# go vet, staticcheck and every Go test with the race detector, interop and browser tests
# included, the deployment examples' checks (deploy/) and the bounded fuzzing.

GO                  ?= go
STATICCHECK_VERSION ?= v0.8.2
# The timeout is a bound per test binary for loaded machines (interop takes about half a minute
# on an idle 2-core machine and several times that beside another `make test`).
GOTEST_FLAGS        ?= -race -count=1 -timeout 30m

.PHONY: test deps npm chromium checks vet staticcheck deploy-check gotest bench fuzz build image demo

# Two lanes run side by side once deps are in place: the Go tests, and the checks (vet,
# staticcheck, then the fuzz targets one by one). The Go tests leave the cores idle while they
# wait for peers, browsers, Redis failovers and timeouts, and the checks fill them; once the
# Go tests are done, two checks run at a time. --output-sync prints each target's output whole
# when it ends, so the lanes never interleave; any failure fails `make test` and make names
# the target that failed.
test: deps
	@$(MAKE) --no-print-directory -j2 --output-sync=target gotest checks

checks: vet staticcheck deploy-check fuzz

deps: npm chromium

npm: interop/node_modules/.package-lock.json deploy/node_modules/.package-lock.json

interop/node_modules/.package-lock.json: interop/package-lock.json
	npm ci --prefix interop --no-audit --no-fund --loglevel=error

deploy/node_modules/.package-lock.json: deploy/package-lock.json
	npm ci --prefix deploy --no-audit --no-fund --loglevel=error

# Two `make test` runs started at once on a fresh machine would both install chromium and the
# second would fail on dpkg's lock: flock serialises them (the second finds chromium installed
# once it gets the lock) and apt waits for any other apt user instead of failing.
chromium:
	@command -v chromium >/dev/null 2>&1 || flock /tmp/dpop-broker-chromium-install.lock sh -c '\
	  command -v chromium >/dev/null 2>&1 && exit 0; \
	  echo "chromium not found: installing Debian'"'"'s chromium package"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null'

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# The deployment examples (deploy/README.md): the compose file through compose-go (the Compose
# Specification's schema), the Kubernetes manifests against the API's OpenAPI schemas
# (kubernetes-models, from deploy/package-lock.json) and its Go types, the broker configuration
# they mount through `config validate`'s checks, and the deployment policy. deploy/ is a Go module
# of its own (its validators stay out of the broker's go.mod), so vet and staticcheck run
# there too. A few seconds. It requires the broker's module through `replace ../`: after a
# change of the broker's go.mod, run `cd deploy && go mod tidy` (this target says so when it is due).
deploy-check: deploy/node_modules/.package-lock.json
	@cd deploy && $(GO) mod tidy -diff >/dev/null || { echo "deploy/go.mod is not tidy (the broker's go.mod changed?): run cd deploy && go mod tidy"; exit 1; }
	cd deploy && $(GO) vet ./... && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./... && \
	  DEPLOY_CHECKS_REQUIRED=1 $(GO) test -count=1 ./...

# go test runs -p (number of CPUs) test binaries at a time, in the order the packages are
# given: the three that take longest (node peers and browsers, the broker's end-to-end tests,
# Redis Sentinel and Cluster) start first, and the short ones fill in around them.
GOTEST_FIRST = ./interop/ ./broker/ ./sessions/
gotest:
	INTEROP_REQUIRED=1 $(GO) test $(GOTEST_FLAGS) $(GOTEST_FIRST) ./...

# Bounded fuzzing (CI runs it on every make test): the DPoP proof parser/validator and the
# broker's hostile-input surfaces (/authorize, /login/callback and /oauth/token parameters,
# config loading, RP-initiated logout, home-realm discovery's login_hint, the operators' console,
# the console Logs page's filter and its rendering of the troubleshooting text). FUZZTIME is per target and counts executions, not
# seconds: Go 1.26's duration-bounded fuzzing can fail with a spurious "context deadline
# exceeded" when the machine is busy (golang/go#75804), and a count does the same work on a
# fast or a loaded machine (FuzzTokenRequest: 8000 runs in about 5 s on a 2-core box).
# Each target is fuzz/PACKAGE/FuzzName (`make fuzz/broker/FuzzLogout` runs one); go test fuzzes
# one target per run.
FUZZTIME ?= 8000x
FUZZ      = $(GO) test -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x
FUZZ_TARGETS = dpop/FuzzVerify broker/FuzzAuthorize broker/FuzzCallback broker/FuzzTokenRequest \
               config/FuzzConfigParse broker/FuzzLogout broker/FuzzHomeRealm broker/FuzzConsole \
               broker/FuzzConsoleLogsFilter broker/FuzzInlineMarkdown
fuzz: $(addprefix fuzz/,$(FUZZ_TARGETS))

fuzz/%:
	$(FUZZ) -fuzz '^$(*F)$$' ./$(*D)/

# The other broker targets start after the first, which leaves the fuzz-instrumented packages
# in the build cache (two started at once would each compile them).
fuzz/broker/FuzzCallback fuzz/broker/FuzzTokenRequest fuzz/broker/FuzzLogout fuzz/broker/FuzzHomeRealm fuzz/broker/FuzzConsole \
fuzz/broker/FuzzConsoleLogsFilter fuzz/broker/FuzzInlineMarkdown: | fuzz/broker/FuzzAuthorize

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./dpop/ ./broker/

# The version, commit and build date `broker version` and dpop_broker_build_info report,
# stamped into the binary (package buildinfo): the nearest tag (with the commits since and
# -dirty), the full revision, and the time now or SOURCE_DATE_EPOCH's (reproducible builds).
# Override any of them: make build VERSION=v1.2.3. Outside a git checkout they are left empty
# and the binary reports what the Go toolchain recorded, or "unknown".
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell d=$${SOURCE_DATE_EPOCH:-$$(date +%s)}; date -u -d "@$$d" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$$d" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null)
BUILDINFO   = github.com/dpop-broker/dpop-broker/buildinfo
LDFLAGS     = -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT) -X $(BUILDINFO).buildDate=$(BUILD_DATE)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/broker ./cmd/broker

# The container image with the same stamps (the build context has no .git: see .dockerignore).
IMAGE ?= dpop-broker
image:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg BUILD_DATE=$(BUILD_DATE) -t $(IMAGE) .

demo:
	$(GO) run ./cmd/broker demo

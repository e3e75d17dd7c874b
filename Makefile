# Albatross: `make run` serves the demo, `make test` runs every test, `make bench` measures.
SHELL := /bin/bash
# The toolchain lives here on these machines even when a login shell did not put it on PATH.
export PATH := $(PATH):/opt/swift/usr/bin
CONFIG ?= debug
BIN := .build/$(CONFIG)/alb
# Release builds link the Swift runtime and Foundation into the binary, as the Dockerfile ships it: calls into
# the runtime (retain/release above all) skip the PLT and its thread-locals the dynamic look-up, about 3-5% of
# CPU per request and 6 ms of cold start here (docs/benchmarks.md). They also compile every module, NIO's
# included, with cross-module optimisation, so that our modules specialise and inline the generic channel code
# they call (NIOAny, the pipeline, ByteBuffer) instead of calling its unspecialised bodies, and link with full
# link-time optimisation (BoringSSL and the C wrappers too): about 3% and then 4% less CPU per request
# (docs/benchmarks.md). The price is the link: 3-4 minutes for any release build, incremental ones included
# (ThinLTO, faster, fails to link here: lld runs out of memory maps). And every module, NIO's included, without
# run-time exclusivity checks: in NIO's channel code they were 15% of the user-space instructions of a proxied
# request under callgrind (docs/decisions.md; debug builds, so every test, keep them). Every release build uses
# the same flags, so switching targets does not rebuild.
SWIFT_OPTIMISATION_FLAGS := -Xswiftc -cross-module-optimization --experimental-lto-mode=full \
	-Xswiftc -enforce-exclusivity=unchecked
SWIFT_BUILD_FLAGS_release := --static-swift-stdlib $(SWIFT_OPTIMISATION_FLAGS)
RELEASE_BUILD := swift build -c release $(SWIFT_BUILD_FLAGS_release) --product alb
PYTHON ?= python3
DEBIAN_PACKAGES := curl ca-certificates openssl nghttp2-client wrk zlib1g-dev libbrotli-dev
# OpenSSL's libcrypto for RSA keys' handshake signatures (the CLibcrypto target; docs/decisions.md).
DEBIAN_PACKAGES += libssl-dev
# Only `make bench` needs these: nginx's Brotli filter, for the compression row beside alb's; valgrind, for the
# instructions per request (tests/bench_instructions.sh).
BENCH_DEBIAN_PACKAGES := nginx libnginx-mod-http-brotli-filter valgrind
# QUIC (docs/quic.md): Debian's ngtcp2 0.12 with its GnuTLS crypto helper and nghttp3 0.8 for the CNgtcp2 and
# CNghttp3 system-library targets; ngtcp2's example client for the end-to-end tests.
DEBIAN_PACKAGES += libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev libgnutls28-dev pkg-config ngtcp2-client
# jsonschema checks manifests against `alb schema`; kubernetes' API models check examples/kubernetes/.
PYTHON_PACKAGES := pytest pyyaml grpcio jsonschema kubernetes websockets prometheus_client brotli aioquic
STAMP := .build/.deps-installed

.PHONY: all deps build run test unit e2e examples fuzz fuzz-smoke soak bench bench-deps bench-compression bench-allocs alloc-counter fmt lint clean

all: build

# Debian packages: `apt-get update` once, then install only what is missing. The stamp depends on this
# Makefile, so a package added here is installed on the next run.
deps: $(STAMP)
$(STAMP): Makefile
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v $(PYTHON) >/dev/null 2>&1 || missing="$$missing python3 python3-pip"; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  apt-get update -q && apt-get install -y -q $$missing; fi
	@command -v swift >/dev/null 2>&1 || { echo "error: swift not found on PATH (expected /opt/swift/usr/bin)" >&2; exit 1; }
	@$(PYTHON) -c "import pytest, yaml, grpc, websockets, jsonschema, kubernetes, prometheus_client, brotli, aioquic" 2>/dev/null || { \
	  echo "installing $(PYTHON_PACKAGES) from PyPI"; \
	  $(PYTHON) -m pip install -q $(PYTHON_PACKAGES) 2>/dev/null \
	  || $(PYTHON) -m pip install -q --break-system-packages $(PYTHON_PACKAGES) 2>/dev/null \
	  || { apt-get update -q && apt-get install -y -q python3-pytest python3-yaml python3-grpcio python3-websockets \
	       python3-jsonschema python3-kubernetes python3-prometheus-client python3-brotli; }; }
	@# promtool (Debian's prometheus package) checks the /metrics text in the e2e tests when present; optional.
	@command -v promtool >/dev/null 2>&1 || apt-get install -y -q prometheus >/dev/null 2>&1 \
	  || echo "note: promtool not installed (Debian package prometheus); its /metrics check is skipped"
	@mkdir -p .build && touch $(STAMP)

build: deps
	swift build -c $(CONFIG) $(SWIFT_BUILD_FLAGS_$(CONFIG)) --product alb

# The demo: two local backends on 9001/9002 and the reconciler watching manifests/ (listener on :8080).
run: build
	@$(PYTHON) tests/demo_backend.py 9001 backend-1 9002 backend-2 & backend=$$!; \
	trap 'kill $$backend 2>/dev/null' EXIT; \
	echo "demo: curl http://127.0.0.1:8080/   (edit manifests/ and watch status/; Ctrl-C stops)"; \
	$(BIN) reconcile manifests --watch --status-dir status

test: deps unit e2e examples fuzz-smoke

# Warnings in our own code fail the build (dependencies' warnings are theirs).
unit:
	@mkdir -p .build
	swift build --build-tests 2>&1 | tee .build/unit-build.log; test $${PIPESTATUS[0]} -eq 0
	@if grep -E ": warning:" .build/unit-build.log | grep -v "/\.build/"; then \
	  echo "error: warnings in Sources/ or Tests/ (treated as errors)"; exit 1; fi
	swift test --skip-build

e2e: deps
	swift build --product alb
	ALB_BIN=$(CURDIR)/.build/debug/alb $(PYTHON) -m pytest -q -o faulthandler_timeout=300 tests/e2e

# Every example set validates (or, for the deliberately invalid ones, fails exactly as documented).
examples: deps
	swift build --product alb
	@bash tests/check_examples.sh .build/debug/alb

# libFuzzer targets (docs/fuzzing.md), built with sanitizers into .build-fuzz/build-TARGET: each runs FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
fuzz:
	bash tests/fuzz.sh $(FUZZ_SECONDS)

# The short pass `make test` runs: every committed seed and crasher replays, then a few seconds of search.
FUZZ_SMOKE_SECONDS ?= 15
fuzz-smoke:
	bash tests/fuzz.sh $(FUZZ_SMOKE_SECONDS)

# Bounded soak (not in `make test`): SOAK_CHANGES in-place changes under keep-alive load, a leak check.
SOAK_CONFIG ?= release
soak: deps
	swift build -c $(SOAK_CONFIG) $(SWIFT_BUILD_FLAGS_$(SOAK_CONFIG)) --product alb
	ALB_BIN=$(CURDIR)/.build/$(SOAK_CONFIG)/alb $(PYTHON) tests/soak.py

bench: deps alloc-counter bench-deps
	$(RELEASE_BUILD)
	SWIFT_OPTIMISATION_FLAGS="$(SWIFT_OPTIMISATION_FLAGS)" bash tests/bench.sh

# The compression row alone (tests/bench_compression.py: alb beside nginx with its Brotli filter and gzip).
bench-compression: deps bench-deps
	$(RELEASE_BUILD)
	$(PYTHON) tests/bench_compression.py .build/release/alb

bench-deps:
	@missing=""; for p in $(BENCH_DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages for make bench:$$missing"; \
	  apt-get update -q && apt-get install -y -q $$missing; fi

# Heap allocations per proxied request (tests/bench_allocs.py; docs/benchmarks.md): alb under an LD_PRELOAD
# malloc counter. Needs no peers; its TLS and HTTP/2 rows are skipped without openssl or h2load.
bench-allocs: alloc-counter
	$(RELEASE_BUILD)
	$(PYTHON) tests/bench_allocs.py .build/release/alb

# The counter is a C shared object, built here rather than by SwiftPM: it must not link the Swift runtime.
# gcc when present, else the toolchain's clang.
ALLOC_COUNTER := .build/alloc_counter.so
ALLOC_CC := $(shell command -v cc || command -v clang)
alloc-counter: $(ALLOC_COUNTER)
$(ALLOC_COUNTER): tests/alloc_counter/alloc_counter.c
	@mkdir -p .build
	$(ALLOC_CC) -shared -fPIC -O2 -Wall -Wextra -Werror -o $@ $<

fmt lint:
	@echo "swift-format is not packaged for this toolchain here; see docs/decisions.md"

clean:
	rm -rf .build .build-fuzz status

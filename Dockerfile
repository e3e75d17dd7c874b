# syntax=docker/dockerfile:1
# The `alb` image: build with Swift 6.3 on Debian bookworm, run on bookworm-slim as a non-root user.
#   docker build -t albatross .
#   docker run --rm -v "$PWD/examples/kubernetes/manifests:/etc/alb/manifests:ro" -p 8080:8080 albatross
# (manifests served in a container bind 0.0.0.0, as those do, not 127.0.0.1)
# Kubernetes: examples/kubernetes/ and docs/kubernetes.md.

ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build ------------------------------------------------------------------------------------------
FROM ${SWIFT_IMAGE} AS build
# The C libraries' headers (compression, QUIC, OpenSSL's libcrypto for RSA keys), as `make deps` installs them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends zlib1g-dev libbrotli-dev libngtcp2-dev \
        libngtcp2-crypto-gnutls-dev libnghttp3-dev libgnutls28-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies first, so a source change does not fetch them again.
# (Package.resolve[d]: copied when present; the repository does not commit it.)
COPY Package.swift Package.resolve[d] ./
RUN swift package resolve
# Every target's folder must exist for SwiftPM to load the package (tests and fuzz targets included);
# .dockerignore keeps .build, status and the like out.
COPY . .
# The Swift runtime and Foundation linked in: beside libc, libm, libstdc++ and libgcc_s (in the slim image) the
# binary needs the C libraries' run-time packages installed below (readelf -d). Stripped, it is about 80 MB
# instead of 150. Cross-module optimisation
# on every module, full link-time optimisation and no run-time exclusivity checks, as the Makefile's release
# builds (docs/benchmarks.md, docs/decisions.md).
RUN swift build -c release --product alb --static-swift-stdlib -Xswiftc -cross-module-optimization \
        --experimental-lto-mode=full -Xswiftc -enforce-exclusivity=unchecked \
    && install -D -m 0755 "$(swift build -c release --show-bin-path)/alb" /out/alb \
    && strip /out/alb \
    && /out/alb schema >/dev/null

# ---- runtime ----------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# alb logs in UTC. Brotli, zlib, ngtcp2, nghttp3 and GnuTLS are linked; libssl3's libcrypto is opened at run
# time for RSA keys (docs/tls.md).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g libbrotli1 libngtcp2-9 \
        libngtcp2-crypto-gnutls2 libnghttp3-3 libgnutls30 libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 alb \
    && useradd --system --uid 10001 --gid alb --home-dir /var/lib/alb --shell /usr/sbin/nologin alb \
    && mkdir -p /etc/alb/manifests /var/lib/alb/status \
    && chown -R alb:alb /var/lib/alb
COPY --from=build /out/alb /usr/local/bin/alb
# A numeric user, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/alb
# 8080: the listener of examples/kubernetes (the manifests decide); 9901: the admin endpoint of the default
# command (/healthz, /readyz, /status, /metrics).
EXPOSE 8080 9901
ENTRYPOINT ["alb"]
CMD ["reconcile", "/etc/alb/manifests", "--watch", "--status-dir", "/var/lib/alb/status", \
     "--admin", "0.0.0.0:9901", "--admin-allow-remote"]

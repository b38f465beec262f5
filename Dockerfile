# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build -t appdb-operator .                          # the operator (default, last stage)
#   docker build -t appdb-vpn-gateway --target vpn-gateway .  # the strongSwan gateway pods of VpnConnections
#   docker buildx bake                                        # both, the binary built once (docker-bake.hcl)
# Multi-architecture builds compile on the builder's own architecture for the target's (no emulated rustc).

FROM --platform=$BUILDPLATFORM rust:1.89-bookworm AS build
ARG TARGETARCH
WORKDIR /src
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-gnu > /rust-target; pkg=gcc-x86-64-linux-gnu ;; \
      arm64) echo aarch64-unknown-linux-gnu > /rust-target; pkg=gcc-aarch64-linux-gnu ;; \
      *) echo "unsupported architecture $TARGETARCH" >&2; exit 1 ;; \
    esac \
    && if [ "$(dpkg --print-architecture)" != "$TARGETARCH" ]; then \
         apt-get update && apt-get install -y --no-install-recommends "$pkg" "libc6-dev-$TARGETARCH-cross" \
         && rm -rf /var/lib/apt/lists/*; \
       fi \
    && rustup target add "$(cat /rust-target)"
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-$TARGETARCH \
    target=$(cat /rust-target) \
    && if [ "$(dpkg --print-architecture)" != "$TARGETARCH" ]; then \
         prefix=$([ "$TARGETARCH" = arm64 ] && echo aarch64-linux-gnu || echo x86_64-linux-gnu); \
         export "CC_$(echo "$target" | tr - _)=$prefix-gcc" "CARGO_TARGET_$(echo "$target" | tr a-z- A-Z_)_LINKER=$prefix-gcc"; \
       fi \
    && cargo build --locked --release --bin appdb-operator --target "$target" \
    && install -D -m 0755 "target/$target/release/appdb-operator" /out/appdb-operator

# strongSwan for the VPN gateway pods: charon, swanctl, and the kernel-libipsec plugin (userspace ESP for nodes
# without kernel ESP support). The operator configures it through a mounted swanctl.conf.
FROM debian:bookworm-slim AS vpn-gateway
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins iproute2 iputils-ping ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/appdb-operator /usr/local/bin/appdb-operator
ENTRYPOINT ["/usr/lib/ipsec/charon"]

# The operator: a static-enough binary on a distroless base, as a non-root user, nothing else in the image.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/appdb-operator /usr/local/bin/appdb-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/appdb-operator"]
CMD ["run"]

# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build -t appdb-operator .                          # the operator (default, last stage)
#   docker build -t appdb-vpn-gateway --target vpn-gateway .  # the strongSwan gateway pods of VpnConnections

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin appdb-operator \
    && install -D -m 0755 target/release/appdb-operator /out/appdb-operator

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

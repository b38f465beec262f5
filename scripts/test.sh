#!/usr/bin/env bash
# The one test command: on a fresh Debian 12 machine (as root, or with sudo) it installs what the tests need and
# runs the whole suite. Usage: ./scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Real components the tests drive. Tests that need them fail loudly when they are missing; this installs them.
need_apt=()
command -v mariadbd >/dev/null 2>&1 || need_apt+=(mariadb-server mariadb-client)
[ -x /usr/lib/ipsec/charon ] && command -v swanctl >/dev/null 2>&1 && [ -e /usr/lib/ipsec/plugins/libstrongswan-openssl.so ] \
  && [ -e /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] \
  || need_apt+=(strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v ping >/dev/null 2>&1 || need_apt+=(iputils-ping)
# The pod runner's node: load balancer addresses (and later Services and NetworkPolicies) are nftables rules.
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
# kube-proxy deletes the connection tracking of UDP translations to a removed endpoint; the runner does too.
command -v conntrack >/dev/null 2>&1 || need_apt+=(conntrack)
command -v lua5.1 >/dev/null 2>&1 || need_apt+=(lua5.1)
command -v kubectl >/dev/null 2>&1 || {
  echo "kubectl is required (the tests drive the project's test API server with the real kubectl)." >&2
  echo "Install kubectl 1.32 or later from your distribution or the Kubernetes package repository." >&2
  exit 1
}
if ((${#need_apt[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# Oracle MySQL (the operator's default engine): Debian 12 has no MySQL server, so this installs the unstable
# suite's MySQL 9.x into /opt/appdb-mysql (cached .debs in ~/.cache/appdb-mysql). Every real-server test runs on
# MySQL and MariaDB.
./scripts/install-mysql.sh

# Libreswan's own configuration parser (addconn) checks the Libreswan device file. Installing libreswan would remove
# strongSwan, so its package is only extracted, into /opt/appdb-libreswan.
if [ ! -x /opt/appdb-libreswan/usr/libexec/ipsec/addconn ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  libreswan_deb=$(mktemp -d)
  (cd "$libreswan_deb" && apt-get download libreswan >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download libreswan; })
  $SUDO mkdir -p /opt/appdb-libreswan
  $SUDO dpkg-deb -x "$libreswan_deb"/libreswan_*.deb /opt/appdb-libreswan
  # addconn's libraries (the package's dependencies apt did not install).
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libunbound8 libevent-2.1-7
  rm -rf "$libreswan_deb"
fi

# kubernetes-validate checks rendered objects against the oldest supported Kubernetes version's schemas.
python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install --quiet kubernetes-validate==1.37.0
# The real Helm 4 engine (its Go SDK behind a C ABI, no helm binary) renders and lints the chart (tests/chart.rs).
python3 -c 'import helm_python' 2>/dev/null || python3 -m pip install --quiet helm-python-sdk==0.2.2

# Build the binaries the end-to-end tests start as separate processes, then run every test of the workspace.
cargo build --locked --workspace --bins --examples
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --no-fail-fast --workspace --lib --bins --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "suite: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"

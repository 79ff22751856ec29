#!/usr/bin/env bash
# Installs what cross-building and running clip-edge for aarch64 needs on a
# Debian 12 host: Debian's rustc 1.96 (rustc-web) with its aarch64 standard
# library, the aarch64 GNU toolchain and qemu-user. Idempotent; needs root.
#
# armv7 (armhf) is configured in .cargo/config.toml and cross.toml but not
# installed here: bookworm's main suite has libstd-rust-web-dev:armhf only at
# 1.85 (tract 0.23 needs 1.91), and the security suite's armhf index failed to
# download on this project's machines, which also makes `apt-get update` fail.
# Pass --armhf to try anyway (never in CI).
set -euo pipefail
want_armhf=no
[ "${1:-}" = --armhf ] && want_armhf=yes
need=()
command -v /usr/bin/rustc >/dev/null 2>&1 && /usr/bin/rustc --print target-list >/dev/null 2>&1 || need+=(rustc-web)
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need+=(libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ "$want_armhf" = yes ]; then
  dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
  need+=(libstd-rust-web-dev:armhf gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "cross toolchain already installed"
  exit 0
fi
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
/usr/bin/rustc --version
ls -d /usr/lib/rustlib/*/ | sed 's/^/rust std: /'

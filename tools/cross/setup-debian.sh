#!/usr/bin/env bash
# Installs what cross-building and running clip-edge for the Raspberry Pi's
# ARM targets needs on a Debian 12 host: Debian's rustc 1.96 (rustc-web) with
# its aarch64 standard library, the aarch64 GNU toolchain and qemu-user; with
# --armhf also the armhf (armv7, 32-bit OS) standard library and toolchain.
# Idempotent; needs root.
#
# armhf: bookworm's main suite has libstd-rust-web-dev:armhf only at 1.85
# (tract 0.23 needs 1.91); bookworm-security has 1.96, and its armhf index
# syncs once dpkg knows the armhf architecture (checked 2026-12-04; it failed
# to download on 2026-11-29, which also made `apt-get update` fail).
set -euo pipefail
want_armhf=no
[ "${1:-}" = --armhf ] && want_armhf=yes
need=()
command -v /usr/bin/rustc >/dev/null 2>&1 && /usr/bin/rustc --print target-list >/dev/null 2>&1 || need+=(rustc-web)
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need+=(libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ "$want_armhf" = yes ]; then
  dpkg --print-foreign-architectures | grep -qx armhf || { dpkg --add-architecture armhf; need+=(armhf-index); }
  [ -d /usr/lib/rustlib/armv7-unknown-linux-gnueabihf ] || need+=(libstd-rust-web-dev:armhf)
  command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
  command -v qemu-arm-static >/dev/null || need+=(qemu-user-static)
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "cross toolchain already installed"
  exit 0
fi
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs=()
for p in "${need[@]}"; do [ "$p" = armhf-index ] || pkgs+=("$p"); done
[ ${#pkgs[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
/usr/bin/rustc --version
ls -d /usr/lib/rustlib/*/ | sed 's/^/rust std: /'

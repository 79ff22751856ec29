#!/usr/bin/env bash
# Installs what cross-building and running clip-edge for the Raspberry Pi's
# ARM targets needs on a Debian 12 host: Debian's rustc 1.96 (rustc-web) with
# its aarch64 standard library, the aarch64 GNU toolchain and qemu-user; with
# --armhf also the armhf (armv7, 32-bit OS) standard library and toolchain.
# Idempotent; needs root. Exit status 3: the armhf package index could not be
# downloaded (the other indexes were; armhf is left unconfigured, nothing installed).
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
added_armhf=no
if [ "$want_armhf" = yes ]; then
  dpkg --print-foreign-architectures | grep -qx armhf || { dpkg --add-architecture armhf; added_armhf=yes; need+=(armhf-index); }
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
# A mirror mid-sync serves an index of the wrong size ("File has unexpected size ... Mirror sync in progress?",
# seen for bookworm-security's armhf index on 2026-12-06): try again a few times. If it still fails, an armhf
# architecture added here is removed again, so that the next `apt-get update` on this machine (for other
# packages) does not fail on the same index.
for attempt in 1 2 3 4; do
  if apt-get update -qq; then break; fi
  if [ $attempt = 4 ]; then
    if [ $added_armhf = yes ] && ! dpkg -l | grep -q ':armhf '; then
      dpkg --remove-architecture armhf || true
      # Without armhf the indexes download: the armhf one is what is missing (exit 3, for callers that can go
      # on without armv7 and say so).
      if apt-get update -qq; then
        echo "setup-debian.sh: the armhf package index could not be downloaded (4 tries; above: which file)" >&2
        exit 3
      fi
    fi
    echo "setup-debian.sh: apt-get update failed 4 times (above: which index)" >&2
    exit 1
  fi
  echo "setup-debian.sh: apt-get update failed (attempt $attempt; a mirror mid-sync?): again in 30 s" >&2
  sleep 30
done
pkgs=()
for p in "${need[@]}"; do [ "$p" = armhf-index ] || pkgs+=("$p"); done
[ ${#pkgs[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
/usr/bin/rustc --version
ls -d /usr/lib/rustlib/*/ | sed 's/^/rust std: /'

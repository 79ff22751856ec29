#!/usr/bin/env bash
# Cross-builds clip-edge for aarch64 with Debian's rustc and runs the runtime,
# board and numerical test suites under qemu-user, as a Raspberry Pi 4
# (QEMU_CPU=cortex-a72, default) or Pi 5 (QEMU_CPU=cortex-a76) would run them.
# Tests that spawn other aarch64 programs (CLI tests) need binfmt_misc and are
# not run here; everything they call is covered by the library tests.
#
# The test binaries are linked statically (crt-static): dynamically linked
# aarch64 programs, C ones too, hang in their first pthread_create under
# qemu-user on these hosts (seen with qemu 7.2 and 10.0 and Debian's
# cross glibc 2.36), while static ones run threads normally. The release
# device binary stays dynamic (glibc), as a board runs it.
# Usage: tools/cross/test-aarch64.sh [--release-binary]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=aarch64-unknown-linux-gnu
if [ "$(id -u)" = 0 ]; then tools/cross/setup-debian.sh; fi
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="$root/target/cross-static"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export TOKENIZERS_PARALLELISM=false
export QEMU_CPU=${QEMU_CPU:-cortex-a72}
export CARGO_TERM_COLOR=never
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
"$RUSTC" --version
qemu-aarch64-static --version | head -1

# One selection of packages and suites for the build and every run: a cargo
# invocation with another package set unifies features differently and would
# rebuild tract (minutes under this setup).
select=(-p clip-edge-runtime -p clip-edge-board -p clip-edge-tests
  --lib --test daemon --test enroll --test storm --test parity --test architectures --test bad_input --test text --test kernels --test quantised --test camera_path --test nnef)

t0=$(date +%s)
# Builds the test binaries and, for the board's process tests, the device binary.
cargo test --locked --target $target --no-run "${select[@]}" 2>&1 | tail -3
echo "cross build: $(( $(date +%s) - t0 )) s"

t1=$(date +%s)
echo "running under qemu-aarch64 with QEMU_CPU=$QEMU_CPU"
cargo test --locked --target $target "${select[@]}" -- --nocapture
if [ "$QEMU_CPU" = cortex-a72 ]; then
  echo "the same suites again as a Raspberry Pi 5 (QEMU_CPU=cortex-a76)"
  QEMU_CPU=cortex-a76 cargo test --locked --target $target "${select[@]}" -- --nocapture
fi
echo "qemu test time: $(( $(date +%s) - t1 )) s"

if [ "${1:-}" = --release-binary ]; then
  unset CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS
  export CARGO_TARGET_DIR="$root/target/cross-release"
  cargo build --locked --release --target $target -p clip-edge-board --bin clip-edge-board
  bin="$CARGO_TARGET_DIR/$target/release/clip-edge-board"
  echo "release binary: $(stat -c %s "$bin") bytes (stripped)"
  aarch64-linux-gnu-readelf -d "$bin" | grep NEEDED
fi

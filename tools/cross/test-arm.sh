#!/usr/bin/env bash
# Cross-builds clip-edge for a Raspberry Pi's ARM target with Debian's rustc
# and runs the runtime, board and numerical test suites under qemu-user:
#   aarch64 (64-bit OS): as a Pi 4 (QEMU_CPU=cortex-a72), then as a Pi 5 (cortex-a76);
#   armv7 (32-bit OS, armhf): as a Cortex-A7 (QEMU_CPU=cortex-a7): a Pi 2's core,
#     and the instruction set a Pi 3 / Zero 2 / Pi 4 runs under a 32-bit OS
#     (ARMv7-A with NEON and VFPv4; qemu-arm has no 32-bit Cortex-A53 model).
# Tests that spawn other ARM programs (CLI tests) need binfmt_misc and are
# not run here; everything they call is covered by the library tests.
#
# The test binaries are linked statically (crt-static): dynamically linked
# ARM programs, C ones too, hang in their first pthread_create under
# qemu-user on these hosts (seen with qemu 7.2 and 10.0 and Debian's cross
# glibc 2.36), while static ones run threads normally. The release device
# binary stays dynamic (glibc), as a board runs it.
#
# Both targets share one target folder (target/cross-static for the tests,
# target/cross-release for the device binary), so the host-side build scripts
# and proc macros are compiled once for both.
#
# Usage: tools/cross/test-arm.sh aarch64|armv7 [--release-binary] [--lean-binary] [--no-tests]
#   --release-binary  also build the release device binary and print its size
#   --lean-binary     also build it without the thread pool (cargo feature
#                     `threads` off) and print the size it saves
#   --no-tests        only the binaries asked for
# Environment: QEMU_CPUS_AARCH64 (default "cortex-a72 cortex-a76"),
# QEMU_CPUS_ARMV7 (default "cortex-a7"): the CPUs the suites run as, in turn;
# every suite on the first, the numerical ones (library, parity, architectures,
# kernels, quantised, nnef: where tract's kernel choice shows) on the others.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
arch=${1:-}
shift || true
case "$arch" in
  aarch64) target=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; qemu=qemu-aarch64-static
    cpus=(${QEMU_CPUS_AARCH64:-cortex-a72 cortex-a76}); setup=() ;;
  armv7) target=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; qemu=qemu-arm-static
    cpus=(${QEMU_CPUS_ARMV7:-cortex-a7}); setup=(--armhf)
    # qemu-user shows the host's /proc/cpuinfo, where tract's armv7 probe looks
    # for "neon"; every Cortex-A7 has NEON, so tell tract (a real Pi's
    # /proc/cpuinfo lists it, and there this is not needed).
    export TRACT_CPU_ARM32_NEON=true
    # Debian 12's ld drops the Thumb bit of glibc's IFUNC resolvers in big
    # static executables; this runner restores it, then runs qemu-arm-static.
    export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="$root/tools/cross/qemu-arm-static-run.py" ;;
  *) echo "usage: tools/cross/test-arm.sh aarch64|armv7 [--release-binary] [--lean-binary] [--no-tests]" >&2; exit 2 ;;
esac
release=no
lean=no
tests=yes
for a in "$@"; do
  case "$a" in
    --release-binary) release=yes ;;
    --lean-binary) lean=yes ;;
    --no-tests) tests=no ;;
    *) echo "test-arm.sh: unknown argument '$a'" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" = 0 ]; then tools/cross/setup-debian.sh "${setup[@]}"; fi
t_var=$(echo "$target" | tr 'a-z-' 'A-Z_')
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="$root/target/cross-static"
export "CC_${target//-/_}=$gnu-gcc"
export TOKENIZERS_PARALLELISM=false
# No line tables in the qemu-user test builds: a dozen big static links each, and ~2 GB less on disk.
export CARGO_PROFILE_DEV_DEBUG=false
export CARGO_TERM_COLOR=never
export "CARGO_TARGET_${t_var}_RUSTFLAGS=-C target-feature=+crt-static"
"$RUSTC" --version
$qemu --version | head -1

# One selection of packages and suites for the build and every run: a cargo
# invocation with another package set unifies features differently and would
# rebuild tract (minutes under this setup).
select=(-p clip-edge-runtime -p clip-edge-board -p clip-edge-tests
  --lib --test enroll --test parity --test architectures --test bad_input --test kernels --test quantised --test nnef)
# The suites that drive the daemon as a process (its run loop, GPIO storms, the frame path) run on aarch64; the
# 32-bit virtual board runs that daemon end to end from its package (tests/tests/vboard.rs), so armv7 builds and
# runs the rest (everything where a 32-bit usize or the kernels can differ): CI's time on 2 cores. The text
# encoder (tests/tests/text.rs) runs on the host that builds prompt stores, never on a board: aarch64 only.
if [ "$arch" = aarch64 ]; then select+=(--test daemon --test storm --test camera_path --test text); fi
# The CPUs after the first run only what tract's kernel choice can change (same packages: no rebuild).
numeric=(-p clip-edge-runtime -p clip-edge-board -p clip-edge-tests
  --lib --test parity --test architectures --test kernels --test quantised --test nnef)

if [ $tests = yes ]; then
  t0=$(date +%s)
  # Builds the test binaries and, for the board's process tests, the device binary.
  cargo test --locked --target $target --no-run "${select[@]}" 2>&1 | tail -3
  echo "$arch cross build: $(( $(date +%s) - t0 )) s"

  t1=$(date +%s)
  first=yes
  for cpu in "${cpus[@]}"; do
    if [ $first = yes ]; then
      echo "running under $qemu with QEMU_CPU=$cpu"
      QEMU_CPU=$cpu cargo test --locked --target $target "${select[@]}" -- --nocapture
    else
      echo "running under $qemu with QEMU_CPU=$cpu: the suites whose results depend on the CPU's kernels"
      QEMU_CPU=$cpu cargo test --locked --target $target "${numeric[@]}" -- --nocapture
    fi
    first=no
  done
  echo "$arch qemu test time (${cpus[*]}): $(( $(date +%s) - t1 )) s"
fi

build_release() { # FEATURE-ARGS...
  local log="$root/target/cross-release-$arch.log"
  mkdir -p "$root/target"
  if ( unset "CARGO_TARGET_${t_var}_RUSTFLAGS"
    CARGO_TARGET_DIR="$root/target/cross-release" \
      cargo build --locked --release --target $target -p clip-edge-board --bin clip-edge-board "$@" ) >"$log" 2>&1; then
    tail -n 1 "$log"
  else
    tail -n 80 "$log"
    echo "test-arm.sh: the $arch release build failed (whole log: $log)" >&2
    exit 1
  fi
}
out="$root/target/cross-release/$target/release"
if [ $lean = yes ]; then
  # First, so that the default build is what stays at release/clip-edge-board.
  # Another tract-linalg (no multithread-mm), so tract is compiled a second time.
  t2=$(date +%s)
  build_release --no-default-features
  cp "$out/clip-edge-board" "$out/clip-edge-board-lean"
  echo "$arch lean release binary (no thread pool): $(stat -c %s "$out/clip-edge-board-lean") bytes, built in $(( $(date +%s) - t2 )) s"
fi
if [ $release = yes ]; then
  t2=$(date +%s)
  build_release
  echo "$arch release binary: $(stat -c %s "$out/clip-edge-board") bytes (stripped), built in $(( $(date +%s) - t2 )) s"
  $gnu-readelf -d "$out/clip-edge-board" | grep NEEDED
  if [ $lean = yes ]; then
    echo "$arch: the thread pool costs $(( $(stat -c %s "$out/clip-edge-board") - $(stat -c %s "$out/clip-edge-board-lean") )) bytes"
  fi
fi

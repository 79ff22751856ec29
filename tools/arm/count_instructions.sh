#!/usr/bin/env bash
# Retired aarch64 instructions per encoded frame, under qemu-user as a
# Raspberry Pi 4 (cortex-a72) and Pi 5 (cortex-a76), for bundles and
# precisions: an ARM estimate without a board.
#
# Method: runtime/examples/frames.rs (cross-built statically, release
# profile) encodes one synthetic frame FRAMES times on one thread. It runs
# twice per case under qemu-aarch64 with tools/arm/insn_count.c (built by
# tools/arm/build_qemu_plugin.sh): with 1 frame and with N frames; the
# difference divided by N-1 is one frame's instructions without the load,
# parse and optimisation. tract picks its kernels from the CPU features qemu
# reports, so cortex-a72 runs the plain NEON int8 kernels and cortex-a76 the
# `sdot` ones. Limits: instructions retired, not cycles (no pipelines, caches
# or memory bandwidth in TCG); see docs/performance.md, "ARM estimate".
#
# Usage: tools/arm/count_instructions.sh [--no-build] [--jobs J] [--out DIR] [CASE...]
#   CASE = BUNDLE:PRECISION:N   (default: models/emoji:f32:6
#          models/emoji:int8-compute:6 .cache/bench/ViT-B-32:f32:3
#          .cache/bench/ViT-B-32:int8-compute:3)
#   CPUS="cortex-a72 cortex-a76" (env) chooses the emulated CPUs.
# Writes OUT/results.tsv (one row per case and CPU), OUT/classes.tsv (per-frame
# instructions by class) and the raw logs; OUT defaults to target/arm/counts.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=aarch64-unknown-linux-gnu
build=1
jobs=1
out=$root/target/arm/counts
cases=()
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) build=0 ;;
    --jobs) jobs=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) cases+=("$1") ;;
  esac
  shift
done
[ ${#cases[@]} -gt 0 ] || cases=(models/emoji:f32:6 models/emoji:int8-compute:6
  .cache/bench/ViT-B-32:f32:3 .cache/bench/ViT-B-32:int8-compute:3)
cpus=${CPUS:-cortex-a72 cortex-a76}
plugin=$root/target/arm/plugins/libinsn_count.so
[ -f "$plugin" ] || tools/arm/build_qemu_plugin.sh
mkdir -p "$out/logs"

export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="$root/target/cross-static"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
bin=$CARGO_TARGET_DIR/$target/release/examples/frames
if [ $build = 1 ]; then
  cargo build --locked --release --target $target -p clip-edge-runtime --example frames
fi
[ -x "$bin" ] || { echo "missing $bin (build without --no-build)" >&2; exit 1; }

# One run: CASE CPU FRAMES -> log with the program's output and the counts.
run_one() {
  local bundle=$1 precision=$2 cpu=$3 frames=$4
  local tag
  tag=$(basename "$bundle")_${precision}_${cpu}_$frames
  local t0=$SECONDS
  QEMU_CPU=$cpu qemu-aarch64 -plugin "$plugin" -d plugin -D "$out/logs/$tag.plugin" \
    "$bin" "$bundle" "$precision" "$frames" > "$out/logs/$tag.out" 2>&1
  echo "$tag: $(sed -n 's/^insn_count total //p' "$out/logs/$tag.plugin") instructions, $((SECONDS - t0)) s wall" >&2
}
export -f run_one
export plugin bin out

list=()
for c in "${cases[@]}"; do
  IFS=: read -r bundle precision n <<< "$c"
  for cpu in $cpus; do
    list+=("$bundle $precision $cpu 1" "$bundle $precision $cpu $n")
  done
done
printf '%s\n' "${list[@]}" | xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _

total_of() { sed -n 's/^insn_count total //p' "$out/logs/$1.plugin"; }
printf 'model\tprecision\tcpu\tframes\tinsns_1\tinsns_n\tinsns_per_frame\tkernels\tmacs_per_frame\n' > "$out/results.tsv"
printf 'model\tprecision\tcpu\tclass\tinsns_per_frame\n' > "$out/classes.tsv"
for c in "${cases[@]}"; do
  IFS=: read -r bundle precision n <<< "$c"
  m=$(basename "$bundle")
  for cpu in $cpus; do
    a=${m}_${precision}_${cpu}_1
    b=${m}_${precision}_${cpu}_$n
    i1=$(total_of "$a"); in=$(total_of "$b")
    per=$(( (in - i1) / (n - 1) ))
    kernels=$(sed -n 's/^kernel \([^ ]*\) .*/\1/p' "$out/logs/$b.out" | paste -sd, -)
    macs=$(sed -n 's/.*MACs per frame \([0-9]*\).*/\1/p' "$out/logs/$b.out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$m" "$precision" "$cpu" "$n" "$i1" "$in" "$per" "$kernels" "${macs:--}" >> "$out/results.tsv"
    paste <(sed -n 's/^insn_count class \([0-9]*\) \(.*\)/\2\t\1/p' "$out/logs/$a.plugin") \
          <(sed -n 's/^insn_count class \([0-9]*\) .*/\1/p' "$out/logs/$b.plugin") |
      while IFS=$'\t' read -r cls c1 cn; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$m" "$precision" "$cpu" "$cls" $(( (cn - c1) / (n - 1) ))
      done >> "$out/classes.tsv"
  done
done
column -t -s $'\t' "$out/results.tsv"
echo "wrote $out/results.tsv and $out/classes.tsv"

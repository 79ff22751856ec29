#!/usr/bin/env bash
# int8-compute against f32 in tract, interleaved: ROUNDS rounds, each one
# `clip-edge bench` process per form (f32 first, then int8-compute), so that a
# shared host's load changes hit both forms alike. Prints every round's two
# medians and their ratio, then the median of the ratios per bundle.
# compare.sh is the full table (both engines, every form); this is the check
# of issue 17's speed goal on a noisy machine.
#
#   tools/bench/int8_speedup.sh [--rounds N] [--threads T] [--frames F] [BUNDLE ...]
#
# Default bundles: models/emoji and, where compare.sh has exported them,
# .cache/bench/ViT-B-32 and .cache/bench/MobileCLIP2-S0.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=5 threads=1 frames=20
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --frames) frames=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "int8_speedup.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
bundles=("$@")
if [ ${#bundles[@]} -eq 0 ]; then
  bundles=(models/emoji)
  for m in ViT-B-32 MobileCLIP2-S0; do
    [ -f ".cache/bench/$m/bundle.toml" ] && bundles+=(".cache/bench/$m")
  done
fi
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); simd: $(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|asimddp|asimd' /proc/cpuinfo | sort -u | xargs); threads $threads, $frames frames per run, $rounds rounds"
cargo build -q --release -p clip-edge-tools
bin=target/release/clip-edge
image=models/emoji/samples/dog-google.png
store=$(mktemp --suffix .store)
trap 'rm -f "$store"' EXIT
infer() {
  "$bin" bench --bundle "$1" --precision "$2" --threads "$threads" --frames "$frames" --prompts "$store" --json "$image" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["infer_ms_median"])'
}
for b in "${bundles[@]}"; do
  grep -q 'precision = "int8-compute"' "$b/bundle.toml" || { echo "$b: no int8-compute form (tools/python/export_bundle.py requantise)" >&2; continue; }
  "$bin" -q prompts random --bundle "$b" --labels a,b,c,d --out "$store" >/dev/null
  ratios=()
  for r in $(seq 1 "$rounds"); do
    f=$(infer "$b" f32)
    i=$(infer "$b" int8-compute)
    ratio=$(python3 -c "print(f'{$f / $i:.2f}')")
    ratios+=("$ratio")
    echo "$(basename "$b") round $r: f32 $f ms, int8-compute $i ms, ${ratio}x"
  done
  echo "$(basename "$b"): median speed-up $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')x over $rounds rounds"
done

#!/usr/bin/env bash
# Peak RSS and cold start of each image-encoder form, interleaved: ROUNDS
# rounds, each one `clip-edge bench` process per form (--frames 3, one
# thread), so that a shared host's load changes hit every form alike. Prints
# every run's cold start, load phases (read / parse / optimise) and peak RSS,
# then each form's range. Issue 17's goals: int8-compute's peak RSS not above
# f32's, its cold start within 1.2x.
#
#   tools/bench/load_rss.sh [--rounds N] [BUNDLE ...]
#
# Default bundles: models/emoji and, where compare.sh has exported them,
# .cache/bench/ViT-B-32 and .cache/bench/MobileCLIP2-S0. Forms: f32,
# int8-compute and int8, those the bundle has.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "load_rss.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
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
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); $rounds rounds"
cargo build -q --release -p clip-edge-tools
bin=target/release/clip-edge
image=models/emoji/samples/dog-google.png
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for b in "${bundles[@]}"; do
  "$bin" -q prompts random --bundle "$b" --labels a,b,c,d --out "$work/$(basename "$b").store" >/dev/null
done
for r in $(seq 1 "$rounds"); do
  for b in "${bundles[@]}"; do
    for p in f32 int8-compute int8; do
      grep -q "precision = \"$p\"" "$b/bundle.toml" || continue
      log="$work/log"
      json=$("$bin" -v bench --bundle "$b" --precision "$p" --threads 1 --frames 3 --warmup 1 \
        --prompts "$work/$(basename "$b").store" --json "$image" 2>"$log")
      phases=$(grep -o 'in [0-9]* ms (read [^)]*)' "$log" || true)
      line=$(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print("%.0f ms cold start, %.1f MB peak RSS, from %s" % (d["cold_start_ms"], d["peak_rss_mb"], d["model_form"]))' "$json")
      echo "round $r $(basename "$b") $p: $line; load $phases"
      echo "$(basename "$b") $p $line" >>"$work/all"
    done
  done
done
echo "ranges (cold start ms, peak RSS MB):"
python3 - "$work/all" <<'EOF'
import sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    model, form, cold, _, _, _, rss, *_ = line.split()
    runs[(model, form)].append((float(cold), float(rss)))
for (model, form), v in runs.items():
    c = sorted(x[0] for x in v); m = sorted(x[1] for x in v)
    print(f"  {model} {form}: cold start {c[0]:.0f}-{c[-1]:.0f}, peak RSS {m[0]:.1f}-{m[-1]:.1f}")
EOF

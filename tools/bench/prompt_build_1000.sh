#!/usr/bin/env bash
# Times `clip-edge prompts build` for 1000 classes x 7 templates on a bundle
# (default: the fixture) in each element type, and prints store sizes; then
# f32 with 1 text-encoder thread against all of them (THREADS, default nproc).
# Usage: tools/bench/prompt_build_1000.sh [BUNDLE_DIR] [PROFILE] [CLASSES]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle=${1:-$root/tests/data/vit_tiny}
profile=${2:-release}
classes=${3:-1000}
threads=${THREADS:-$(nproc)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flag=$([ "$profile" = release ] && echo --release || true)
cargo build -q $flag --manifest-path "$root/Cargo.toml" -p clip-edge-tools --bin clip-edge
bin="$root/target/$([ "$profile" = release ] && echo release || echo debug)/clip-edge"
{
  echo 'templates = "default"'
  for i in $(seq 1 "$classes"); do printf '[[class]]\nname = "object number %04d"\n' "$i"; done
} > "$work/labels.toml"
show='import json,sys; d=json.load(sys.stdin); print("%-5s %d thread(s) %d prompts %7.2f s total %6.2f ms/prompt %9d bytes" % (d["element"], d["threads"], d["prompts"], d["total_ms"]/1e3, d["embed_ms"]/d["prompts"], d["bytes"]))'
for el in f32 f16 int8; do
  "$bin" -q prompts build --bundle "$bundle" --labels "$work/labels.toml" --element "$el" --out "$work/$el.store" --json \
    --threads "$threads" | python3 -c "$show"
done
"$bin" -q prompts build --bundle "$bundle" --labels "$work/labels.toml" --out "$work/one.store" --json --threads 1 \
  | python3 -c "$show"
cmp -s "$work/one.store" "$work/f32.store" && echo "1 thread and $threads threads: identical stores" \
  || { echo "1 thread and $threads threads: stores differ" >&2; exit 1; }

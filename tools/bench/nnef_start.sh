#!/usr/bin/env bash
# Cold start of the image encoder from its NNEF copy against the ONNX file,
# interleaved rounds in one run: read, parse (+ typing), optimise, first frame.
# Bundles without an NNEF copy get one first (`clip-edge bundle nnef`).
# Usage: tools/bench/nnef_start.sh [--rounds N] [--profile dev|release] [BUNDLE...]
# Default bundles: models/default and, when present, .cache/bench/{ViT-B-32,MobileCLIP2-S0}
# (made by tools/bench/compare.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
rounds=5
profile=dev
bundles=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) bundles+=("$1"); shift ;;
  esac
done
if [ ${#bundles[@]} -eq 0 ]; then
  bundles=(models/default)
  for m in ViT-B-32 MobileCLIP2-S0; do
    [ -f ".cache/bench/$m/bundle.toml" ] && bundles+=(".cache/bench/$m")
  done
fi
if [ "$profile" = release ]; then
  cargo build -q --release -p clip-edge-tools --bin clip-edge
  bin=target/release/clip-edge
else
  cargo build -q -p clip-edge-tools --bin clip-edge
  bin=target/debug/clip-edge
fi
image=models/default/samples/dog-google.png
out=$(mktemp)
trap 'rm -f "$out" "$out.store"' EXIT
for b in "${bundles[@]}"; do
  if ! grep -q '^nnef = ' "$b/bundle.toml"; then
    "$bin" -q bundle nnef --bundle "$b" --precision f32
  fi
  # Bundles without a default prompt store (the random-weight exports) get a random one.
  store=()
  if ! grep -q '^prompts = ' "$b/bundle.toml"; then
    "$bin" -q prompts random --bundle "$b" --labels a,b,c,d --out "$out.store"
    store=(--prompts "$out.store")
  fi
  for r in $(seq "$rounds"); do
    for form in nnef onnx; do
      flag=$([ $form = onnx ] && echo --onnx || true)
      "$bin" -q bench --bundle "$b" "${store[@]}" --precision f32 $flag --frames 3 --warmup 0 --json "$image" |
        python3 -c "import json,sys; d=json.load(sys.stdin); d['bundle_dir']=sys.argv[1]; print(json.dumps(d))" "$b" >> "$out"
    done
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"f32 image encoder, medians of {sys.argv[2]} interleaved rounds (ms)")
print("| bundle | file size | form | read | parse | optimise | first frame | cold start |")
print("|---|---|---|---|---|---|---|---|")
for b in dict.fromkeys(r["bundle_dir"] for r in rows):
    for form in ("onnx", "nnef"):
        rs = [r for r in rows if r["bundle_dir"] == b and r["model_form"] == form]
        med = lambda f: statistics.median(f(r) for r in rs)
        name = "image_encoder_f32." + ("onnx" if form == "onnx" else "nnef.tar")
        size = os.path.getsize(os.path.join(b, name)) / 1e6
        print(f"| {rs[0]['bundle']} | {size:.1f} MB | {form} | {med(lambda r: r['load_ms']['read']):.1f} | "
              f"{med(lambda r: r['load_ms']['parse']):.1f} | {med(lambda r: r['load_ms']['optimise']):.1f} | "
              f"{med(lambda r: r['first_frame_ms']):.1f} | {med(lambda r: r['cold_start_ms']):.1f} |")
PY

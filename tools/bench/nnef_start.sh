#!/usr/bin/env bash
# Cold start of the image encoder from its NNEF copy against the ONNX file,
# interleaved rounds in one run: read, parse (+ typing), optimise, first frame.
# Bundles without an NNEF copy get one first (`clip-edge bundle nnef`).
# Usage: tools/bench/nnef_start.sh [--rounds N] [--profile dev|release] [--tract-ops] [BUNDLE...]
# --tract-ops adds, in the same interleaved rounds, each form loaded with tract's
# own operators (`clip-edge bench --tract-ops`: none of clip-edge's rewrites),
# and the ratio of each cold start to that one (what the rewrites cost at start).
# Default bundles: models/emoji and, when present, .cache/bench/{ViT-B-32,MobileCLIP2-S0}
# (made by tools/bench/compare.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
rounds=5
profile=dev
tract_ops=false
bundles=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --tract-ops) tract_ops=true; shift ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) bundles+=("$1"); shift ;;
  esac
done
if [ ${#bundles[@]} -eq 0 ]; then
  bundles=(models/emoji)
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
image=models/emoji/samples/dog-google.png
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
    variants=("nnef" "onnx --onnx")
    $tract_ops && variants+=("nnef --tract-ops" "onnx --onnx --tract-ops")
    for v in "${variants[@]}"; do
      read -r _ flags <<< "$v"
      # shellcheck disable=SC2086 # the flags are words
      "$bin" -q bench --bundle "$b" "${store[@]}" --precision f32 $flags --frames 3 --warmup 0 --json "$image" |
        python3 -c "import json,sys; d=json.load(sys.stdin); d['bundle_dir']=sys.argv[1]; print(json.dumps(d))" "$b" >> "$out"
    done
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"f32 image encoder, medians of {sys.argv[2]} interleaved rounds (ms)")
tract_ops = any(r.get("tract_ops") for r in rows)
print("| bundle | file size | form | operators | read | parse | optimise | first frame | cold start |"
      + (" vs tract's ops |" if tract_ops else ""))
print("|---|---|---|---|---|---|---|---|---|" + ("---|" if tract_ops else ""))
for b in dict.fromkeys(r["bundle_dir"] for r in rows):
    for form in ("onnx", "nnef"):
        name = "image_encoder_f32." + ("onnx" if form == "onnx" else "nnef.tar")
        size = os.path.getsize(os.path.join(b, name)) / 1e6
        med = {}
        for ops in (False, True) if tract_ops else (False,):
            rs = [r for r in rows if r["bundle_dir"] == b and r["model_form"] == form and r.get("tract_ops") == ops]
            if not rs:  # the NNEF copy did not load (the encoder fell back to ONNX, and warned)
                continue
            m = lambda f: statistics.median(f(r) for r in rs)
            med[ops] = (rs[0]["bundle"], m(lambda r: r["load_ms"]["read"]), m(lambda r: r["load_ms"]["parse"]),
                        m(lambda r: r["load_ms"]["optimise"]), m(lambda r: r["first_frame_ms"]),
                        m(lambda r: r["cold_start_ms"]))
        for ops, (bname, read, parse, opt, first, cold) in med.items():
            vs = f" {cold / med[True][5]:.2f}x |" if tract_ops and True in med else (" - |" if tract_ops else "")
            print(f"| {bname} | {size:.1f} MB | {form} | {'tract' if ops else 'clip-edge'} | {read:.1f} | "
                  f"{parse:.1f} | {opt:.1f} | {first:.1f} | {cold:.1f} |{vs}")
PY

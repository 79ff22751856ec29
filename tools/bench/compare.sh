#!/usr/bin/env bash
# tract (clip-edge bench) against ONNX Runtime on the same image-encoder files,
# the same thread count, in the same run: one table of model x precision x
# engine -> inference median, ratio to ONNX Runtime, cold start, peak RSS, file.
#
#   tools/bench/compare.sh [--threads N] [--frames N] [BUNDLE ...]
#
# Default bundles: models/default, and random-weight ViT-B-32 and MobileCLIP2-S0
# exports in .cache/bench (made with tools/python/export_bundle.py on first use;
# that needs the venv's torch). Installs the venv (tools/python/setup_venv.sh)
# if onnxruntime is missing. tract's figure is inference only (preprocessing
# and decoding are reported by clip-edge bench separately); ONNX Runtime gets a
# ready 1x3xSxS tensor. "int8" is the bundle's shipped int8 file;
# "int8-dynamic" is ONNX Runtime's dynamic quantisation of the f32 file, made
# here, run in both engines.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=1 frames=50
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --frames) frames=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
py=.venv/bin/python
if ! [ -x "$py" ] || ! "$py" -c "import onnxruntime" 2>/dev/null; then
  tools/python/setup_venv.sh
fi
bundles=("$@")
if [ ${#bundles[@]} -eq 0 ]; then
  bundles=(models/default)
  for m in ViT-B-32 MobileCLIP2-S0; do
    if ! [ -f ".cache/bench/$m/bundle.toml" ]; then
      echo "compare: exporting $m with random weights into .cache/bench/$m" >&2
      "$py" tools/python/export_bundle.py open-clip --model "$m" --random-init --precisions int8 \
        --out ".cache/bench/$m" --force >/dev/null
    fi
    bundles+=(".cache/bench/$m")
  done
fi
cargo build -q -p clip-edge-tools
image=models/default/samples/dog-google.png
rows=$(mktemp)
for b in "${bundles[@]}"; do
  size=$(sed -n 's/^size = \([0-9]*\)/\1/p' "$b/bundle.toml")
  dyn="$b/.image_encoder_int8_dynamic.onnx"
  if ! [ -f "$dyn" ]; then
    "$py" -c "import sys; sys.path.insert(0, 'tools/python'); import export_bundle as e, pathlib; \
e.quantise_int8_dynamic(pathlib.Path('$b/image_encoder_f32.onnx'), pathlib.Path('$dyn'))"
  fi
  store=$(mktemp --suffix .store)
  target/debug/clip-edge -q prompts random --bundle "$b" --labels a,b,c,d,e,f,g,h --out "$store"
  dynbundle=$(mktemp -d)
  cp "$b/bundle.toml" "$dynbundle/"
  cp "$dyn" "$dynbundle/image_encoder_int8.onnx"
  cp "$b/image_encoder_f32.onnx" "$dynbundle/"
  "$py" - "$dynbundle" <<'PY'
import hashlib, pathlib, re, sys
d = pathlib.Path(sys.argv[1])
t = (d / "bundle.toml").read_text()
t = t.split("\n[text]")[0]
t = re.sub(r'prompts = "[^"]*"\n', "", t)
h = hashlib.sha256((d / "image_encoder_int8.onnx").read_bytes()).hexdigest()
t = re.sub(r'(precision = "int8"\nfile = "[^"]+"\nsha256 = ")[0-9a-f]+', r"\g<1>" + h, t)
t = re.sub(r'\[\[image\.encoder\]\]\nprecision = "f16"\nfile = "[^"]+"\nsha256 = "[0-9a-f]+"\n*', "", t)
(d / "bundle.toml").write_text(t)
PY
  for form in f32 int8 int8-dynamic; do
    case $form in
      int8-dynamic) tb=$dynbundle p=int8 file=$dyn ;;
      *) tb=$b p=$form file=$(sed -n "/precision = \"$form\"/{n;s/^file = \"\(.*\)\"/\1/p}" "$b/bundle.toml"); file="$b/$file" ;;
    esac
    grep -q "precision = \"$p\"" "$tb/bundle.toml" || continue
    t=$(target/debug/clip-edge bench --bundle "$tb" --precision "$p" --threads "$threads" --frames "$frames" \
        --prompts "$store" --json "$image" 2>/dev/null) || t='{"error": "tract failed"}'
    o=$("$py" tools/bench/ort_bench.py --model "$file" --size "$size" --threads "$threads" --frames "$frames" \
        2>/dev/null) || o='{"error": "onnxruntime failed"}'
    echo "{\"model\": \"$(basename "$b")\", \"form\": \"$form\", \"file\": \"$file\", \"tract\": $t, \"ort\": $o}" >> "$rows"
  done
  rm -rf "$dynbundle" "$store"
done
"$py" - "$rows" "$threads" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"threads {sys.argv[2]}; inference median per frame (ms); cold start = load + first frame")
print("| model | form | file | engine | infer median | tract / ORT | cold start | peak RSS |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    size = f"{os.path.getsize(r['file']) / 1e6:.1f} MB"
    t, o = r["tract"], r["ort"]
    ratio = (f"{t['infer_ms_median'] / o['infer_ms_median']:.2f}"
             if "infer_ms_median" in t and "infer_ms_median" in o else "-")
    for name, e in (("tract", t), ("ONNX Runtime", o)):
        if "error" in e:
            print(f"| {r['model']} | {r['form']} | {size} | {name} | {e['error']} | | | |")
            continue
        print(f"| {r['model']} | {r['form']} | {size} | {name} | {e['infer_ms_median']:.2f} | "
              f"{ratio if name == 'tract' else ''} | {e['cold_start_ms']:.0f} ms | {e['peak_rss_mb']:.0f} MB |")
PY
rm -f "$rows"

#!/usr/bin/env bash
# tract (clip-edge bench) against ONNX Runtime on the same image-encoder files,
# the same thread counts, in the same run: one table of model x form x threads
# -> inference median in both engines, their ratio, cold start, peak RSS, file.
#
#   tools/bench/compare.sh [--threads "1 2"] [--frames N] [BUNDLE ...]
#
# Forms: f32; int8 (the bundle's weight-only file, computed in f32);
# int8-compute (the same file on tract's int8 kernels; ONNX Runtime has no
# such form, so its row runs ONNX Runtime's dynamic int8 of the f32 file, the
# closest it has); int8-dynamic (ONNX Runtime's quantize_dynamic of the f32
# file, run in both engines). tract's figure is inference only (preprocessing
# and decoding are reported by clip-edge bench separately); ONNX Runtime gets a
# ready 1x3xSxS tensor.
#
# Default bundles: models/default (photo), models/emoji, and random-weight ViT-B-32 and MobileCLIP2-S0
# exports in .cache/bench (made with tools/python/export_bundle.py on first use;
# that needs the venv's torch). A bundle without an int8-compute entry gets one
# (export_bundle.py requantise). Installs the venv (tools/python/setup_venv.sh)
# if onnxruntime is missing. Prints the CPU's SIMD flags first: the ratios
# differ between AVX2-only, AVX-512 and VNNI machines.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads_list="1 2" frames=50
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads_list=$2; shift 2 ;;
    --frames) frames=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
py=.venv/bin/python
if ! [ -x "$py" ] || ! "$py" -c "import onnxruntime" 2>/dev/null; then
  tools/python/setup_venv.sh
fi
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); simd: $(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8|asimddp|asimd' /proc/cpuinfo | sort -u | xargs)"
bundles=("$@")
if [ ${#bundles[@]} -eq 0 ]; then
  bundles=(models/default models/emoji)
  for m in ViT-B-32 MobileCLIP2-S0; do
    if ! [ -f ".cache/bench/$m/bundle.toml" ]; then
      echo "compare: exporting $m with random weights into .cache/bench/$m" >&2
      "$py" tools/python/export_bundle.py open-clip --model "$m" --random-init --precisions int8 \
        --out ".cache/bench/$m" --force >/dev/null
    fi
    bundles+=(".cache/bench/$m")
  done
fi
# Release build: the debug profile keeps overflow checks and debug assertions,
# which slow the int8 ops in runtime/ about 2x and would skew the table.
cargo build -q --release -p clip-edge-tools
bin=target/release/clip-edge
for b in "${bundles[@]}"; do
  if grep -q 'precision = "int8"' "$b/bundle.toml" && ! grep -q 'precision = "int8-compute"' "$b/bundle.toml"; then
    echo "compare: adding the int8-compute form to $b (export_bundle.py requantise)" >&2
    "$py" tools/python/export_bundle.py requantise --bundle "$b" --clip-edge "$bin" >/dev/null
  fi
done
image=models/emoji/samples/dog-google.png
rows=$(mktemp)
for b in "${bundles[@]}"; do
  size=$(sed -n 's/^size = \([0-9]*\)/\1/p' "$b/bundle.toml")
  dyn=".cache/bench/dynamic/$(basename "$b").onnx"
  store=$(mktemp --suffix .store)
  "$bin" -q prompts random --bundle "$b" --labels a,b,c,d,e,f,g,h --out "$store" >/dev/null
  dynbundle=$(mktemp -d)
  # f32 + ONNX Runtime's dynamic int8 of it (made into $dyn on first use), manifest by clip_edge_tools.manifest.
  PYTHONPATH=tools/python "$py" -m clip_edge_tools.bench dynamic-int8 --bundle "$b" --dynamic "$dyn" \
    --out "$dynbundle"
  for threads in $threads_list; do
    for form in f32 int8 int8-compute int8-dynamic; do
      case $form in
        int8-dynamic) tb=$dynbundle p=int8 file=$dyn ortfile=$dyn ;;
        *) tb=$b p=$form
           file=$(sed -n "/^precision = \"$form\"/{n;s/^file = \"\(.*\)\"/\1/p}" "$b/bundle.toml"); file="$b/$file"
           ortfile=$file; [ "$form" = int8-compute ] && ortfile=$dyn ;;
      esac
      grep -q "precision = \"$p\"" "$tb/bundle.toml" || continue
      t=$("$bin" bench --bundle "$tb" --precision "$p" --threads "$threads" --frames "$frames" \
          --prompts "$store" --json "$image" 2>/dev/null) || t='{"error": "tract failed"}'
      o=$("$py" tools/bench/ort_bench.py --model "$ortfile" --size "$size" --threads "$threads" --frames "$frames" \
          2>/dev/null) || o='{"error": "onnxruntime failed"}'
      echo "{\"model\": \"$(basename "$b")\", \"form\": \"$form\", \"threads\": $threads, \"file\": \"$file\", \"tract\": $t, \"ort\": $o}" >> "$rows"
    done
  done
  rm -rf "$dynbundle" "$store"
done
"$py" - "$rows" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("inference median per frame (ms); cold start = load + first frame; ORT for int8-compute = its dynamic int8")
print("| model | form | threads | file | tract | ONNX Runtime | tract / ORT | tract vs its f32 | tract cold start | tract peak RSS |")
print("|---|---|---|---|---|---|---|---|---|---|")
f32 = {(r["model"], r["threads"]): r["tract"].get("infer_ms_median") for r in rows if r["form"] == "f32"}
for r in rows:
    size = f"{os.path.getsize(r['file']) / 1e6:.1f} MB"
    t, o = r["tract"], r["ort"]
    tm, om = t.get("infer_ms_median"), o.get("infer_ms_median")
    ratio = f"{tm / om:.2f}" if tm and om else "-"
    base = f32.get((r["model"], r["threads"]))
    speed = f"{base / tm:.2f}x" if tm and base else "-"
    tcell = f"{tm:.2f}" if tm else t.get("error", "-")
    ocell = f"{om:.2f}" if om else o.get("error", "-")
    cold = f"{t['cold_start_ms']:.0f} ms" if "cold_start_ms" in t else "-"
    rss = f"{t['peak_rss_mb']:.0f} MB" if t.get("peak_rss_mb") else "-"
    print(f"| {r['model']} | {r['form']} | {r['threads']} | {size} | {tcell} | {ocell} | {ratio} | {speed} | {cold} | {rss} |")
PY
rm -f "$rows"

#!/usr/bin/env bash
# Documented check of tools/python/export_bundle.py (needs the Python venv, so
# it is not part of CI; tests/tests/architectures.rs covers the tract side there).
# Exports each verified architecture with random weights, a Hugging Face CLIP
# folder made on the spot, and the refusals. Usage:
#   tools/python/check_exports.sh [--full]     (--full: real sizes, slow; default: --reduce)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py="$root/.venv/bin/python"
tool="$root/tools/python/export_bundle.py"
# The snippets below import the clip_edge_tools package.
export PYTHONPATH="$root/tools/python${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
reduce=--reduce
[ "${1:-}" = --full ] && reduce=
fail() { echo "FAIL: $*" >&2; exit 1; }

for m in ViT-B-32 MobileCLIP2-S0 ViT-S-16; do
  "$py" "$tool" open-clip --model "$m" --random-init $reduce --out "$work/$m" > "$work/$m.json" 2> "$work/$m.log" \
    || { cat "$work/$m.log"; fail "$m export"; }
  "$py" - "$work/$m.json" "$m" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
forms = ", ".join(f"{k}: {'kept' if v.get('kept', True) else 'dropped'}" for k, v in r["forms"].items())
print(f"ok {sys.argv[2]}: f32 tract vs ORT cos {r['forms']['f32']['tract_vs_onnxruntime']['cosine_min']:.7f}; {forms}")
PY
done

"$py" - "$work/hf" <<'PY'
import sys, pathlib, json
from clip_edge_tools import tokenizer as clip_tokenizer
from transformers import CLIPConfig, CLIPModel
out = pathlib.Path(sys.argv[1])
cfg = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  max_position_embeddings=77, vocab_size=49408, eos_token_id=49407),
                 vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=224, patch_size=32), projection_dim=24)
CLIPModel(cfg).save_pretrained(out)
clip_tokenizer.build().save(str(out / "tokenizer.json"))
(out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer", "bos_token": "<start_of_text>",
    "eos_token": "<end_of_text>", "pad_token": "<end_of_text>", "unk_token": "<end_of_text>", "model_max_length": 77}))
(out / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
    "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
PY
(cd "$root" && "$py" "$tool" hf --folder "$work/hf" --out "$work/hf-bundle" > "$work/hf.json" 2> "$work/hf.log") \
  || { cat "$work/hf.log"; fail "hf export"; }
echo "ok Hugging Face folder: $(grep -c . "$work/hf.json") lines of report"

fx="$root/tests/data/vit_tiny"
"$py" -c "import pathlib as p; from clip_edge_tools.export.quantise import quantise_int8_dynamic as d, \
quantise_int8_weights as w; d(p.Path('$fx/image_encoder_f32.onnx'), p.Path('$work/tiny_int8.onnx')); \
w(p.Path('$fx/image_encoder_f32.onnx'), p.Path('$work/tiny_w8.onnx'))" 2> /dev/null
package() {  # INT8_FILE OUT [FLAGS...]
  local int8=$1 out=$2; shift 2
  "$py" "$tool" package --image-onnx "$fx/image_encoder_f32.onnx" --extra int8="$int8" \
    --text-onnx "$fx/text_encoder.onnx" --tokenizer "$fx/tokenizer.json" --size 224 \
    --mean 0.48145466 0.4578275 0.40821073 --std 0.26862954 0.26130258 0.27577711 --embed-dim 64 --logit-scale 14.29 \
    --name packaged --out "$out" "$@"
}
# A dynamic-int8 file has no int8-compute form.
package "$work/tiny_int8.onnx" "$work/packaged" --no-int8-compute 2> "$work/package.log" \
  || { cat "$work/package.log"; fail "package"; }
"$root/target/debug/clip-edge" -q embed --bundle "$work/packaged" --text "a photo of a cat." > /dev/null || fail "packaged text tower"
echo "ok package: $(ls "$work/packaged" | tr '\n' ' ')"
# A weight-only int8 file gets its int8-compute entry: the int8 file and its sha256.
package "$work/tiny_w8.onnx" "$work/packaged-w8" 2> "$work/package.log" || { cat "$work/package.log"; fail "package w8"; }
"$py" - "$work/packaged-w8/bundle.toml" <<'PY' || fail "package w8: int8-compute entry"
import sys, tomllib
enc = {e["precision"]: e for e in tomllib.load(open(sys.argv[1], "rb"))["image"]["encoder"]}
assert enc["int8-compute"]["file"] == enc["int8"]["file"] == "image_encoder_int8.onnx", enc
assert enc["int8-compute"]["sha256"] == enc["int8"]["sha256"], enc
PY
echo "ok package with weight-only int8: $(grep -c '^precision' "$work/packaged-w8/bundle.toml") encoder entries, int8-compute runs"

expect_refusal() {
  local what=$1; shift
  if "$py" "$tool" "$@" > /dev/null 2> "$work/err"; then fail "$what was accepted"; fi
  grep -q "^error: " "$work/err" || { cat "$work/err"; fail "$what: no clear error"; }
  [ ! -e "$work/refused" ] || fail "$what left $work/refused behind"
  echo "ok refused $what: $(grep '^error: ' "$work/err")"
}
expect_refusal "an unknown model" open-clip --model ViT-Q-99 --random-init --out "$work/refused"
mkdir -p "$work/noweights" && cp "$work/hf/config.json" "$work/noweights/"
expect_refusal "a folder without weights" hf --folder "$work/noweights" --out "$work/refused"
if package "$root/tests/data/arch/vit-b-32/image_encoder_int8.onnx" "$work/refused" --no-int8-compute 2> "$work/err"; then fail "a foreign int8 form was packaged"; fi
[ ! -e "$work/refused" ] || fail "refused package left files behind"
echo "ok refused an int8 form of another model: $(grep '^error: ' "$work/err")"
expect_refusal "a missing pretrained tag" open-clip --model ViT-B-32 --out "$work/refused"
echo "all export checks passed"

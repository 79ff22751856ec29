#!/usr/bin/env bash
# Rebuilds models/default as the placeholder bundle: the reduced CLIP test
# fixture (image and text towers with random weights, tests/data/vit_tiny) and
# a prompt store built from models/default/labels.toml by the real prompt
# builder. Replaced by the trained default model later.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/models/default"
mkdir -p "$out"
for f in image_encoder_f32.onnx text_encoder.onnx tokenizer.json; do cp "$root/tests/data/vit_tiny/$f" "$out/"; done
sed -e 's/^name = .*/name = "placeholder-vit-tiny-random"/' \
    -e 's/^description = .*/description = "PLACEHOLDER: the reduced CLIP test fixture with random weights; its prompt store is built by the real pipeline but its labels mean nothing."/' \
    -e 's/^# Written by .*/# Placeholder default bundle, written by tools\/scripts\/make_placeholder_default.sh./' \
    "$root/tests/data/vit_tiny/bundle.toml" > "$out/bundle.toml.tmp"
# The manifest names its default prompt store right after the fingerprint.
awk '{print} /^fingerprint = /{print "prompts = \"prompts.store\""}' "$out/bundle.toml.tmp" > "$out/bundle.toml"
rm "$out/bundle.toml.tmp"
cargo run -q --manifest-path "$root/Cargo.toml" -p clip-edge-tools --bin clip-edge -- \
  prompts build --bundle "$out" --labels "$out/labels.toml" --out "$out/prompts.store"

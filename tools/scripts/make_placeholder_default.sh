#!/usr/bin/env bash
# Rebuilds models/default as the placeholder bundle: the reduced ViT test
# fixture (random weights, tests/data/vit_tiny) plus a prompt store of seeded
# random unit vectors. Replaced by the trained default model later.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/models/default"
mkdir -p "$out"
for f in image_encoder_f32.onnx text_encoder.onnx tokenizer.json; do cp "$root/tests/data/vit_tiny/$f" "$out/"; done
sed -e 's/^name = .*/name = "placeholder-vit-tiny-random"/' \
    -e 's/^description = .*/description = "PLACEHOLDER: the reduced CLIP ViT test fixture with random weights and random prompt vectors. Its labels mean nothing."/' \
    -e 's/^# Written by .*/# Placeholder default bundle, written by tools\/scripts\/make_placeholder_default.sh./' \
    "$root/tests/data/vit_tiny/bundle.toml" > "$out/bundle.toml.tmp"
# The manifest names its default prompt store right after the fingerprint.
awk '{print} /^fingerprint = /{print "prompts = \"prompts.store\""}' "$out/bundle.toml.tmp" > "$out/bundle.toml"
rm "$out/bundle.toml.tmp"
cargo run -q --manifest-path "$root/Cargo.toml" -p clip-edge-tools --bin clip-edge -- \
  prompts random --bundle "$out" --seed 7 \
  --labels person,dog,cat,car,bicycle,bird,package --background "empty scene" \
  --out "$out/prompts.store"

#!/usr/bin/env bash
# Writes the committed seed corpora of tools/fuzz/corpus/: the runtime's
# fixtures make the stores, camera frames and image files
# (runtime/src/fuzz_seeds.rs, which also checks them in `cargo test`); the
# text formats are copies of the repository's own files.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
c=tools/fuzz/corpus
CLIP_EDGE_WRITE_SEEDS=1 cargo test --locked -q -p clip-edge-runtime --lib fuzz_seeds
CLIP_EDGE_WRITE_SEEDS=1 cargo test --locked -q -p clip-edge-board --lib fuzz_seeds
mkdir -p $c/store $c/bundle_manifest $c/board_config $c/labels $c/image_file
cp models/emoji/prompts.store $c/store/default.store
for m in models/*/; do
  [ -f "$m/bundle.toml" ] && cp "$m/bundle.toml" "$c/bundle_manifest/$(basename "$m").toml"
done
cp tests/data/vit_tiny/bundle.toml $c/bundle_manifest/vit_tiny.toml 2>/dev/null || true
cp board/examples/*.toml tools/vboard/board.toml $c/board_config/
for m in models/*/labels.toml; do cp "$m" "$c/labels/$(basename "$(dirname "$m")").toml"; done
cp tools/tests/fixtures/*.toml $c/labels/
cp tests/data/images/grey_50x77.png tests/data/images/small_rgba_31x17.png $c/image_file/
find $c -type f | sort | while read -r f; do printf '%8d %s\n' "$(stat -c %s "$f")" "$f"; done

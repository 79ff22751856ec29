#!/usr/bin/env bash
# Fetches the photo model's validation photographs (issue 22; MODEL_CARD.md
# "The empty-scene class") into .cache/validation (gitignored): three Debian
# bookworm packages, downloaded with `apt-get download` (no root needed) and
# unpacked with dpkg-deb. Nothing from them is shipped or committed; they are
# read to choose the empty-scene gate and are never the test set.
#   tuxpaint-stamps-default  photographs of animals, vehicles, things (GPL-2+)
#   opencv-doc               OpenCV's sample photographs (examples/data)
#   gimp-data                GIMP's photographic texture patterns (GPL-3+)
# Versions are pinned; CLIP_EDGE_VALIDATION_VERSIONS=any takes the candidate.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache/validation"
mkdir -p "$cache"
cd "$cache"
for spec in tuxpaint-stamps-default=2022.06.04-1 opencv-doc=4.6.0+dfsg-12 gimp-data=2.10.34-1+deb12u10; do
  name=${spec%%=*}
  if [ -d "$name" ]; then
    echo "have $name"
    continue
  fi
  if [ "${CLIP_EDGE_VALIDATION_VERSIONS:-}" = any ]; then
    spec=$name
  fi
  rm -f "$name"_*.deb
  if ! apt-get download "$spec" >/dev/null; then
    echo "fetch_validation: apt-get download $spec failed (is a Debian bookworm apt source configured? run 'apt-get update'; CLIP_EDGE_VALIDATION_VERSIONS=any takes whatever version apt offers)" >&2
    exit 1
  fi
  rm -rf "$name.partial"
  mkdir "$name.partial"
  dpkg-deb -x "$name"_*.deb "$name.partial"
  rm -f "$name"_*.deb
  mv "$name.partial" "$name"
  echo "fetched $spec"
done

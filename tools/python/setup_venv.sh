#!/usr/bin/env bash
# Creates .venv at the repository root with the pinned host-side Python tools.
# torch pulls about 3 GB of wheels; only the fixture/export scripts need it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python3 -m venv "$root/.venv"
"$root/.venv/bin/pip" install --quiet --upgrade pip
"$root/.venv/bin/pip" install --quiet -r "$root/tools/python/requirements.txt"
echo "ready: $root/.venv/bin/python"

#!/usr/bin/env bash
# Event timing breakdown of clip-edge-board on a bundle: 100 simulated triggers
# (every 50 ms) with a replay camera over a folder of frames; prints the median
# and p95 of each timing_ms field.
# Usage: tools/bench/board_events.sh [BUNDLE_DIR] [FRAMES_DIR] [PROFILE]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle=$(realpath "${1:-$root/models/emoji}")
frames=$(realpath "${2:-$root/tests/data/images}")
profile=${3:-release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flag=$([ "$profile" = release ] && echo --release || true)
cargo build -q $flag --manifest-path "$root/Cargo.toml" -p clip-edge-board
cat > "$work/config.toml" <<TOML
[model]
bundle = "$bundle"
[trigger]
source = "interval"
period_ms = 50
count = 100
[camera]
source = "replay"
folder = "$frames"
TOML
RUST_LOG=warn "$root/target/$([ "$profile" = release ] && echo release || echo debug)/clip-edge-board" \
  run --config "$work/config.toml" > "$work/events.jsonl"
python3 - "$work/events.jsonl" <<'PY'
import json, statistics, sys
events = [json.loads(l) for l in open(sys.argv[1]) if '"type":"event"' in l]
print(f"{len(events)} events")
for k in ["trigger_to_frame", "decode", "preprocess", "infer", "decide", "total"]:
    v = sorted(e["timing_ms"][k] for e in events)
    print(f"  {k:<17} median {statistics.median(v):7.3f} ms   p95 {v[int(0.95 * (len(v) - 1))]:7.3f} ms")
PY

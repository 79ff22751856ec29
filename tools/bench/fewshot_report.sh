#!/usr/bin/env bash
# The few-shot figures of docs/fewshot.md: `clip-edge eval --shots 0,1,2,4,8`
# on the three test sets of tools/python/fewshot_data.py, every class enrolled
# and only the worst fifth, each as a table (DATA/results/*.text) and as JSON
# merged into OUT; then the held-out set among all concepts (needs
# .cache/eval/prompts_all.store from tools/python/eval_default.py) and with the
# int8 image encoder, and the seen tuning set.
# Usage: tools/bench/fewshot_report.sh [BUNDLE] [DATA] [OUT]
#   defaults: models/emoji .cache/fewshot models/emoji/fewshot_report.json
# Run tools/python/fewshot_data.py --bundle BUNDLE --out DATA first.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
# Relative defaults keep the report free of this machine's paths.
cd "$root"
bundle=${1:-models/emoji}
data=${2:-.cache/fewshot}
out=${3:-$bundle/fewshot_report.json}
draws=${DRAWS:-5}
for s in heldout openmoji-heldout openmoji-seen; do
  [ -d "$data/$s" ] && [ -f "$data/prompts_$s.store" ] \
    || { echo "fewshot_report.sh: no $data/$s or its store; run tools/python/fewshot_data.py --out $data" >&2; exit 1; }
done
# The dev profile builds the runtime and every dependency at opt-level 3.
cargo build -q -p clip-edge-tools --bin clip-edge
bin=target/debug/clip-edge
mkdir -p "$data/results"
# One evaluation per view (every image is embedded once); its table is printed
# from the JSON and kept beside it.
table='import json, sys
d = json.load(open(sys.argv[1]))
print("%d classes in %s, %d candidates; %d draws" % (d["classes"], d["data"], d["candidates"], d["draws"]))
print("shots  top-1 (mean ± sd)  top-5 (mean ± sd)  worst  others  score µs/frame")
for r in d["results"]:
    print("%5d  %6.1f ± %.1f       %6.1f ± %.1f      %5.1f  %6.1f  %8.1f" % (r["shots"], 100 * r["top1"],
          100 * r["top1_sd"], 100 * r["top5"], 100 * r["top5_sd"], 100 * r["worst_top1"],
          100 * r["others_top1"], r["score_us_median"]))
print("%d classes better, %d worse with the most shots than with none" % (d["classes_better"], d["classes_worse"]))
for kind in ("winners", "losers"):
    print(kind + ":")
    for m in d[kind]:
        print("  %-42s %5.1f%% -> %5.1f%%" % (m["class"], 100 * m["zero_shot"], 100 * m["few_shot"]))'
run() {
  local name=$1 set=$2
  shift 2
  echo "== $name" >&2
  "$bin" -q eval --bundle "$bundle" --data "$data/$set" --shots 0,1,2,4,8 --draws "$draws" --json "$@" \
    >"$data/results/$name.json"
  python3 -c "$table" "$data/results/$name.json" | tee "$data/results/$name.text" >&2
}
names=()
for s in heldout openmoji-heldout openmoji-seen; do
  for f in 1 0.2; do
    run "$s-f$f" "$s" --prompts "$data/prompts_$s.store" --enrol-fraction "$f"
    names+=("$s-f$f")
  done
done
if [ -f .cache/eval/prompts_all.store ]; then
  run heldout-among-all heldout --prompts .cache/eval/prompts_all.store
else
  echo "skipped the held-out set among all concepts: no .cache/eval/prompts_all.store" >&2
fi
run heldout-int8 heldout --prompts "$data/prompts_heldout.store" --precision int8
if [ -d "$data/tune" ]; then
  run tune tune --prompts "$data/prompts_tune.store"
fi
python3 - "$data/results" "$out" "${names[@]}" <<'EOF'
import json, pathlib, sys
folder, out, names = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
report = {n: json.loads((folder / f"{n}.json").read_text()) for n in names}
pathlib.Path(out).write_text(json.dumps(report, indent=1) + "\n")
print(f"wrote {out} ({', '.join(names)})", file=sys.stderr)
EOF

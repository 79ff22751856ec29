#!/usr/bin/env bash
# Compares a bundle's image-encoder forms in tract: file size, cold start,
# inference median and peak RSS, medians of 3 interleaved rounds of
# `clip-edge bench` (200 frames after 5 warm-up, one thread).
#   tools/bench/quantised.sh [BUNDLE [EXTRA_BUNDLE:PRECISION ...]]
# e.g. tools/bench/quantised.sh models/emoji /tmp/old-default:int8
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:-models/emoji}
shift || true
cargo build -q -p clip-edge-tools
image=models/emoji/samples/dog-google.png
forms=()
for p in f32 f16 int8; do
  grep -q "precision = \"$p\"" "$bundle/bundle.toml" && forms+=("$bundle:$p")
done
forms+=("$@")
out=$(mktemp)
for round in 1 2 3; do
  for form in "${forms[@]}"; do
    b=${form%:*}; p=${form##*:}
    target/debug/clip-edge bench --bundle "$b" --precision "$p" --frames 200 --json "$image" \
      | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'form': '$form', **d}))" >> "$out"
  done
done
python3 - "$out" <<'PY'
import json, re, statistics, sys, pathlib
rows = [json.loads(l) for l in open(sys.argv[1])]
forms = list(dict.fromkeys(r["form"] for r in rows))
def size(form):
    b, p = form.rsplit(":", 1)
    m = re.search(r'precision = "%s"\nfile = "([^"]+)"' % p, (pathlib.Path(b) / "bundle.toml").read_text())
    return (pathlib.Path(b) / m.group(1)).stat().st_size
ref = statistics.median(r["infer_ms_median"] for r in rows if r["form"] == forms[0])
print("| form | file | cold start | parse | optimise | infer median | vs first | peak RSS |")
print("|---|---|---|---|---|---|---|---|")
for f in forms:
    rs = [r for r in rows if r["form"] == f]
    med = lambda k: statistics.median(k(r) for r in rs)
    infer = med(lambda r: r["infer_ms_median"])
    print(f"| {f} | {size(f) / 1e6:.2f} MB | {med(lambda r: r['cold_start_ms']):.1f} ms | "
          f"{med(lambda r: r['load_ms']['parse']):.1f} ms | {med(lambda r: r['load_ms']['optimise']):.1f} ms | "
          f"{infer:.2f} ms | {infer / ref:.2f} | {med(lambda r: r['peak_rss_mb']):.0f} MB |")
PY
rm -f "$out"

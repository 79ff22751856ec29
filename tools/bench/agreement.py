#!/usr/bin/env python3
"""Top-1 agreement of a bundle's quantised image encoder with its f32 one: the
same label or not, over camera-like frames of seen concepts classified among
all 1,635 concepts. Needs the sets of tools/python/eval_default.py (.cache/eval).

  python3 tools/bench/agreement.py [BUNDLE] [STORE] [PRECISION]     # PRECISION: int8 (default) or int8-compute
"""
import glob
import json
import subprocess
import sys

bundle = sys.argv[1] if len(sys.argv) > 1 else "models/emoji"
store = sys.argv[2] if len(sys.argv) > 2 else ".cache/eval/prompts_all.store"
form = sys.argv[3] if len(sys.argv) > 3 else "int8"
imgs = sorted(glob.glob(".cache/eval/seen-camera/draw0/*/*.png"))[::2][:700]
if not imgs:
    sys.exit("no frames in .cache/eval/seen-camera/draw0: run tools/python/eval_default.py first")
res = {}
for p in ("f32", form):
    cmd = ["target/debug/clip-edge", "classify", "--bundle", bundle, "--precision", p, "--prompts", store,
           "--top", "1", "--json", *imgs]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    res[p] = {d["image"]: d["top"][0]["label"] for d in map(json.loads, out.splitlines()) if "top" in d}
keys = sorted(set(res["f32"]) & set(res[form]))
same = sum(res["f32"][k] == res[form][k] for k in keys)
print(f"{bundle}: {form} and f32 agree on {same} of {len(keys)} frames ({100 * same / len(keys):.1f}%)")

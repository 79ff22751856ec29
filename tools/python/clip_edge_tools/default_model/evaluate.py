"""Evaluate a bundle trained by train_default.py with `clip-edge eval` (Rust,
through tract: the path the device uses), on freshly generated test sets:

  seen-camera     seen concepts, training styles, camera-like augmentation (new seeds)
  seen-plain      seen concepts on plain white/black/grey backgrounds, mild augmentation
  heldout         held-out concepts (never trained), camera-like; scored among the
                  held-out concepts only and among all concepts
  openmoji-*      the OpenMoji style, never trained on: seen and held-out concepts

"among all" uses the bundle's seen/unseen calibration ([text.calibration], chosen
by calibrate_default.py on seen concepts only); "among all-uncalibrated" is the
same store built with --no-calibration, for reference.

Seen-concept sets are drawn --draws times, held-out sets --small-draws times,
each with its own seed (1000 + 100 x draw + set index); figures are the mean over
draws with its standard error (see stats()).

  .venv/bin/python tools/python/eval_default.py --bundle models/emoji --out models/emoji/eval_report.json
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import sys
import time

from ..binary import ClipEdge
from ..data import emoji as emoji_data
from ..data.labels import EVAL_TEMPLATES, labels_toml
from ..log import logger
from ..paths import CACHE, DEBUG_BINARY, EMOJI_BUNDLE

log = logger("eval")

def make_set(folder: pathlib.Path, concepts: list[dict], icons, have, seed: int, kind: str | None,
             strength: float) -> int:
    import torch

    aug = emoji_data.Augmenter(seed=seed)
    idx = [i for i in range(len(concepts)) if have[i]]
    frames = aug(emoji_data.to_tensor(icons[idx]), kind=kind, strength=strength)
    if folder.exists():
        shutil.rmtree(folder)
    for j, i in enumerate(idx):
        emoji_data.save_frames(frames[j:j + 1], folder / concepts[i]["name"], [f"{seed}"])
    del torch
    return len(idx)


def load_inputs(clip_edge: str, bundle: str):
    """(concepts, seen ones, held-out ones, clip-edge binary, bundle folder,
    held-out names), or None after
    saying on stderr what is missing (the scripts then exit 2)."""
    concepts = emoji_data.load_concepts_or_report()
    if concepts is None:
        return None
    binary = ClipEdge(clip_edge)
    if not binary.path.is_file():
        print(f"error: {binary}: missing; build it with cargo build -p clip-edge-tools", file=sys.stderr)
        return None
    folder = pathlib.Path(bundle)
    held_file = folder / "heldout_concepts.txt"
    held = set(held_file.read_text().split("\n")) - {""} if held_file.is_file() else emoji_data.heldout_split(concepts)
    if held != emoji_data.heldout_split(concepts):
        log("warning: the bundle's held-out list differs from emoji_data.heldout_split")
    seen = [c for c in concepts if c["name"] not in held]
    return concepts, seen, [c for c in concepts if c["name"] in held], binary, folder, held


def stats(values: list[float], n: int) -> dict:
    """Mean over draws and its standard error: the larger of the spread between
    draws (sd / sqrt(draws)) and the binomial error of all frames pooled, so a
    few draws that happen to agree do not understate it."""
    m = sum(values) / len(values)
    se = math.sqrt(max(m * (1 - m), 0) / max(n * len(values), 1))
    if len(values) > 1:
        sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
        se = max(se, sd / math.sqrt(len(values)))
    return {"mean": round(m, 4), "se": round(se, 4), "draws": [round(v, 4) for v in values]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eval_default.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(EMOJI_BUNDLE))
    p.add_argument("--work", default=str(CACHE / "eval"))
    p.add_argument("--draws", type=int, default=3, help="draws of the seen-concept sets (1,468 frames each)")
    p.add_argument("--small-draws", type=int, default=10, help="draws of the held-out sets (167 frames each)")
    p.add_argument("--reuse-stores", action="store_true",
                   help="keep candidate stores already in --work (only if the bundle did not change)")
    p.add_argument("--seed", type=int, default=1000, help="first augmentation seed (training used 0)")
    p.add_argument("--precisions", default="f32,int8")
    p.add_argument("--clip-edge", default=str(DEBUG_BINARY),
                   help="clip-edge binary (dependencies are optimised in the dev profile too)")
    p.add_argument("--out", help="write the report JSON here")
    args = p.parse_args(argv)
    inputs = load_inputs(args.clip_edge, args.bundle)
    if inputs is None:
        return 2
    concepts, seen_c, held_c, binary, bundle, _ = inputs
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    stores = {}
    for key, cs, kw in (("all", concepts, False), ("all-uncalibrated", concepts, False),
                        ("heldout", held_c, False), ("heldout-keywords", held_c, True)):
        names = [c["name"] for c in cs]
        lab = work / f"labels_{key}.toml"
        lab.write_text(labels_toml(cs, kw))
        store = work / f"prompts_{key}.store"
        stores[key] = store
        if args.reuse_stores and store.is_file():
            log(f"reusing {store}")
            continue
        log(f"building the {key} prompt store ({len(names)} classes x {len(EVAL_TEMPLATES)} templates)")
        binary.prompts_build(bundle, lab, store, calibration=not key.endswith("-uncalibrated"))

    styles = {}
    for s in emoji_data.STYLES:
        styles[s] = {"seen": emoji_data.load_icons(seen_c, s), "held": emoji_data.load_icons(held_c, s)}
    om_seen = emoji_data.render_openmoji(seen_c)
    om_held = emoji_data.render_openmoji(held_c)

    sets = []  # (name, concepts, icons, have, kind, strength, candidate stores)
    for d in range(max(args.draws, args.small_draws)):
        s = emoji_data.STYLES[d % 2]
        if d < args.draws:
            sets.append(("seen-camera", d, seen_c, *styles[s]["seen"], None, 1.0, ["all", "all-uncalibrated"]))
            sets.append(("seen-plain", d, seen_c, *styles[s]["seen"], "plain", 0.5, ["all", "all-uncalibrated"]))
            sets.append(("openmoji-seen", d, seen_c, *om_seen, None, 1.0, ["all"]))
        if d < args.small_draws:
            sets.append(("heldout", d, held_c, *styles[s]["held"], None, 1.0,
                         ["heldout", "all", "all-uncalibrated", "heldout-keywords"]))
            sets.append(("openmoji-heldout", d, held_c, *om_held, None, 1.0, ["heldout", "all"]))
    set_index = {"seen-camera": 0, "seen-plain": 1, "heldout": 2, "openmoji-seen": 3, "openmoji-heldout": 4}
    results: dict = {}
    for name, d, cs, icons, have, kind, strength, among in sets:
        seed = args.seed + 100 * d + set_index[name]
        folder = work / name / f"draw{d}"
        n = make_set(folder, cs, icons, have, seed, kind, strength)
        for precision in args.precisions.split(","):
            for key in among:
                r = binary.eval(bundle, folder, stores[key], precision)
                tag = f"{name}|among-{key}|{precision}"
                e = results.setdefault(tag, {"set": name, "among": key, "precision": precision, "n": r["n"],
                                             "candidates": r["candidates"], "top1": [], "top5": [],
                                             "unreadable": 0, "seeds": []})
                e["top1"].append(r["top1"])
                e["top5"].append(r["top5"])
                e["unreadable"] += r["unreadable"]
                e["seeds"].append(seed)
                log(f"{tag} draw {d}: n {r['n']} top-1 {r['top1']:.3f} top-5 {r['top5']:.3f}")
        del n
    report = {"bundle": str(bundle), "draws": args.draws, "small_draws": args.small_draws, "templates": EVAL_TEMPLATES,
              "seconds": round(time.time() - started, 1), "results": []}
    for e in results.values():
        report["results"].append({**{k: v for k, v in e.items() if k not in ("top1", "top5")},
                                  "top1": stats(e["top1"], e["n"]), "top5": stats(e["top5"], e["n"])})
    text = json.dumps(report, indent=1)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print("| set | candidates | precision | n per draw | top-1 | top-5 |")
    print("|---|---|---|---|---|---|")
    for r in report["results"]:
        print(f"| {r['set']} | {r['among']} ({r['candidates']}) | {r['precision']} | {r['n']} | "
              f"{100 * r['top1']['mean']:.1f} ± {100 * r['top1']['se']:.1f} | "
              f"{100 * r['top5']['mean']:.1f} ± {100 * r['top5']['se']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

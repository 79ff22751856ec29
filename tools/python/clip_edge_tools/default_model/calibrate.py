"""Choose the default model's seen/unseen calibration from seen concepts only,
and write it into the bundle.

A contrastive model scores the concepts it was trained on higher than concepts
it only knows by name, so among all concepts a frame of a held-out concept is
usually claimed by a trained one. `[text.calibration]` in bundle.toml gives
every class whose name is not a training concept a bonus on its cosine
similarity (calibrated stacking, Chao et al. 2016; see docs/bundle.md).

The bonus is chosen without looking at a single held-out image: on fresh
camera-like frames of the *seen* concepts (seeds distinct from training and
from eval_default.py), scored among all concept names, it is the largest bonus
on the grid that costs seen top-1 at most --max-seen-drop. Frames are embedded
with `clip-edge embed` (tract, the device's path); the class rows are read
from a store built by `clip-edge prompts build --no-calibration`. The held-out
figures are then measured by eval_default.py.

  .venv/bin/python tools/python/calibrate_default.py --bundle models/emoji --write

With --write: writes seen_names.txt and [text.calibration] into the bundle,
rebuilds the bundle's demo prompt store from labels.toml, and saves
calibration_report.json. Needs the clip-edge binary (cargo build -p clip-edge-tools).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import struct
import sys
import time

from .. import manifest
from ..binary import ClipEdge
from ..data import emoji as emoji_data
from ..data.labels import labels_toml
from ..export.verify import unit
from ..log import logger
from ..paths import CACHE, DEBUG_BINARY, EMOJI_BUNDLE
from .evaluate import load_inputs, make_set

log = logger("calibrate")


def normalise(name: str) -> str:
    """Same as runtime::bundle::Calibration::normalise."""
    return " ".join(name.lower().replace("_", " ").split())


def seen_names(seen: list[dict], held: list[dict]) -> list[str]:
    """Every seen concept's name, then its other captions (short names, OpenMoji
    annotation) unless they also name a held-out concept (held-out "cat face"
    has the short name "cat", which stays a seen name)."""
    out = list(dict.fromkeys(normalise(c["name"]) for c in seen))
    taken = set(out) | {normalise(c) for h in held for c in [h["name"]] + h["captions"]}
    for c in seen:
        for cap in c["captions"]:
            n = normalise(cap)
            if n and n not in taken:
                out.append(n)
                taken.add(n)
    return out


def read_store(path: pathlib.Path):
    """Labels and unit rows of a text-only prompt store (docs/prompt-store.md)."""
    import numpy as np

    b = path.read_bytes()
    element = b[10]
    dim, count = struct.unpack_from("<II", b, 12)
    emb, = struct.unpack_from("<Q", b, 64)
    rows, = struct.unpack_from("<I", b, 80)
    if rows != count:
        raise SystemExit(f"error: {path}: has image-only entries; build it from a labels file")
    o, labels = 128, []
    for _ in range(count):
        n, = struct.unpack_from("<H", b, o + 1)
        labels.append(b[o + 3:o + 3 + n].decode())
        o += 3 + n
    if element == 0:
        e = np.frombuffer(b, "<f4", rows * dim, emb).reshape(rows, dim)
    elif element == 1:
        e = np.frombuffer(b, "<f2", rows * dim, emb).astype(np.float32).reshape(rows, dim)
    else:
        s = np.frombuffer(b, "<f4", rows, emb)
        e = np.frombuffer(b, np.int8, rows * dim, emb + 4 * rows).astype(np.float32).reshape(rows, dim) * s[:, None]
    return labels, unit(e)


def embed_folder(binary: ClipEdge, bundle: pathlib.Path, folder: pathlib.Path):
    """Unit image embeddings of every frame under folder/<class>/ through `clip-edge
    embed` (tract, the device's preprocessing), with their class names."""
    frames = [(f, cdir.name) for cdir in sorted(p for p in folder.iterdir() if p.is_dir())
              for f in sorted(cdir.iterdir())]
    z, err = binary.embed_images(bundle, "f32", [f for f, _ in frames])
    if err:
        raise SystemExit(f"error: clip-edge embed on {folder}: {err}")
    return unit(z), [name for _, name in frames]


def write_calibration(bundle: pathlib.Path, bonus: float, names_file: str) -> None:
    """Replaces (or adds) the [text.calibration] table of the bundle's manifest."""
    doc = manifest.load(bundle)
    manifest.set_calibration(doc, bonus, names_file)
    manifest.save(bundle, doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calibrate_default.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(EMOJI_BUNDLE))
    p.add_argument("--work", default=str(CACHE / "calibrate"))
    p.add_argument("--seed", type=int, default=500, help="first augmentation seed (training used 0, eval 1000+)")
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--max-seen-drop", type=float, default=0.02,
                   help="largest loss of seen top-1 (fraction) the bonus may cost")
    p.add_argument("--step", type=float, default=0.0025, help="grid step of the bonus")
    p.add_argument("--max-bonus", type=float, default=0.1)
    p.add_argument("--clip-edge", default=str(DEBUG_BINARY))
    p.add_argument("--write", action="store_true", help="write the result into the bundle")
    args = p.parse_args(argv)
    import numpy as np

    inputs = load_inputs(args.clip_edge, args.bundle)
    if inputs is None:
        return 2
    concepts, seen_c, held_c, binary, bundle, held = inputs
    names = seen_names(seen_c, held_c)
    name_set = set(names)
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    labels = work / "labels_all.toml"
    labels.write_text(labels_toml(concepts, False))
    store = work / "prompts_all_uncalibrated.store"
    log(f"building the all-concepts prompt store without calibration ({len(concepts)} classes)")
    binary.prompts_build(bundle, labels, store, calibration=False)
    class_names, text = read_store(store)
    unseen = np.array([normalise(n) not in name_set for n in class_names])
    log(f"{int(unseen.sum())} of {len(class_names)} classes are not training concepts by name")
    if {class_names[i] for i in np.flatnonzero(unseen)} != held:
        log("warning: the classes outside seen_names are not exactly the held-out concepts")
    index = {n: i for i, n in enumerate(class_names)}

    sims, truth, seeds = [], [], []
    for d in range(args.draws):
        style = emoji_data.STYLES[d % 2]
        icons, have = emoji_data.load_icons(seen_c, style)
        seed = args.seed + d
        folder = work / "seen-camera" / f"draw{d}"
        n = make_set(folder, seen_c, icons, have, seed, None, 1.0)
        z, ys = embed_folder(binary, bundle, folder)
        sims.append(z @ text.T)
        truth.append(np.array([index[y] for y in ys]))
        seeds.append(seed)
        log(f"draw {d}: {n} seen-concept frames ({style}, seed {seed})")

    def top1(bonus: float) -> float:
        accs = [float(np.mean(np.argmax(s + bonus * unseen, axis=1) == t)) for s, t in zip(sims, truth)]
        return sum(accs) / len(accs)

    base = top1(0.0)
    grid = [round(i * args.step, 6) for i in range(round(args.max_bonus / args.step) + 1)]
    table = [{"bonus": b, "seen_top1": round(top1(b), 4)} for b in grid]
    chosen = max(r["bonus"] for r in table if base - r["seen_top1"] <= args.max_seen_drop + 1e-9)
    for r in table:
        mark = "  <- chosen" if r["bonus"] == chosen else ""
        print(f"bonus {r['bonus']:.4f}: seen top-1 among all {100 * r['seen_top1']:.1f}%{mark}")
    report = {"bundle": str(bundle), "rule": f"largest bonus on the grid with seen top-1 loss <= {args.max_seen_drop}",
              "unseen_bonus": chosen, "seen_top1_uncalibrated": round(base, 4),
              "seen_top1_calibrated": round(top1(chosen), 4), "frames_per_draw": [len(t) for t in truth],
              "seeds": seeds, "candidates": len(class_names), "unseen_candidates": int(unseen.sum()),
              "seen_names": len(names), "grid": table, "seconds": round(time.time() - started, 1)}
    print(json.dumps({k: v for k, v in report.items() if k != "grid"}))
    if args.write:
        (bundle / "seen_names.txt").write_text("\n".join(names) + "\n")
        write_calibration(bundle, chosen, "seen_names.txt")
        (bundle / "calibration_report.json").write_text(json.dumps(report, indent=1) + "\n")
        demo = bundle / "labels.toml"
        if demo.is_file():
            binary.prompts_build(bundle, demo, bundle / "prompts.store")
        log(f"wrote unseen_bonus = {chosen} and seen_names.txt ({len(names)} names) into {bundle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

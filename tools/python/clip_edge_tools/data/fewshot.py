"""Few-shot test sets for `clip-edge eval --shots`: several camera-like frames
per concept, so that shots and test images can be disjoint.

  heldout           held-out concepts (never trained), Google/Twitter styles alternating
  openmoji-heldout  held-out concepts in the OpenMoji style (style and concept unseen)
  openmoji-seen     a seeded sample of seen concepts in the OpenMoji style
  tune              a seeded sample of seen concepts, Google/Twitter: for choosing
                    --shot-weight / --shot-sharpness, kept apart from the sets above

Each set is a folder of class subfolders with --frames frames each, plus the
prompt store of its class names (prompts.store, built with the bundle's text
encoder under the evaluation templates).

  .venv/bin/python tools/python/fewshot_data.py --bundle models/emoji --out .cache/fewshot
  target/debug/clip-edge eval --bundle models/emoji --data .cache/fewshot/heldout \\
      --prompts .cache/fewshot/heldout/prompts.store --shots 0,1,2,4,8 --draws 5
"""

from __future__ import annotations

import argparse
import pathlib
import random
import shutil
import sys

from ..binary import ClipEdge
from ..log import logger
from ..paths import CACHE, DEBUG_BINARY, EMOJI_BUNDLE
from . import emoji as emoji_data
from .labels import labels_toml

log = logger("fewshot")


def make_set(folder: pathlib.Path, concepts: list[dict], styles: list, frames: int, seed: int) -> int:
    """`styles` is a list of (icons, have) pairs used in turn; a concept missing
    the turn's style takes the first style it has."""
    if folder.exists():
        shutil.rmtree(folder)
    written = 0
    for r in range(frames):
        icons, have = styles[r % len(styles)]
        fallback = [s for s in styles if s is not styles[r % len(styles)]]
        pick = icons.copy()
        ok = have.copy()
        for other_icons, other_have in fallback:
            take = ~ok & other_have
            pick[take] = other_icons[take]
            ok |= other_have
        idx = [i for i in range(len(concepts)) if ok[i]]
        out = emoji_data.Augmenter(seed=seed + r)(emoji_data.to_tensor(pick[idx]), kind=None, strength=1.0)
        for j, i in enumerate(idx):
            emoji_data.save_frames(out[j:j + 1], folder / concepts[i]["name"], [f"{r:02d}"])
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewshot_data.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(EMOJI_BUNDLE))
    p.add_argument("--out", default=str(CACHE / "fewshot"))
    p.add_argument("--frames", type=int, default=12, help="frames per concept")
    p.add_argument("--sample", type=int, default=167, help="seen concepts sampled for openmoji-seen and tune")
    p.add_argument("--seed", type=int, default=7000)
    p.add_argument("--clip-edge", default=str(DEBUG_BINARY))
    args = p.parse_args(argv)
    concepts = emoji_data.load_concepts_or_report()
    if concepts is None:
        return 2
    bundle = pathlib.Path(args.bundle)
    binary = ClipEdge(args.clip_edge)
    held = set((bundle / "heldout_concepts.txt").read_text().split("\n")) - {""}
    held_c = [c for c in concepts if c["name"] in held]
    seen_c = [c for c in concepts if c["name"] not in held]
    rng = random.Random(args.seed)
    om_seen_c = sorted(rng.sample([c for c in seen_c if c["openmoji"]], args.sample), key=lambda c: c["name"])
    tune_c = sorted(rng.sample([c for c in seen_c if c not in om_seen_c], args.sample), key=lambda c: c["name"])
    out = pathlib.Path(args.out)
    sets = [
        ("heldout", held_c, [emoji_data.load_icons(held_c, s) for s in emoji_data.STYLES]),
        ("openmoji-heldout", held_c, [emoji_data.render_openmoji(held_c)]),
        ("openmoji-seen", om_seen_c, [emoji_data.render_openmoji(om_seen_c)]),
        ("tune", tune_c, [emoji_data.load_icons(tune_c, s) for s in emoji_data.STYLES]),
    ]
    for k, (name, cs, styles) in enumerate(sets):
        folder = out / name
        n = make_set(folder, cs, styles, args.frames, args.seed + 1000 * k)
        labels = out / f"labels_{name}.toml"
        labels.write_text(labels_toml(cs, keywords=False))
        binary.prompts_build(bundle, labels, out / f"prompts_{name}.store")
        log(f"{name}: {n} frames of {len(cs)} concepts in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

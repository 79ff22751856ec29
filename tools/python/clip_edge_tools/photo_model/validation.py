"""The photo model's validation photographs: real frames, none of them among the
evaluation's 15 (build.photo_sources), read from three Debian packages that
`tools/python/fetch_validation.sh` unpacks into .cache/validation. They choose
the "empty scene" gate (build.choose_empty_scene) and nothing else; nothing
from them is shipped.

- objects: Tux Paint's photographic stamps (cut-outs, composited on white) and
  OpenCV's sample photographs, each named by its camera label;
- empty scenes: GIMP's photographic texture patterns (stone, wood, paper,
  bark, sky, ...), tiled into frames.

The score (fixed before any empty-scene class was measured on it) weighs the two
halves equally: the mean of the empty scenes' recall and the object labels'
mean per-label top-1, so the 34 birds do not outvote the one horse.
"""

from __future__ import annotations

import pathlib
import struct

from ..errors import DataMissing
from ..paths import CACHE

ROOT = CACHE / "validation"
TUX = "tuxpaint-stamps-default/usr/share/tuxpaint/stamps"
CV = "opencv-doc/usr/share/doc/opencv-doc/examples/data"
GIMP = "gimp-data/usr/share/gimp/2.0/patterns"
EMPTY = "empty scene"
SIZE = 320
LICENCES = {
    "tuxpaint-stamps-default": "GPL-2+ (Tux Paint stamps, Debian 2022.06.04-1)",
    "opencv-doc": "OpenCV sample data (opencv-doc, Debian 4.6.0+dfsg-12)",
    "gimp-data": "GPL-3+ (GIMP patterns, Debian 2.10.34-1+deb12u10)",
}

_BIRDS = ("adelaide-rosella blackbird chicken_profile crow crowned_crane cuckoo drake duck gander guineafowl "
          "helmeted_guineafowl hen heron_greatblue heron_greatblue_flying lark little-penguin magellanic_penguin "
          "magpie nandou ostrich owl peacock pelican penguin pigeon pink_flamingo quetzal rainbow-lorikeet rooster "
          "seagull silver-gull tucan turkey vulture").split()
_FLOWERS = ("adeenia anemone_red anthoorium appooppanthady bolsom chemparathi daffodil flower1 flower2 flower3 "
            "flower4 flower5 flower6 flower7 flower8 flower9 flower10 iris marigold pigface red-gazania rose "
            "whitestar-petunia yellow-flower").split()
# label -> files under .cache/validation. Left out on sight, before any measurement: drawings (the black cat
# silhouette, the clock face, the two boats), a damaged cut-out (the police car), the albino peahen (a white
# smear), and what no camera label names (post boxes, a tricycle, a dumper).
OBJECTS: dict[str, list[str]] = {
    "person": [f"{TUX}/people/fireman200b.png", f"{TUX}/people/fireman240a.png", f"{TUX}/space/spacewalk.png",
               f"{CV}/messi5.jpg", f"{CV}/basketball1.png"],
    "building": [f"{CV}/home.jpg", f"{CV}/building.jpg", f"{CV}/leuvenA.jpg"],
    "squirrel": [f"{TUX}/animals/mammals/rodents/squirrel.png", f"{CV}/squirrel_cls.jpg"],
    "dog": [f"{TUX}/animals/mammals/dogs/dog.png"],
    "fox": [f"{TUX}/animals/mammals/dogs/fox.png"],
    "horse": [f"{TUX}/animals/mammals/equines/horse.png"],
    "cow": [f"{TUX}/animals/mammals/bovines/cow.png", f"{TUX}/animals/mammals/bovines/cow_white.png"],
    "sheep": [f"{TUX}/animals/mammals/bovines/sheep.png", f"{TUX}/animals/mammals/bovines/sheep_lamb.png"],
    "car": [f"{TUX}/vehicles/auto/beetle.png", f"{TUX}/vehicles/auto/sedan.png",
            f"{TUX}/vehicles/auto/sportscar2.png"],
    "truck": [f"{TUX}/vehicles/auto/truck.png", f"{TUX}/vehicles/emergency/firetruck.png",
              f"{TUX}/vehicles/garbagetruck.png"],
    "bus": [f"{TUX}/vehicles/masstransit/green_korean_bus.png"],
    "airplane": [f"{TUX}/vehicles/flight/planes/747.png", f"{TUX}/military/vehicles/f22_raptor.png"],
    "cup": [f"{TUX}/household/dishes/mug.png"],
    "teddy bear": [f"{TUX}/animals/mammals/bears/toys/edward_bear.png"],
    "bird": [f"{TUX}/animals/birds/{n}.png" for n in _BIRDS],
    "flower": [f"{TUX}/plants/flowers/{n}.png" for n in _FLOWERS],
}
# GIMP's patterns that are photographs of a surface; its synthetic ones (Legacy/, lightning, starfield,
# electric, rain, Moonfoot, chocolate swirl) and the animal coats and coffee beans are left out.
EMPTY_SCENES = [f"{GIMP}/{p}.pat" for p in (
    "Animal/leather Fabric/burlap Paper/crinklepaper Paper/paper Plant/leaves Sky/sky Stone/Craters "
    "Stone/amethyst Stone/brick Stone/cracked Stone/granite1 Stone/ground1 Stone/marble1 Stone/marble2 "
    "Stone/marble3 Stone/pink_marble Stone/rock Stone/slate Stone/stone33 Stone/terra Water/ice Water/pool "
    "Wood/bark Wood/burlwood Wood/corkboard Wood/parque1 Wood/parque2 Wood/parque3 Wood/pine Wood/walnut "
    "Wood/wood1 Wood/wood2 Wood/wood3 Wood/wood4 Wood/wood5").split()]


def read_gimp_pattern(path: pathlib.Path):
    """A GIMP .pat file (header: size, version, width, height, bytes per pixel, "GPAT", name) as a PIL image."""
    from PIL import Image

    data = path.read_bytes()
    if len(data) < 24 or data[20:24] != b"GPAT":
        raise DataMissing(f"{path}: not a GIMP pattern (no GPAT magic)")
    header, _version, w, h, bpp = struct.unpack(">5I", data[:20])
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(bpp)
    if mode is None or w == 0 or h == 0 or header > len(data) or len(data) - header < w * h * bpp:
        raise DataMissing(f"{path}: truncated or unknown GIMP pattern ({w}x{h}, {bpp} bytes a pixel)")
    return Image.frombytes(mode, (w, h), data[header:header + w * h * bpp]).convert("RGB")


def _tile(im):
    """The pattern scaled up by a whole factor until at least SIZE/2 wide and high, tiled into SIZE x SIZE."""
    from PIL import Image

    k = max(1, -(-SIZE // 2 // min(im.size)))
    im = im.resize((im.size[0] * k, im.size[1] * k), Image.BICUBIC)
    out = Image.new("RGB", (SIZE, SIZE))
    for y in range(0, SIZE, im.size[1]):
        for x in range(0, SIZE, im.size[0]):
            out.paste(im, (x, y))
    return out


def _frame(src: pathlib.Path):
    """A photograph or a cut-out (composited on white, with a 10% margin), shortest side SIZE."""
    from PIL import Image

    im = Image.open(src)
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        m = max(im.size) // 10
        canvas = Image.new("RGBA", (im.size[0] + 2 * m, im.size[1] + 2 * m), (255, 255, 255, 255))
        canvas.alpha_composite(im, (m, m))
        im = canvas
    im = im.convert("RGB")
    s = SIZE / min(im.size)
    return im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC)


def missing(root: pathlib.Path = ROOT) -> pathlib.Path | None:
    """The first validation file that is not under `root`, or None."""
    return next((root / p for p in [*(f for fs in OBJECTS.values() for f in fs), *EMPTY_SCENES]
                 if not (root / p).is_file()), None)


def frames(folder: pathlib.Path, root: pathlib.Path = ROOT) -> dict[str, list[pathlib.Path]]:
    """Writes the validation frames under `folder` (JPEG, quality 90) and returns label -> frames."""
    if (gone := missing(root)) is not None:
        raise DataMissing(f"{gone}: missing (run tools/python/fetch_validation.sh)")
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[pathlib.Path]] = {}
    for label, files in [*OBJECTS.items(), (EMPTY, EMPTY_SCENES)]:
        for f in files:
            src = root / f
            im = _tile(read_gimp_pattern(src)) if src.suffix == ".pat" else _frame(src)
            dst = folder / f"{label.replace(' ', '_')}-{src.parent.name}-{src.stem}.jpg"
            im.save(dst, "JPEG", quality=90)
            out.setdefault(label, []).append(dst)
    return out


def score(report: dict) -> dict:
    """The balanced score of a `clip-edge eval --json` report over frames(): the mean of the empty scenes'
    recall and the object labels' mean per-label top-1."""
    per = {c["class"]: c["top1"] for c in report["per_class"] if c.get("n", 0) > 0}
    if EMPTY not in per or len(per) < 2:
        raise DataMissing(f"validation report lacks '{EMPTY}' or the object labels: {sorted(per)}")
    objects = [v for k, v in per.items() if k != EMPTY]
    obj = sum(objects) / len(objects)
    return {"score": 0.5 * per[EMPTY] + 0.5 * obj, "empty_recall": per[EMPTY], "object_mean_top1": obj,
            "top1": report.get("top1"), "per_label": per}

"""Emoji image-text data for the default model: concepts, captions, the
held-out split, icon images and camera-like augmentation.

Sources (fetched by tools/python/fetch_data.sh into .cache/emoji):
  emoji-datasource          names, short names, categories (MIT)
  emoji-datasource-google   Noto Emoji 64 px PNGs (Apache-2.0)
  emoji-datasource-twitter  Twemoji 64 px PNGs (CC-BY 4.0)
  openmoji                  CLDR keywords for captions; its SVGs are the
                            unseen-style test set, never used in training (CC BY-SA 4.0)
Apple's and Facebook's images are proprietary and never read.
"""

from __future__ import annotations

import io
import json
import math
import pathlib
import random
import sys
from collections import defaultdict

import numpy as np

from ..errors import DataMissing
from ..paths import CACHE as _CACHE

CACHE = _CACHE / "emoji"
VERSIONS = {"emoji-datasource": "16.0.0", "emoji-datasource-google": "16.0.0",
            "emoji-datasource-twitter": "16.0.0", "openmoji": "17.0.0"}
STYLES = ("google", "twitter")
SIZE = 64
HELDOUT_SEED = 20261129
HELDOUT_FRACTION = 0.10
EXCLUDED_CATEGORIES = ("Flags", "Component")
BACKGROUND_NAME = "empty background"
BACKGROUND_CAPTIONS = ["empty background", "nothing", "an empty scene", "a plain wall", "an empty room",
                       "a blank surface", "no object", "a blurry empty photo"]
NAME_TEMPLATES = ["{}", "{}", "an emoji of {}", "a picture of {}", "a photo of a {}.", "a blurry photo of a {}.",
                  "a close-up photo of a {}.", "a photo of the {}.", "an icon of {}"]


def package_dir(name: str) -> pathlib.Path:
    d = CACHE / f"{name}-{VERSIONS[name]}" / "package"
    if not d.is_dir():
        raise DataMissing(f"{d}: missing; run tools/python/fetch_data.sh (npm pack of {name}@{VERSIONS[name]})")
    return d


def _words(s: str) -> str:
    return " ".join(s.replace("_", " ").replace("-", " ").split()).lower()


def load_concepts() -> list[dict]:
    """One concept per base emoji (no flags, components or skin tones), with captions."""
    meta = json.loads((package_dir("emoji-datasource") / "emoji.json").read_text())
    om = json.loads((package_dir("openmoji") / "data" / "openmoji.json").read_text())
    om_by_hex = {e["hexcode"].upper(): e for e in om if not e.get("skintone")}
    concepts = []
    seen_names = set()
    for e in sorted(meta, key=lambda e: e["sort_order"]):
        if e["category"] in EXCLUDED_CATEGORIES:
            continue
        styles = [s for s in STYLES if e.get(f"has_img_{s}")]
        if not styles:
            continue
        name = (e.get("name") or e["short_name"]).lower()
        if name in seen_names:
            continue
        seen_names.add(name)
        unified = e["unified"].upper()
        o = om_by_hex.get(unified) or om_by_hex.get(unified.replace("-FE0F", "")) or \
            om_by_hex.get((e.get("non_qualified") or "").upper())
        captions = [name]
        for sn in e.get("short_names", []):
            w = _words(sn)
            if w not in captions:
                captions.append(w)
        keywords = []
        if o is not None:
            ann = o["annotation"].lower()
            if ann and ann not in captions:
                captions.append(ann)
            keywords = [k.strip().lower() for k in (o.get("tags") or "").split(",") if k.strip()]
            keywords += [k.strip().lower() for k in (o.get("openmoji_tags") or "").split(",") if k.strip()]
            keywords = list(dict.fromkeys(k for k in keywords if k not in captions))
        concepts.append({
            "name": name, "category": e["category"], "subcategory": e["subcategory"],
            "image": e["image"], "styles": styles, "captions": captions, "keywords": keywords,
            "openmoji": o["hexcode"] if o is not None else None,
        })
    return concepts


def load_concepts_or_report() -> list[dict] | None:
    """load_concepts(), or None after printing why on stderr (scripts then exit 2)."""
    try:
        return load_concepts()
    except DataMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def heldout_split(concepts: list[dict]) -> set[str]:
    """A fixed 10% of concepts per category (seeded), never trained on in any style."""
    rng = random.Random(HELDOUT_SEED)
    by_cat = defaultdict(list)
    for c in concepts:
        by_cat[c["category"]].append(c["name"])
    held = set()
    for cat in sorted(by_cat):
        names = sorted(by_cat[cat])
        k = max(1, math.ceil(HELDOUT_FRACTION * len(names)))
        held.update(rng.sample(names, k))
    return held


def caption_texts(concept: dict) -> list[str]:
    """Training texts: names under several templates, and name + keywords."""
    texts = []
    for cap in concept["captions"]:
        texts += [t.format(cap) for t in NAME_TEMPLATES]
    kw = concept["keywords"]
    if kw:
        texts.append(f"{concept['name']}: {', '.join(kw[:6])}")
        texts.append(", ".join(kw[:4]))
        texts.append(f"{concept['name']}, {kw[0]}")
    texts.append(f"{concept['name']}, {_words(concept['subcategory'])}")
    return list(dict.fromkeys(texts))


def _rgba(png: bytes | pathlib.Path) -> np.ndarray:
    from PIL import Image

    im = Image.open(png if isinstance(png, pathlib.Path) else io.BytesIO(png)).convert("RGBA")
    if im.size != (SIZE, SIZE):
        im = im.resize((SIZE, SIZE), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def load_icons(concepts: list[dict], style: str) -> tuple[np.ndarray, np.ndarray]:
    """(N,64,64,4) uint8 RGBA icons of one style and a mask of which exist."""
    base = package_dir(f"emoji-datasource-{style}") / "img" / style / "64"
    out = np.zeros((len(concepts), SIZE, SIZE, 4), np.uint8)
    have = np.zeros(len(concepts), bool)
    for i, c in enumerate(concepts):
        p = base / c["image"]
        if style in c["styles"] and p.is_file():
            out[i] = _rgba(p)
            have[i] = True
    return out, have


def render_openmoji(concepts: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """OpenMoji colour SVGs rendered to 64 px RGBA (resvg), for the unseen-style test set."""
    import resvg_py

    base = package_dir("openmoji") / "color" / "svg"
    out = np.zeros((len(concepts), SIZE, SIZE, 4), np.uint8)
    have = np.zeros(len(concepts), bool)
    for i, c in enumerate(concepts):
        if not c["openmoji"]:
            continue
        p = base / f"{c['openmoji']}.svg"
        if not p.is_file():
            continue
        png = resvg_py.svg_to_bytes(svg_path=str(p), width=SIZE, height=SIZE)
        out[i] = _rgba(bytes(png))
        have[i] = True
    return out, have


class Augmenter:
    """Camera-like frames from RGBA icons, batched in torch: varied backgrounds
    (plain white/black/grey, flat colour, gradient, noise, stripes/checks),
    random scale, position and rotation, partial occlusion, colour jitter,
    blur, sensor noise and JPEG compression."""

    def __init__(self, seed: int, plain_fraction: float = 0.25, jpeg_fraction: float = 0.3):
        import torch

        self.g = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)
        self.plain_fraction = plain_fraction
        self.jpeg_fraction = jpeg_fraction

    def _u(self, *shape, lo=0.0, hi=1.0):
        import torch

        return lo + (hi - lo) * torch.rand(*shape, generator=self.g)

    def backgrounds(self, n: int, kind: str | None = None):
        import torch
        import torch.nn.functional as F

        s = SIZE
        bg = torch.empty(n, 3, s, s)
        kinds = torch.randint(0, 6, (n,), generator=self.g)
        if kind == "plain":
            kinds[:] = 0
        elif kind is None:
            kinds[self._u(n) < self.plain_fraction] = 0
        yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
        for i in range(n):
            k = int(kinds[i])
            c1, c2 = self._u(3, 1, 1), self._u(3, 1, 1)
            if k == 0:
                v = [1.0, 0.0, 0.5, 0.85, 0.15][int(self._u(1) * 5)]
                bg[i] = (v + self._u(1, lo=-0.04, hi=0.04)).clamp(0, 1).expand(3, s, s)
            elif k == 1:
                bg[i] = c1.expand(3, s, s)
            elif k == 2:
                a = float(self._u(1)) * 2 * math.pi
                t = (math.cos(a) * xx + math.sin(a) * yy)
                t = (t - t.min()) / (t.max() - t.min() + 1e-6)
                bg[i] = c1 * (1 - t) + c2 * t
            elif k == 3:
                g = int(self._u(1, lo=2, hi=9))
                low = F.interpolate(self._u(1, 3, g, g), size=(s, s), mode="bilinear", align_corners=False)[0]
                bg[i] = (low * 0.8 + self._u(3, s, s) * 0.2).clamp(0, 1)
            elif k == 4:
                f = float(self._u(1, lo=2, hi=12))
                a = float(self._u(1)) * math.pi
                t = (torch.sin((math.cos(a) * xx + math.sin(a) * yy) * f * 2 * math.pi) > 0).float()
                bg[i] = c1 * (1 - t) + c2 * t
            else:
                f = int(self._u(1, lo=2, hi=10))
                t = ((xx * f).floor() + (yy * f).floor()) % 2
                bg[i] = c1 * (1 - t) + c2 * t
        return bg

    def __call__(self, icons, kind: str | None = None, strength: float = 1.0):
        """icons: (N,4,64,64) float in [0,1]; returns (N,3,64,64) float frames in [0,1]."""
        import torch
        import torch.nn.functional as F

        n = icons.shape[0]
        bg = self.backgrounds(n, kind)
        scale = self._u(n, lo=0.45, hi=1.05)
        if strength < 1.0:
            scale = self._u(n, lo=0.8, hi=1.0)
        angle = self._u(n, lo=-0.45, hi=0.45) * strength
        room = (1 - scale).clamp(min=0)
        tx = self._u(n, lo=-1, hi=1) * room
        ty = self._u(n, lo=-1, hi=1) * room
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, -(cos * tx - sin * ty)], 1),
                             torch.stack([sin, cos, -(sin * tx + cos * ty)], 1)], 1)
        premul = torch.cat([icons[:, :3] * icons[:, 3:], icons[:, 3:]], 1)
        grid = F.affine_grid(theta, list(premul.shape), align_corners=False)
        warped = F.grid_sample(premul, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        alpha = warped[:, 3:]
        out = warped[:, :3] + bg * (1 - alpha)
        if strength >= 1.0:
            occ = self._u(n) < 0.25
            for i in torch.nonzero(occ).flatten().tolist():
                w, h = int(self._u(1, lo=8, hi=30)), int(self._u(1, lo=8, hi=30))
                x0, y0 = int(self._u(1, hi=SIZE - w)), int(self._u(1, hi=SIZE - h))
                out[i, :, y0:y0 + h, x0:x0 + w] = self._u(3, 1, 1)
            gain = self._u(n, 3, 1, 1, lo=0.8, hi=1.2)
            bright = self._u(n, 1, 1, 1, lo=-0.12, hi=0.12)
            contrast = self._u(n, 1, 1, 1, lo=0.7, hi=1.3)
            mean = out.mean((1, 2, 3), keepdim=True)
            out = ((out - mean) * contrast + mean) * gain + bright
            grey = out.mean(1, keepdim=True)
            sat = self._u(n, 1, 1, 1, lo=0.6, hi=1.3)
            out = grey + (out - grey) * sat
            blur = self._u(n) < 0.3
            if blur.any():
                sigma = float(self._u(1, lo=0.4, hi=1.3))
                k = torch.arange(-3, 4, dtype=torch.float32)
                k = torch.exp(-(k ** 2) / (2 * sigma ** 2))
                k = (k / k.sum())
                kx = k.view(1, 1, 1, 7).repeat(3, 1, 1, 1)
                ky = k.view(1, 1, 7, 1).repeat(3, 1, 1, 1)
                b = out[blur]
                b = F.conv2d(F.pad(b, (3, 3, 0, 0), mode="replicate"), kx, groups=3)
                b = F.conv2d(F.pad(b, (0, 0, 3, 3), mode="replicate"), ky, groups=3)
                out[blur] = b
            noisy = self._u(n) < 0.3
            if noisy.any():
                out[noisy] = out[noisy] + torch.randn(out[noisy].shape, generator=self.g) * 0.03
        out = out.clamp(0, 1)
        if strength >= 1.0 and self.jpeg_fraction > 0:
            out = self._jpeg(out)
        return out

    def _jpeg(self, frames):
        import torch
        from PIL import Image

        for i in range(frames.shape[0]):
            if self.rng.random() >= self.jpeg_fraction:
                continue
            arr = (frames[i].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "JPEG", quality=self.rng.randint(20, 80))
            buf.seek(0)
            frames[i] = torch.from_numpy(np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255).permute(2, 0, 1)
        return frames


def to_tensor(icons: np.ndarray):
    import torch

    return torch.from_numpy(icons).permute(0, 3, 1, 2).float() / 255


def save_frames(frames, folder: pathlib.Path, names: list[str], fmt: str = "png") -> None:
    """Writes (N,3,H,W) frames in [0,1] as image files."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for f, name in zip(frames, names):
        arr = (f.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{name}.{fmt}")

"""The photo model's image tower: EfficientNet-Lite0's ImageNet classifier read
out into the frozen MiniLM-L6 text space (ConSE, Norouzi et al. 2014). The
image embedding is the convex combination of the 1,000 class names' text
embeddings weighted by the network's own class probabilities (sharpened by
TAU), so a photograph lands where the names of what it looks like lie, and a
name the network was never trained on (a text prompt) is matched by its
nearness to those names. The text tower is MiniLM-L6 unchanged.

People, whom ImageNet's names lack (MODEL_CARD.md): the keys of the classes
worn on the body (garments, headwear, footwear, armour, masks) and of the three
person classes lean toward "person" (their key plus the key of "person",
renormalised), since their photographs show people.

Empty scenes (`build_photo.py --empty-scene`): a 1,001st class, "empty
scene", behind a gate on the frame's spatial homogeneity (`homogeneity`: how
alike the head's 7x7 feature vectors are to their mean). A bare wall, a lawn
or gravel looks alike everywhere; an object stands out from its surroundings.
The class's logit is the top ImageNet logit plus SHARPNESS x (homogeneity -
threshold), capped: closed (far below the top class) on frames that hold an
object, it takes at most a capped share of the read-out on uniform ones. The
threshold and the cap are chosen on the validation photographs
(build.choose_empty_scene), never on the evaluation's."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..default_model import towers as text_towers
from ..errors import DataMissing
from . import effnet

# Logit sharpening before the softmax (chosen in MODEL_CARD.md's grid: fidelity against held-out reach).
TAU = 2.0
EMBED_DIM = 384
# ImageNet-1k classes worn on the body, and the person classes (baseball player, bridegroom, scuba diver): their
# photographs show people. Picked from the 1,000 names by that rule alone (the names are checked in WORN_NAMES).
WORN = (399, 400, 411, 433, 439, 443, 445, 451, 452, 457, 459, 461, 465, 474, 490, 501, 502, 514, 515, 518, 524, 529,
        552, 560, 568, 570, 578, 601, 608, 610, 614, 615, 617, 630, 638, 639, 643, 652, 655, 658, 667, 678, 689, 691,
        697, 715, 735, 770, 774, 775, 793, 796, 806, 808, 824, 834, 836, 837, 841, 842, 869, 887, 903, 906,
        981, 982, 983)
WORN_NAMES = ("abaya", "academic gown", "apron", "swimming cap", "military hat (bearskin or shako)", "baby bib",
              "bikini", "bolo tie", "poke bonnet", "bow tie", "bra", "breastplate", "bulletproof vest", "cardigan",
              "chain mail", "cloak", "clogs", "cowboy boot", "cowboy hat", "crash helmet", "cuirass", "diaper",
              "feather boa", "football helmet", "fur coat", "gas mask or respirator", "gown", "hoop skirt", "jeans",
              "T-shirt", "kimono", "knee pad", "lab coat", "slip-on shoe", "tights", "one-piece bathing suit", "mask",
              "military uniform", "miniskirt", "mitten", "graduation cap", "neck brace", "overskirt", "oxygen mask",
              "pajamas", "Pickelhaube", "poncho", "sneaker", "sandal", "sarong", "shower cap", "balaclava ski mask",
              "sock", "sombrero", "scarf", "suit", "sunglasses", "sunglasses", "sweatshirt", "swim trunks / shorts",
              "trench coat", "vestment", "hair wig", "Windsor tie", "baseball player", "bridegroom", "scuba diver")
PERSON = "person"
NULL_NAME = "empty scene"
# Synthetic frames that hold no object (flat colours, gradients, smooth noise): their seed and count.
NULL_SEED = 101
NULL_FRAMES = 60
# The empty-scene gate's slope per unit of homogeneity (logits): 0.1 below the threshold it is 5 logits (10 after
# TAU) under the top class, i.e. shut.
SHARPNESS = 50.0


@dataclass(frozen=True)
class Gate:
    """The "empty scene" class's gate: its logit is the top class's + min(SHARPNESS x (homogeneity - threshold),
    cap)."""

    threshold: float
    cap: float

    def __str__(self) -> str:
        return f"{self.threshold:g}:{self.cap:g}"


def class_names() -> list[str]:
    """ImageNet-1k's class names as open_clip lists them (CLIP's cleaned names), in the classifier's order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    return list(IMAGENET_CLASSNAMES)


def templates() -> list[str]:
    """CLIP's 80 ImageNet prompt templates, as format strings."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


@torch.no_grad()
def class_keys(cache: pathlib.Path | None = None, progress=None) -> torch.Tensor:
    """(1000, 384): per class, the normalised mean over CLIP's 80 templates of
    the MiniLM-L6 embeddings of the filled-in prompt (80,000 sentences, about
    6 minutes on 2 cores; cached in `cache` when given)."""
    names, temps = class_names(), templates()
    if cache is not None and cache.is_file():
        keys = torch.tensor(np.load(cache))
        if keys.shape == (len(names), EMBED_DIM):
            return keys
    tower, tok, _ = text_towers.load_text_tower()
    texts = [t.format(n) for n in names for t in temps]
    out = []
    for i in range(0, len(texts), 500):
        # Padding to the batch's longest prompt: the tower's mask makes the result independent of padding.
        enc = tok(texts[i:i + 500], padding=True, truncation=True, max_length=text_towers.CONTEXT_LENGTH,
                  return_tensors="pt")
        out.append(tower(enc["input_ids"]))
        if progress:
            progress(min(i + 500, len(texts)), len(texts))
    emb = torch.cat(out).view(len(names), len(temps), -1)
    keys = F.normalize(emb.mean(1), dim=-1)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, keys.numpy())
    return keys


@torch.no_grad()
def name_keys(names: list[str]) -> torch.Tensor:
    """(len(names), 384): each name's key, built as class_keys builds each class's (80 templates, mean,
    normalised); the text tower loaded once."""
    tower, tok, _ = text_towers.load_text_tower()
    out = []
    for name in names:
        enc = tok([t.format(name) for t in templates()], padding=True, truncation=True,
                  max_length=text_towers.CONTEXT_LENGTH, return_tensors="pt")
        out.append(F.normalize(tower(enc["input_ids"]).mean(0), dim=-1))
    return torch.stack(out)


def check_worn(names: list[str]) -> None:
    """WORN must still name WORN_NAMES in the class list in use."""
    got = tuple(names[i] for i in WORN)
    if got != WORN_NAMES:
        bad = [(i, g, w) for i, g, w in zip(WORN, got, WORN_NAMES) if g != w]
        raise DataMissing(f"ImageNet class names moved: index, found, expected: {bad[:3]}")


def lean_to_person(keys: torch.Tensor, person: torch.Tensor) -> torch.Tensor:
    """The keys with the WORN rows turned halfway to `person` (key + person key, renormalised)."""
    out = keys.clone()
    idx = torch.tensor(WORN)
    out[idx] = F.normalize(keys[idx] + person, dim=-1)
    return out


def object_free_frames(n: int = NULL_FRAMES, seed: int = NULL_SEED) -> torch.Tensor:
    """(n, 3, 224, 224), normalised with effnet.MEAN/STD: in turn a flat colour, a
    horizontal gradient between two colours, and smooth noise upsampled from
    4x4, 16x16 or 56x56 (bicubic)."""
    g = torch.Generator().manual_seed(seed)
    size = effnet.IMAGE_SIZE
    frames = []
    for k in range(n):
        kind = k % 4
        if kind == 0:
            x = torch.rand(3, 1, 1, generator=g).expand(3, size, size)
        elif kind == 1:
            a, c = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
            x = (a + (c - a) * torch.linspace(0, 1, size)[None, :, None]).expand(3, size, size)
        else:
            s = (4, 16, 56)[k % 3]
            x = F.interpolate(torch.rand(1, 3, s, s, generator=g), size=size, mode="bicubic",
                              align_corners=False)[0].clamp(0, 1)
        mean = torch.tensor(effnet.MEAN)[:, None, None]
        std = torch.tensor(effnet.STD)[:, None, None]
        frames.append(((x - mean) / std).contiguous())
    return torch.stack(frames)


def homogeneity(fmap: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """(B,): the mean over positions of the cosine between each position's feature vector of `fmap` (B, C, H, W)
    and the pooled one `pooled` (B, C). A position whose features are all zero counts as unlike (cosine 0)."""
    dots = (fmap * pooled[:, :, None, None]).sum(1)
    norms = (fmap * fmap).sum(1).sqrt().clamp(min=1e-6) * (pooled * pooled).sum(1).sqrt().clamp(min=1e-6)[:, None, None]
    return (dots / norms).mean((1, 2))


@torch.no_grad()
def feature_maps(net: effnet.EfficientNetLite0, frames: torch.Tensor, batch: int = 16):
    """(logits (B, 1000), homogeneity (B,)) of preprocessed frames (B, 3, 224, 224)."""
    logits, homog = [], []
    for x in frames.split(batch):
        fmap = net.feature_map(x)
        pooled = fmap.mean((2, 3))
        logits.append(net.fc(pooled))
        homog.append(homogeneity(fmap, pooled))
    return torch.cat(logits), torch.cat(homog)


def empty_logit(logits: torch.Tensor, homog: torch.Tensor, gate: Gate) -> torch.Tensor:
    """(B, 1): the "empty scene" logit of each row of `logits` at homogeneity `homog`."""
    return logits.max(-1, keepdim=True).values + (SHARPNESS * (homog - gate.threshold)).clamp(max=gate.cap)[:, None]


class PhotoTower(nn.Module):
    """224x224 RGB (normalised with effnet.MEAN/STD) -> 384-d embedding (not normalised).

    `keys` has a row per ImageNet class; with a `gate`, one more last for "empty scene" (empty_logit)."""

    def __init__(self, net: effnet.EfficientNetLite0, keys: torch.Tensor, gate: Gate | None = None,
                 tau: float = TAU):
        super().__init__()
        rows = net.fc.out_features + (gate is not None)
        if keys.shape != (rows, EMBED_DIM):
            raise DataMissing(f"class keys of shape {tuple(keys.shape)}, expected ({rows}, {EMBED_DIM})")
        self.net = net
        self.tau = tau
        self.gate = gate
        self.register_buffer("keys", keys.clone())

    def forward(self, x):
        fmap = self.net.feature_map(x)
        pooled = fmap.mean((2, 3))
        logits = self.net.fc(pooled)
        if self.gate is not None:
            logits = torch.cat([logits, empty_logit(logits, homogeneity(fmap, pooled), self.gate)], 1)
        return (self.tau * logits).softmax(-1) @ self.keys


def readout(logits: torch.Tensor, keys: torch.Tensor, tau: float = TAU,
            null: float | torch.Tensor | None = None) -> torch.Tensor:
    """The tower's read-out on given logits (rows), normalised; with `null` (one
    value, or one per row: empty_logit), keys' last row is the "empty scene" key and `null` its logit."""
    if null is not None:
        logits = torch.cat([logits, torch.as_tensor(null, dtype=logits.dtype).expand(logits.shape[0]).reshape(-1, 1)],
                           1)
    return F.normalize((tau * logits).softmax(-1) @ keys, dim=-1)


def typical_feature_norm(net: effnet.EfficientNetLite0) -> float:
    """The norm of the expected pooled feature under the head's batch-norm
    statistics (channel c ~ ReLU6(N(beta_c, gamma_c^2)), as on ImageNet's
    training images): a data-free scale for class prototypes used as features."""
    bn = net.head[1]
    beta, gamma = bn.bias.detach().double(), bn.weight.detach().double().abs().clamp(min=1e-6)
    z = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    pdf = torch.exp(-0.5 * z ** 2)
    pdf = pdf / pdf.sum()
    vals = (beta[:, None] + gamma[:, None] * z[None]).clamp(0, 6)
    return float((vals * pdf).sum(1).norm())

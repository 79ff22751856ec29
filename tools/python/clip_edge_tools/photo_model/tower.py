"""The photo model's image tower: EfficientNet-Lite0's ImageNet classifier read
out into the frozen MiniLM-L6 text space (ConSE, Norouzi et al. 2014). The
image embedding is the convex combination of the 1,000 class names' text
embeddings weighted by the network's own class probabilities (sharpened by
TAU), so a photograph lands where the names of what it looks like lie, and a
name the network was never trained on (a text prompt) is matched by its
nearness to those names. The text tower is MiniLM-L6 unchanged."""

from __future__ import annotations

import pathlib

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


class PhotoTower(nn.Module):
    """224x224 RGB (normalised with effnet.MEAN/STD) -> 384-d embedding (not normalised)."""

    def __init__(self, net: effnet.EfficientNetLite0, keys: torch.Tensor, tau: float = TAU):
        super().__init__()
        if keys.shape != (net.fc.out_features, EMBED_DIM):
            raise DataMissing(f"class keys of shape {tuple(keys.shape)}, expected ({net.fc.out_features}, {EMBED_DIM})")
        self.net = net
        self.tau = tau
        self.register_buffer("keys", keys.clone())

    def forward(self, x):
        return (self.tau * self.net(x)).softmax(-1) @ self.keys


def readout(logits: torch.Tensor, keys: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """The tower's read-out on given logits (rows), normalised."""
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

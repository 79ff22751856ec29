"""The photo model's evaluation (MODEL_CARD.md), none of it on ImageNet's
images (none are here):

- held-out concepts: 10 folds of 100 ImageNet classes; the tower's read-out
  restricted to the other 900 classes (as if the 100 had never been named),
  each held-out class's prototype being the read-out of its own classifier
  vector used as a feature at the typical feature norm; its text (80-template
  MiniLM mean) ranked among the 100 held-out prototypes;
- fidelity: on real photographs and camera-like views of them, the zero-shot
  top-1 among the 1,000 class names (text alone) against the network's own
  supervised head, through tract;
- photographs: `clip-edge eval` on labelled photographs among the camera labels.
"""

from __future__ import annotations

import io
import pathlib
import shutil
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from ..binary import ClipEdge
from ..log import logger
from . import effnet, tower

log = logger("photo")

FOLDS = 10
FOLD_SEED = 22          # the class split
VIEW_SEED = 5           # the camera-like views of the photographs
VIEWS = 8


def fake_int8(w: torch.Tensor, axis: int) -> torch.Tensor:
    """Symmetric int8 with one scale per slice along `axis` (export.quantise's weight-only scheme)."""
    dims = tuple(d for d in range(w.dim()) if d != axis)
    scale = w.abs().amax(dim=dims, keepdim=True).clamp(min=1e-12) / 127
    return (w / scale).round().clamp(-127, 127) * scale


def heldout(W: torch.Tensor, b: torch.Tensor, keys: torch.Tensor, alpha: float, tau: float = tower.TAU,
            text: torch.Tensor | None = None) -> dict:
    """Top-1 and top-5 of each fold (mean and spread over the folds). `keys` are the
    read-out's, one row per class; `text` the classes' text keys that are ranked (default: `keys`)."""
    text = keys if text is None else text
    perm = torch.randperm(W.shape[0], generator=torch.Generator().manual_seed(FOLD_SEED))
    folds = perm.view(FOLDS, -1)
    top1, top5 = [], []
    for k in range(FOLDS):
        held = folds[k]
        seen = torch.cat([folds[j] for j in range(FOLDS) if j != k])
        logits = (F.normalize(W[held], dim=-1) * alpha) @ W[seen].T + b[seen]
        protos = tower.readout(logits, keys[seen], tau)
        s = text[held] @ protos.T
        rank = (s > s.diag()[:, None]).sum(1)
        top1.append(float((rank < 1).float().mean()))
        top5.append(float((rank < 5).float().mean()))
    return {"top1": float(np.mean(top1)), "top1_std": float(np.std(top1)), "top5": float(np.mean(top5)),
            "top5_std": float(np.std(top5)), "folds": FOLDS, "classes_per_fold": int(folds.shape[1])}


def camera_views(photos: list[pathlib.Path], folder: pathlib.Path) -> list[pathlib.Path]:
    """Each photograph centre-cropped at 224 px and VIEWS camera-like views
    (random crops of 40-100% of the area, flips, light and colour changes,
    JPEG at quality 70) with a fixed seed; written as 224x224 PNG files."""
    import torchvision.transforms as T
    from PIL import Image

    torch.manual_seed(VIEW_SEED)
    bicubic = T.InterpolationMode.BICUBIC
    centre = T.Compose([T.Resize(effnet.IMAGE_SIZE, interpolation=bicubic), T.CenterCrop(effnet.IMAGE_SIZE)])
    view = T.Compose([T.RandomResizedCrop(effnet.IMAGE_SIZE, scale=(0.4, 1.0), interpolation=bicubic),
                      T.RandomHorizontalFlip(), T.ColorJitter(0.3, 0.3, 0.3)])
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in photos:
        im = Image.open(p).convert("RGB")
        frames = [centre(im)]
        for _ in range(VIEWS):
            buf = io.BytesIO()
            view(im).save(buf, "JPEG", quality=70)
            frames.append(Image.open(buf).convert("RGB"))
        for k, f in enumerate(frames):
            dst = folder / f"{p.stem}-{k}.png"
            f.save(dst)
            out.append(dst)
    return out


@torch.no_grad()
def head_top1(net: effnet.EfficientNetLite0, frames) -> np.ndarray:
    """The supervised head's top-1 class on preprocessed frames (effnet.load_frames; PyTorch, f32)."""
    return np.array([int(net(x[None]).argmax()) for x in frames])


def fidelity(binary: ClipEdge, bundle: pathlib.Path, precision: str, frames: list[pathlib.Path],
             head: np.ndarray, keys: torch.Tensor) -> float | None:
    """Share of frames whose zero-shot top-1 among the 1,000 class names (tract's
    embedding of the frame against the names' text keys) is the head's top-1."""
    emb, err = binary.embed_images(bundle, precision, frames)
    if emb is None:
        log(f"fidelity: tract cannot embed with {precision}: {err}")
        return None
    zs = (F.normalize(torch.tensor(emb, dtype=torch.float32), dim=-1) @ keys.T).argmax(1).numpy()
    return float((zs == head).mean())


def photographs(binary: ClipEdge, bundle: pathlib.Path, precision: str, labelled: dict[str, list[pathlib.Path]],
                prompts: pathlib.Path) -> dict:
    """`clip-edge eval` over class folders made from `labelled` (label -> photographs)."""
    with tempfile.TemporaryDirectory() as tmp_s:
        data = pathlib.Path(tmp_s)
        for label, files in labelled.items():
            (data / label).mkdir()
            for f in files:
                shutil.copyfile(f, data / label / f.name)
        return binary.eval(bundle, data, prompts, precision)

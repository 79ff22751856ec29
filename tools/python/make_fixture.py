#!/usr/bin/env python3
"""Build the real-architecture test fixture: a reduced CLIP ViT image encoder.

The model is open_clip's CLIP ViT image tower (patch embedding, class token,
pre-norm transformer blocks with QuickGELU as in OpenAI's ViT-B/32, final
LayerNorm and projection), with random weights from a fixed seed and only two
layers so the ONNX file stays around 1 MB. It is exported with
torch.onnx.export (opset 17, TorchScript exporter) and run through ONNX
Runtime on test images preprocessed by open_clip's own eval transform.

Writes into tests/data/ (all committed, so neither torch nor onnxruntime is
needed by the tests):
  vit_tiny/image_encoder_f32.onnx
                               the image encoder (input "image" Nx3x224x224,
                               output "embedding" Nx64, not normalised)
  vit_tiny/text_encoder.onnx   the text tower (input "tokens" Nx77 int64,
                               output "embedding" Nx64, end-of-text pooling
                               and causal mask inside the graph)
  vit_tiny/tokenizer.json      CLIP's tokenizer (tools/python/clip_tokenizer.py)
  vit_tiny/bundle.toml         its clip-edge bundle manifest
  images/*.png                 test images of several sizes and modes
  expected_crops/*.png         Pillow's resize + centre crop of each image
                               (what the Rust preprocessor must reproduce)
  vit_tiny/reference.json      per image: sha256 of open_clip's normalised
                               float32 tensor, ONNX Runtime's and PyTorch's
                               embeddings; per prompt: open_clip's token ids,
                               ONNX Runtime's and PyTorch's text embeddings

Run: tools/python/setup_venv.sh && .venv/bin/python tools/python/make_fixture.py
"""

import argparse
import hashlib
import json
import math
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from PIL import Image, ImageDraw

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED = 20261129
SIZE = 224
EMBED_DIM = 64


def make_images(rng: np.random.Generator) -> dict[str, Image.Image]:
    """Deterministic test images covering landscape, portrait, exact size, upscaling, RGBA and grey."""
    images = {}

    w, h = 640, 480
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = np.concatenate([x * np.ones((h, 1, 1)), y * np.ones((1, w, 1)), (x + y) / 2], axis=2)
    img = Image.fromarray((base * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(10, 80)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    images["scene_640x480.png"] = img

    images["noise_100x333.png"] = Image.fromarray(rng.integers(0, 256, (333, 100, 3), dtype=np.uint8), "RGB")

    tile = (np.indices((224, 224)).sum(axis=0) // 16 % 2 * 255).astype(np.uint8)
    images["checker_224x224.png"] = Image.fromarray(np.stack([tile, 255 - tile, tile // 2], axis=2), "RGB")

    rgba = rng.integers(0, 256, (17, 31, 4), dtype=np.uint8)
    images["small_rgba_31x17.png"] = Image.fromarray(rgba, "RGBA")

    grey = (np.sin(np.linspace(0, 6 * math.pi, 50))[None, :] * np.cos(np.linspace(0, 4 * math.pi, 77))[:, None])
    images["grey_50x77.png"] = Image.fromarray(((grey + 1) * 127.5).astype(np.uint8), "L")
    return images


def build_model() -> CLIP:
    torch.manual_seed(SEED)
    vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=32, image_size=SIZE)
    # The token table (49408 x width) dominates the size: width 16 keeps it near 3 MB.
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=16, heads=2, layers=2)
    model = CLIP(embed_dim=EMBED_DIM, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    model.eval()
    return model


class ImageTower(torch.nn.Module):
    def __init__(self, model: CLIP):
        super().__init__()
        self.visual = model.visual

    def forward(self, image):
        return self.visual(image)


def write_manifest(bundle: pathlib.Path, onnx_path: pathlib.Path, text_path: pathlib.Path, mean, std,
                   logit_scale: float) -> None:
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    text_digest = hashlib.sha256(text_path.read_bytes()).hexdigest()
    text = f"""# Written by tools/python/make_fixture.py: a reduced open_clip ViT with random weights.
format = 1
name = "vit-tiny-random"
description = "Test fixture: CLIP ViT image tower (2 layers, width 64, patch 32), random weights. Not a trained model."
fingerprint = "{digest}"

[image]
size = {SIZE}
resize = "shortest-center-crop"
interpolation = "bicubic"
mean = [{", ".join(repr(float(m)) for m in mean)}]
std = [{", ".join(repr(float(s)) for s in std)}]
embed_dim = {EMBED_DIM}
logit_scale = {logit_scale!r}
default_precision = "f32"

[[image.encoder]]
precision = "f32"
file = "{onnx_path.name}"
sha256 = "{digest}"

[text]
file = "{text_path.name}"
sha256 = "{text_digest}"
tokenizer = "tokenizer.json"
context_length = 77
pad_id = 0
attention_mask = false
"""
    (bundle / "bundle.toml").write_text(text)


class TextTower(torch.nn.Module):
    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model.encode_text(tokens)


PROMPTS = ["a photo of a cat.", "a photo of a dog.", "an empty room", "A BLURRY PHOTO OF A CAR!",
           "café 🙂 20°C", "word " * 90]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "data")
    args = parser.parse_args()
    out: pathlib.Path = args.out
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "expected_crops").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(SEED)
    model = build_model()
    tower = ImageTower(model).eval()
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    transform = open_clip.image_transform(SIZE, is_train=False, mean=mean, std=std)
    # transform = Resize(SIZE, bicubic) -> CenterCrop(SIZE) -> convert RGB -> ToTensor -> Normalize
    geometric = transform.transforms[:2]

    bundle = out / "vit_tiny"
    bundle.mkdir(exist_ok=True)
    onnx_path = bundle / "image_encoder_f32.onnx"
    dummy = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(
        tower, (dummy,), str(onnx_path), input_names=["image"], output_names=["embedding"],
        opset_version=17, dynamo=False, dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
    )
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    entries = []
    for name, img in make_images(rng).items():
        img.save(out / "images" / name, optimize=True)
        reloaded = Image.open(out / "images" / name)
        crop = reloaded.convert("RGB") if reloaded.mode != "RGB" else reloaded
        for t in geometric:
            crop = t(crop)
        crop.save(out / "expected_crops" / name, optimize=True)
        tensor = transform(reloaded).unsqueeze(0)
        array = tensor.numpy().astype(np.float32)
        ort_out = session.run(None, {"image": array})[0][0]
        with torch.no_grad():
            torch_out = tower(tensor)[0].numpy()
        entries.append({
            "file": f"images/{name}",
            "expected_crop": f"expected_crops/{name}",
            "width": img.width,
            "height": img.height,
            "mode": img.mode,
            "tensor_sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(),
            "onnxruntime": [float(v) for v in ort_out],
            "torch": [float(v) for v in torch_out],
        })

    reference = {
        "generator": "tools/python/make_fixture.py",
        "seed": SEED,
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__,
                     "onnxruntime": ort.__version__, "onnx": onnx.__version__},
        "model": {"file": "vit_tiny/image_encoder_f32.onnx", "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
                  "architecture": "open_clip CLIP ViT (QuickGELU), layers=2 width=64 heads=2 patch=32",
                  "text_architecture": "open_clip CLIP text transformer, layers=2 width=16 heads=2 ctx=77",
                  "size": SIZE, "embed_dim": EMBED_DIM, "mean": list(mean), "std": list(std),
                  "resize": "shortest-center-crop", "interpolation": "bicubic",
                  "logit_scale": float(model.logit_scale.exp().detach())},
        "images": entries,
    }
    import clip_tokenizer  # noqa: E402  (same folder)

    clip_tokenizer.build().save(str(bundle / "tokenizer.json"))
    text_path = bundle / "text_encoder.onnx"
    text_tower = TextTower(model).eval()
    torch.onnx.export(
        text_tower, (torch.zeros(1, 77, dtype=torch.long),), str(text_path), input_names=["tokens"],
        output_names=["embedding"], opset_version=17, dynamo=False,
        dynamic_axes={"tokens": {0: "batch"}, "embedding": {0: "batch"}},
    )
    onnx.checker.check_model(onnx.load(str(text_path)))
    text_session = ort.InferenceSession(str(text_path), providers=["CPUExecutionProvider"])
    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    prompts = []
    for prompt in PROMPTS:
        tokens = tokenizer([prompt], context_length=77)
        with torch.no_grad():
            torch_out = text_tower(tokens)[0].numpy()
        ort_out = text_session.run(None, {"tokens": tokens.numpy()})[0][0]
        prompts.append({"text": prompt, "tokens": tokens[0].tolist(),
                        "onnxruntime": [float(v) for v in ort_out], "torch": [float(v) for v in torch_out]})
    reference["prompts"] = prompts
    (bundle / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    write_manifest(bundle, onnx_path, text_path, mean, std, float(model.logit_scale.exp().detach()))
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) and {len(entries)} reference images")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turn a CLIP model into a clip-edge bundle: ONNX towers, tokenizer, manifest,
quantised forms, and proof that PyTorch, ONNX Runtime and tract agree.

Sources:
  open-clip   an open_clip model name with a pretrained tag (needs the weights,
              so a machine with internet or a local checkpoint file), or
              --random-init for the same architecture with random weights
  hf          a Hugging Face CLIP folder (config.json + weights, as saved by
              transformers' CLIPModel.save_pretrained)
  package     ONNX towers you exported yourself (any model, e.g. clip-edge's
              own default model): writes the bundle around them
  requantise  remake an existing bundle's int8 image encoder from its f32 one
              (same model fingerprint, so its prompt stores stay valid)

Every export is staged in a temporary folder, verified, and only then moved to
--out; a failed export leaves nothing behind. The bundle gets an
export_report.json with the figures.

Verification: synthetic test images go through open_clip's own preprocessing
and PyTorch, through ONNX Runtime on the same tensors, and through tract via
`clip-edge embed` (with clip-edge's own preprocessing). The f32 encoder must
match within the tolerances below or the export fails. Each quantised form is
kept only if tract loads it and its embeddings stay close to f32; otherwise it
is dropped and the exact reason recorded.

Examples:
  tools/python/export_bundle.py open-clip --model ViT-B-32 --random-init --out /tmp/vitb32
  tools/python/export_bundle.py open-clip --model ViT-B-32 --pretrained openai --out models/vit-b-32
  tools/python/export_bundle.py hf --folder ./clip-vit-base-patch32 --out models/hf-clip
  tools/python/export_bundle.py requantise --bundle models/default
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

F32_MIN_COSINE = 0.9999     # tract / ONNX Runtime / PyTorch agreement for f32
F32_MAX_ABS = 1e-3          # on unit-normalised embeddings
QUANT_MIN_COSINE = 0.98     # a quantised form must stay this close to f32 (mean over test images)


# The int8 file run on tract's int8 kernels (runtime/src/int8/): no file of its own.
COMPUTE_FORM = "int8-compute"


class ExportError(Exception):
    """A refusal with a message for the user; nothing has been written."""


@dataclasses.dataclass
class Preprocess:
    size: int
    resize: str              # "shortest-center-crop" | "squash"
    interpolation: str       # "bicubic" | "bilinear" | "nearest"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclasses.dataclass
class TextSpec:
    onnx: pathlib.Path
    tokenizer: pathlib.Path
    context_length: int
    pad_id: int
    attention_mask: bool


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log(msg: str) -> None:
    print(f"[export] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- bundle writer

def write_bundle(out: pathlib.Path, *, name: str, description: str, encoders: dict[str, pathlib.Path],
                 preprocess: Preprocess, embed_dim: int, logit_scale: float, text: TextSpec | None,
                 report: dict | None = None, force: bool = False, keep: tuple[str, ...] = (),
                 prompts: str | None = None) -> pathlib.Path:
    """Write a bundle folder around existing ONNX files, atomically.

    `encoders` maps precision ("f32", "f16", "int8") to an image-encoder file;
    "f32" is required (it defines the model fingerprint). The folder is
    assembled beside `out` and renamed into place at the end. Names in
    `keep` (files or folders of an existing `out`, such as a labels file or a
    model card) are carried over into the new folder. `prompts` names the
    bundle's default prompt store (built afterwards by `clip-edge prompts build`).
    """
    if "f32" not in encoders:
        raise ExportError("the f32 image encoder is required (it defines the model fingerprint)")
    for p in list(encoders.values()) + ([text.onnx, text.tokenizer] if text else []):
        if not pathlib.Path(p).is_file():
            raise ExportError(f"{p}: file does not exist")
    if preprocess.resize not in ("shortest-center-crop", "squash"):
        raise ExportError(f"resize mode {preprocess.resize!r} is not supported")
    if preprocess.interpolation not in ("bicubic", "bilinear", "nearest"):
        raise ExportError(f"interpolation {preprocess.interpolation!r} is not supported")
    if out.exists() and not force:
        raise ExportError(f"{out}: already exists (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        lines = [
            "# Written by tools/python/export_bundle.py",
            "format = 1",
            f"name = {json.dumps(name)}",
            f"description = {json.dumps(description)}",
            f'fingerprint = "{sha256(encoders["f32"])}"',
            *([f"prompts = {json.dumps(prompts)}"] if prompts else []),
            "",
            "[image]",
            f"size = {preprocess.size}",
            f'resize = "{preprocess.resize}"',
            f'interpolation = "{preprocess.interpolation}"',
            f"mean = [{', '.join(repr(float(v)) for v in preprocess.mean)}]",
            f"std = [{', '.join(repr(float(v)) for v in preprocess.std)}]",
            f"embed_dim = {embed_dim}",
            f"logit_scale = {float(logit_scale)!r}",
            'default_precision = "f32"',
        ]
        for precision, src in sorted(encoders.items()):
            if precision == COMPUTE_FORM:
                # A way of running the int8 (or f32) file, not another file (docs/bundle.md).
                owner = next((p for p in ("int8", "f32") if encoders.get(p) == src), None)
                if owner is None:
                    raise ExportError(f"{COMPUTE_FORM} must name the same file as int8 (or f32)")
                dst = stage / f"image_encoder_{owner}.onnx"
            else:
                dst = stage / f"image_encoder_{precision}.onnx"
                shutil.copyfile(src, dst)
            lines += ["", "[[image.encoder]]", f'precision = "{precision}"', f'file = "{dst.name}"',
                      f'sha256 = "{sha256(dst)}"']
        if text:
            shutil.copyfile(text.onnx, stage / "text_encoder.onnx")
            shutil.copyfile(text.tokenizer, stage / "tokenizer.json")
            lines += ["", "[text]", 'file = "text_encoder.onnx"', f'sha256 = "{sha256(stage / "text_encoder.onnx")}"',
                      'tokenizer = "tokenizer.json"', f"context_length = {text.context_length}",
                      f"pad_id = {text.pad_id}", f"attention_mask = {'true' if text.attention_mask else 'false'}"]
        (stage / "bundle.toml").write_text("\n".join(lines) + "\n")
        if report is not None:
            (stage / "export_report.json").write_text(json.dumps(report, indent=1) + "\n")
        for name in keep:
            old = out / name
            if old.is_dir():
                shutil.copytree(old, stage / name)
            elif old.is_file():
                shutil.copyfile(old, stage / name)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
        return out
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


# ---------------------------------------------------------------- quantisation

def quantise_int8_dynamic(src: pathlib.Path, dst: pathlib.Path, per_channel: bool = False) -> None:
    """ONNX Runtime dynamic quantisation: int8 weights, activations quantised at run time (MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)


def quantise_int8_weights(src: pathlib.Path, dst: pathlib.Path, min_elements: int = 1024) -> int:
    """Weight-only int8: every large constant weight of a Conv, Gemm or MatMul
    is stored as int8 with one f32 scale per output channel (symmetric, no
    zero point) and turned back into f32 by Cast + Mul in the graph.

    tract folds those constant Cast and Mul nodes when it optimises the model,
    so in memory the weights are f32 again and inference runs at f32 speed,
    while the file is about 4x smaller. (ONNX dynamic or QDQ int8 graphs run
    2-6x slower than f32 in tract 0.23: docs/performance.md.) Returns the
    number of weights quantised.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    added = []
    for init in list(graph.initializer):
        uses = consumers.get(init.name, [])
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < min_elements or len(init.dims) < 2:
            continue
        if len(uses) != 1 or uses[0][1] != 1 or uses[0][0].op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        node = uses[0][0]
        w = numpy_helper.to_array(init)
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "Gemm":
            axis = 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
        else:
            axis = w.ndim - 1
        scale = np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis), keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(q, init.name + "_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), init.name + "_scale")])
        added += [helper.make_node("Cast", [init.name + "_int8"], [init.name + "_dq"], to=TensorProto.FLOAT,
                                   name=init.name + "_cast_f32"),
                  helper.make_node("Mul", [init.name + "_dq", init.name + "_scale"], [init.name],
                                   name=init.name + "_rescale")]
    for node in reversed(added):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return len(added) // 2


def make_int8(src: pathlib.Path, dst: pathlib.Path, mode: str) -> None:
    """The int8 image encoder in `mode`: "weights" (weight-only, folded to f32
    at load: smaller and as fast as f32 in tract) or "dynamic" (ONNX Runtime's
    MatMulInteger form: fast in ONNX Runtime, slower than f32 in tract)."""
    if mode == "weights":
        quantise_int8_weights(src, dst)
    elif mode == "dynamic":
        quantise_int8_dynamic(src, dst)
    else:
        raise ExportError(f"unknown int8 mode {mode!r} (weights, dynamic)")


def convert_f16_weights(src: pathlib.Path, dst: pathlib.Path, min_elements: int = 1024) -> None:
    """f16 storage: large f32 initializers stored as f16 with a Cast back to f32.

    The arithmetic stays f32 (boards without fp16 units lose nothing); the
    file is about half the size. tract folds the constant casts at load.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < min_elements:
            continue
        arr = numpy_helper.to_array(init).astype(np.float16)
        half = numpy_helper.from_array(arr, init.name + "_f16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_cast_f32"))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


# ---------------------------------------------------------------- verification

def test_images(folder: pathlib.Path, n: int = 6, seed: int = 11) -> list[pathlib.Path]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(160, 640)), int(rng.integers(160, 480))
        base = rng.integers(0, 256, 3)
        img = Image.new("RGB", (w, h), tuple(int(v) for v in base))
        draw = ImageDraw.Draw(img)
        for _ in range(8):
            x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(8, 90))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        p = folder / f"verify_{i}.png"
        img.save(p)
        paths.append(p)
    return paths


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = unit(a), unit(b)
    cos = (a * b).sum(-1)
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()), "max_abs": float(np.abs(a - b).max())}


def clip_edge_binary(explicit: str | None) -> pathlib.Path:
    if explicit:
        return pathlib.Path(explicit)
    log("building clip-edge (cargo build -p clip-edge-tools)")
    subprocess.run(["cargo", "build", "-q", "-p", "clip-edge-tools", "--bin", "clip-edge"], cwd=ROOT, check=True)
    return ROOT / "target" / "debug" / "clip-edge"


def tract_embed(binary: pathlib.Path, bundle: pathlib.Path, precision: str, images: list[pathlib.Path]):
    """(embeddings, None) or (None, error text) from `clip-edge embed`."""
    r = subprocess.run([str(binary), "-q", "embed", "--json", "--bundle", str(bundle), "--precision", precision]
                       + [str(p) for p in images], capture_output=True, text=True)
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["(no message)"])[-1]
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    return np.array([row["embedding"] for row in rows]), None


def add_nnef(binary: pathlib.Path, bundle: pathlib.Path) -> None:
    """Adds tract's NNEF form of the bundle's image encoders (`clip-edge bundle
    nnef`: verified against the ONNX files; forms whose NNEF would be larger
    than their ONNX file are skipped). The ONNX files stay the authority, so a
    failure here only costs start-up time on the device: it is logged, not fatal."""
    r = subprocess.run([str(binary), "-q", "bundle", "nnef", "--bundle", str(bundle)], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        log(f"nnef: {line}")
    if r.returncode != 0:
        log(f"warning: no NNEF form added: {(r.stderr.strip().splitlines() or ['(no message)'])[-1]}")


def tract_embed_text(binary: pathlib.Path, bundle: pathlib.Path, texts: list[str]):
    args = [str(binary), "-q", "embed", "--json", "--bundle", str(bundle)]
    for t in texts:
        args += ["--text", t]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["(no message)"])[-1]
    return np.array([json.loads(line)["embedding"] for line in r.stdout.splitlines()]), None


def ort_run(path: pathlib.Path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


VERIFY_LABELS = ["cat", "dog", "car", "person", "bicycle", "bird", "package", "tree", "house", "boat"]


def verify_and_select(stage: pathlib.Path, candidates: dict[str, pathlib.Path], torch_image, torch_tensors,
                      text_ref: dict | None, binary: pathlib.Path, images: list[pathlib.Path],
                      input_name: str) -> tuple[dict[str, pathlib.Path], dict]:
    """Verify f32 (fatal on failure) and each quantised form (dropped on failure)."""
    report: dict = {"images": len(images), "tolerances": {"f32_min_cosine": F32_MIN_COSINE, "f32_max_abs": F32_MAX_ABS,
                                                          "quantised_min_mean_cosine": QUANT_MIN_COSINE},
                    "forms": {}}
    batch = np.concatenate(torch_tensors)
    ort_f32 = np.concatenate([ort_run(candidates["f32"], {input_name: t}) for t in torch_tensors])
    tract_f32, err = tract_embed(binary, stage, "f32", images)
    if err:
        raise ExportError(f"tract cannot run the f32 image encoder: {err}")
    f32 = {"file_bytes": candidates["f32"].stat().st_size,
           "torch_vs_onnxruntime": compare(torch_image(batch), ort_f32),
           "tract_vs_onnxruntime": compare(tract_f32, ort_f32)}
    report["forms"]["f32"] = f32
    for key in ("torch_vs_onnxruntime", "tract_vs_onnxruntime"):
        c = f32[key]
        if c["cosine_min"] < F32_MIN_COSINE or c["max_abs"] > F32_MAX_ABS:
            raise ExportError(f"f32 {key.replace('_', ' ')} disagree: cosine {c['cosine_min']:.6f}, "
                              f"max abs {c['max_abs']:.2e} (limits {F32_MIN_COSINE}, {F32_MAX_ABS})")
    log(f"f32: tract vs ONNX Runtime cosine {f32['tract_vs_onnxruntime']['cosine_min']:.7f}, "
        f"max abs {f32['tract_vs_onnxruntime']['max_abs']:.2e}")

    labels = None
    if text_ref is not None:
        tract_text, err = tract_embed_text(binary, stage, [f"a photo of a {c}." for c in VERIFY_LABELS])
        if err:
            raise ExportError(f"tract cannot run the text encoder: {err}")
        report["text"] = {"torch_vs_onnxruntime": compare(text_ref["torch"], text_ref["onnxruntime"]),
                          "tract_vs_onnxruntime": compare(tract_text, text_ref["onnxruntime"])}
        c = report["text"]["tract_vs_onnxruntime"]
        if c["cosine_min"] < F32_MIN_COSINE or c["max_abs"] > F32_MAX_ABS:
            raise ExportError(f"text encoder: tract and ONNX Runtime disagree (cosine {c['cosine_min']:.6f})")
        labels = unit(text_ref["onnxruntime"])
        log(f"text: tract vs ONNX Runtime cosine {c['cosine_min']:.7f}")

    keep = {"f32": candidates["f32"]}
    for precision, path in candidates.items():
        if precision == "f32":
            continue
        entry: dict = {"file_bytes": path.stat().st_size,
                       "size_ratio_vs_f32": candidates["f32"].stat().st_size / path.stat().st_size}
        report["forms"][precision] = entry
        if precision == COMPUTE_FORM and "int8" not in keep:
            entry["kept"] = False
            entry["reason"] = "the int8 file it runs was dropped"
            continue
        try:
            # The int8-compute form's arithmetic has no ONNX Runtime counterpart
            # here (the file is the weight-only int8 one): compared with f32 only.
            if precision != COMPUTE_FORM:
                ort_q = np.concatenate([ort_run(path, {input_name: t}) for t in torch_tensors])
                entry["onnxruntime_vs_f32"] = compare(ort_q, ort_f32)
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            entry["onnxruntime_error"] = " ".join(str(e).split())[:400]
        tract_q, err = tract_embed(binary, stage, precision, images)
        if err:
            entry["kept"] = False
            entry["reason"] = f"tract cannot load or run it: {err}"
            log(f"{precision}: dropped ({entry['reason']})")
            continue
        entry["tract_vs_f32"] = compare(tract_q, tract_f32)
        if "onnxruntime_vs_f32" in entry:
            entry["tract_vs_onnxruntime"] = compare(tract_q, ort_q)
        if labels is not None:
            a = (unit(tract_q) @ labels.T).argmax(-1)
            b = (unit(tract_f32) @ labels.T).argmax(-1)
            entry["top1_agreement_vs_f32"] = float((a == b).mean())
        if entry["tract_vs_f32"]["cosine_mean"] < QUANT_MIN_COSINE:
            entry["kept"] = False
            entry["reason"] = (f"tract's embeddings are too far from f32 (mean cosine "
                               f"{entry['tract_vs_f32']['cosine_mean']:.4f} < {QUANT_MIN_COSINE})")
            log(f"{precision}: dropped ({entry['reason']})")
            continue
        entry["kept"] = True
        keep[precision] = path
        log(f"{precision}: kept, {entry['size_ratio_vs_f32']:.2f}x smaller, tract vs f32 mean cosine "
            f"{entry['tract_vs_f32']['cosine_mean']:.5f}")
    return keep, report


# ---------------------------------------------------------------- open_clip

def reduce_config(cfg: dict) -> dict:
    """A small model of the same architecture, for tests: fewer and thinner layers."""
    cfg = json.loads(json.dumps(cfg))
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    cfg["embed_dim"] = 64
    if "timm_model_name" not in v:
        v.update(layers=2, width=64, head_width=32)
    t.update(layers=2, width=16, heads=2)
    return cfg


def shrink_timm_trunk(model, embed_dim: int) -> None:
    import timm

    trunk_name = model.visual.trunk.default_cfg.get("architecture", "")
    if not trunk_name.startswith("fastvit"):
        raise ExportError(f"--reduce does not know how to shrink the timm trunk {trunk_name!r}")
    model.visual.trunk = timm.create_model(trunk_name, num_classes=embed_dim, global_pool="avg",
                                           layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128))


def build_open_clip(name: str, pretrained: str | None, reduce: bool):
    import open_clip
    import torch

    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower().split("-")[0] in m.lower()][:8]
        raise ExportError(f"unknown open_clip model {name!r}" + (f" (similar: {', '.join(close)})" if close else ""))
    torch.manual_seed(0)
    kwargs = {}
    if reduce:
        cfg = reduce_config(open_clip.get_model_config(name))
        kwargs = {"embed_dim": cfg["embed_dim"], "vision_cfg": cfg["vision_cfg"], "text_cfg": cfg["text_cfg"]}
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        raise ExportError(f"cannot create {name} with pretrained={pretrained!r}: {e}") from e
    if reduce and hasattr(model.visual, "trunk"):
        shrink_timm_trunk(model, kwargs["embed_dim"])
    model.eval()
    try:
        from timm.utils import reparameterize_model

        model = reparameterize_model(model)
    except ImportError:
        pass
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess, tokenizer


def preprocess_from_transform(transform) -> Preprocess:
    from torchvision import transforms as T

    steps = list(transform.transforms)
    resize = next(s for s in steps if isinstance(s, T.Resize))
    crop = next((s for s in steps if isinstance(s, T.CenterCrop)), None)
    norm = next(s for s in steps if isinstance(s, T.Normalize))
    interp = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}.get(resize.interpolation.value)
    if interp is None:
        raise ExportError(f"interpolation {resize.interpolation} is not supported by clip-edge")
    if isinstance(resize.size, int) or (isinstance(resize.size, (list, tuple)) and len(resize.size) == 1):
        size = resize.size if isinstance(resize.size, int) else resize.size[0]
        if crop is None:
            raise ExportError("Resize without CenterCrop is not supported")
        mode = "shortest-center-crop"
    else:
        h, w = resize.size
        if h != w:
            raise ExportError(f"non-square input {h}x{w} is not supported")
        size, mode = h, "squash"
    return Preprocess(size=int(size), resize=mode, interpolation=interp,
                      mean=tuple(float(v) for v in norm.mean), std=tuple(float(v) for v in norm.std))


def save_tokenizer(tokenizer, dst: pathlib.Path) -> tuple[int, bool]:
    """Writes tokenizer.json; returns (pad id, whether the text graph takes a mask)."""
    import open_clip

    if isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer):
        import clip_tokenizer

        clip_tokenizer.build().save(str(dst))
        return 0, False
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and hasattr(hf, "backend_tokenizer"):
        hf.backend_tokenizer.save(str(dst))
        return int(hf.pad_token_id or 0), False
    raise ExportError(f"tokenizer {type(tokenizer).__name__} cannot be converted to tokenizer.json")


def wrap(fn, owner):
    """A torch module whose forward is `fn` (one tensor in, embeddings out).

    `owner` (the model `fn` reads) is registered as a submodule so its weights
    export as initializers, which the quantisers and the f16 converter rewrite.
    """
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.owner = owner

        def forward(self, x):
            return fn(x)

    return Tower().eval()


class ImageTower:
    def __init__(self, model):
        self.module = wrap(model.encode_image, model)


def export_onnx(module, example, path: pathlib.Path, input_name: str) -> None:
    import onnx
    import torch

    # Not under no_grad: there PyTorch takes the fused attention fast path
    # (aten::_native_multi_head_attention), which has no ONNX export.
    try:
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=["embedding"],
                          opset_version=17, dynamo=False, verbose=False,
                          dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}})
    except Exception as e:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"cannot export the {input_name} tower to ONNX: {' '.join(str(e).split())[:300]}") from e
    onnx.checker.check_model(str(path))


@dataclasses.dataclass
class Source:
    """A loaded model, whatever it came from, reduced to what an export needs."""
    name: str
    description: str
    model: object               # the torch module the two functions read
    image_fn: object            # torch: (N,3,S,S) float -> (N,D)
    text_fn: object             # torch: (N,ctx) int64 -> (N,D)
    transform: object           # PIL image -> (3,S,S) tensor, the model's own preprocessing
    preprocess: Preprocess
    tokenize: object            # list[str] -> (N,ctx) int64 tensor
    write_tokenizer: object     # path -> None (tokenizer.json)
    context_length: int
    pad_id: int
    logit_scale: float
    meta: dict


def run_export(src: Source, args) -> None:
    import torch
    from PIL import Image

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = pathlib.Path(tmp_s)
        image_f32 = tmp / "image_encoder_f32.onnx"
        text_onnx = tmp / "text_encoder.onnx"
        ctx = src.context_length
        log(f"exporting image tower ({src.preprocess.size} px) and text tower ({ctx} tokens)")
        export_onnx(wrap(src.image_fn, src.model), torch.zeros(1, 3, src.preprocess.size, src.preprocess.size), image_f32, "image")
        export_onnx(wrap(src.text_fn, src.model), torch.zeros(1, ctx, dtype=torch.long), text_onnx, "tokens")
        src.write_tokenizer(tmp / "tokenizer.json")
        candidates = {"f32": image_f32}
        for precision in args.precisions:
            dst = tmp / f"image_encoder_{precision}.onnx"
            log(f"making {precision}")
            if precision == "int8":
                make_int8(image_f32, dst, args.int8_mode)
            elif precision == "f16":
                convert_f16_weights(image_f32, dst)
            else:
                raise ExportError(f"unknown precision {precision!r} (int8, f16)")
            candidates[precision] = dst
            if precision == "int8" and args.int8_mode == "weights":
                candidates[COMPUTE_FORM] = dst
        images = test_images(tmp / "verify")
        tensors = [src.transform(Image.open(p).convert("RGB")).unsqueeze(0).numpy() for p in images]
        tokens = src.tokenize([f"a photo of a {c}." for c in VERIFY_LABELS]).numpy().astype(np.int64)
        with torch.no_grad():
            text_torch = src.text_fn(torch.from_numpy(tokens)).numpy()
        text_ort = np.concatenate([ort_run(text_onnx, {"tokens": tokens[i:i + 1]}) for i in range(len(tokens))])
        embed_dim = int(text_torch.shape[-1])

        def torch_image(batch):
            with torch.no_grad():
                return src.image_fn(torch.from_numpy(batch)).numpy()

        text = TextSpec(onnx=text_onnx, tokenizer=tmp / "tokenizer.json", context_length=ctx, pad_id=src.pad_id,
                        attention_mask=False)
        common = dict(name=args.name or src.name, description=src.description, preprocess=src.preprocess,
                      embed_dim=embed_dim, logit_scale=src.logit_scale, text=text)
        stage = write_bundle(tmp / "stage", encoders=candidates, **common)
        keep, report = verify_and_select(stage, candidates, torch_image, tensors,
                                         {"torch": text_torch, "onnxruntime": text_ort},
                                         clip_edge_binary(args.clip_edge), images, "image")
        report.update(source=src.meta, preprocess=dataclasses.asdict(src.preprocess),
                      export_seconds=round(time.time() - started, 1))
        out = write_bundle(args.out, encoders=keep, report=report, force=args.force, **common)
    add_nnef(clip_edge_binary(args.clip_edge), out)
    log(f"wrote {out} ({', '.join(sorted(keep))})")
    print(json.dumps(report, indent=1))


def export_open_clip(args) -> None:
    import torch

    if not args.random_init and not args.pretrained:
        raise ExportError("give --pretrained TAG (or a checkpoint path), or --random-init")
    if args.out.exists() and not args.force:
        raise ExportError(f"{args.out}: already exists (use --force to replace it)")
    model, transform, tokenizer = build_open_clip(args.model, None if args.random_init else args.pretrained,
                                                  args.reduce)
    pre = preprocess_from_transform(transform)
    ctx = int(getattr(tokenizer, "context_length", 77) or 77)
    holder = {}

    def write_tok(path):
        holder["pad"], _ = save_tokenizer(tokenizer, path)

    write_tok(pathlib.Path(tempfile.mkdtemp()) / "probe.json")
    weights = "random" if args.random_init else args.pretrained
    src = Source(
        name=f"{args.model}{'-reduced' if args.reduce else ''}-{weights}",
        description=(f"open_clip {args.model} " + ("(reduced depth/width) " if args.reduce else "")
                     + ("with RANDOM weights (architecture test, not a trained model)" if args.random_init
                        else f"pretrained={args.pretrained}")),
        model=model, image_fn=model.encode_image, text_fn=model.encode_text, transform=transform, preprocess=pre,
        tokenize=lambda texts: tokenizer(texts), write_tokenizer=write_tok, context_length=ctx,
        pad_id=holder["pad"], logit_scale=float(model.logit_scale.exp().detach()),
        meta={"open_clip": args.model, "pretrained": None if args.random_init else args.pretrained,
              "reduced": args.reduce},
    )
    torch.manual_seed(0)
    run_export(src, args)


# ---------------------------------------------------------------- Hugging Face

def export_hf(args) -> None:
    folder = pathlib.Path(args.folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder")
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder}: no config.json (not a Hugging Face model folder)")
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise ExportError(f"{folder}: no weights (model.safetensors or pytorch_model.bin)")
    if args.out.exists() and not args.force:
        raise ExportError(f"{args.out}: already exists (use --force to replace it)")
    try:
        from transformers import CLIPModel, CLIPTokenizerFast
    except ImportError as e:
        raise ExportError("the hf source needs transformers (pip install transformers)") from e
    from torchvision import transforms as T

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "clip":
        raise ExportError(f"{folder}: model_type {config.get('model_type')!r} is not 'clip'")
    model = CLIPModel.from_pretrained(str(folder)).eval()
    pp_path = folder / "preprocessor_config.json"
    pp = json.loads(pp_path.read_text()) if pp_path.is_file() else {}
    size = pp.get("size", {"shortest_edge": model.config.vision_config.image_size})
    size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
    crop = pp.get("crop_size", size)
    crop = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    if int(size) != int(crop):
        raise ExportError(f"{pp_path}: resize to {size} then crop to {crop} is not supported (bundles resize the "
                          "shortest side to the crop size)")
    interp = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(pp.get("resample", 3))
    if interp is None:
        raise ExportError(f"{pp_path}: resample {pp.get('resample')} is not supported")
    pre = Preprocess(size=int(crop), resize="shortest-center-crop", interpolation=interp,
                     mean=tuple(pp.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
                     std=tuple(pp.get("image_std", (0.26862954, 0.26130258, 0.27577711))))
    mode = {"nearest": T.InterpolationMode.NEAREST, "bilinear": T.InterpolationMode.BILINEAR,
            "bicubic": T.InterpolationMode.BICUBIC}[interp]
    transform = T.Compose([T.Resize(pre.size, interpolation=mode), T.CenterCrop(pre.size), T.ToTensor(),
                           T.Normalize(pre.mean, pre.std)])
    try:
        hf_tok = CLIPTokenizerFast.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{folder}: no usable tokenizer (tokenizer.json or vocab.json + merges.txt): {e}") from e
    ctx = int(model.config.text_config.max_position_embeddings)

    def tokenize(texts):
        import torch

        enc = hf_tok(texts, padding="max_length", max_length=ctx, truncation=True, return_tensors="pt")
        return enc["input_ids"].to(torch.long)

    src = Source(
        name=args.name or folder.name, description=f"Hugging Face CLIP folder {folder.name}",
        model=model, image_fn=lambda x: model.get_image_features(pixel_values=x).pooler_output,
        text_fn=lambda t: model.get_text_features(input_ids=t).pooler_output,
        transform=transform, preprocess=pre, tokenize=tokenize,
        write_tokenizer=lambda path: hf_tok.backend_tokenizer.save(str(path)), context_length=ctx,
        pad_id=int(hf_tok.pad_token_id or 0), logit_scale=float(model.logit_scale.exp().detach()),
        meta={"huggingface_folder": str(folder)},
    )
    run_export(src, args)


# ---------------------------------------------------------------- package

def package(args) -> None:
    pre = Preprocess(size=args.size, resize=args.resize, interpolation=args.interpolation,
                     mean=tuple(args.mean), std=tuple(args.std))
    encoders = {"f32": pathlib.Path(args.image_onnx)}
    for spec in args.extra or []:
        precision, _, path = spec.partition("=")
        encoders[precision] = pathlib.Path(path)
    if "int8" in encoders and not args.no_int8_compute:
        encoders[COMPUTE_FORM] = encoders["int8"]
    text = None
    if args.text_onnx:
        if not args.tokenizer:
            raise ExportError("--text-onnx needs --tokenizer")
        text = TextSpec(onnx=pathlib.Path(args.text_onnx), tokenizer=pathlib.Path(args.tokenizer),
                        context_length=args.context_length, pad_id=args.pad_id, attention_mask=args.attention_mask)
    out = write_bundle(pathlib.Path(args.out), name=args.name, description=args.description, encoders=encoders,
                       preprocess=pre, embed_dim=args.embed_dim, logit_scale=args.logit_scale, text=text,
                       force=args.force)
    binary = clip_edge_binary(args.clip_edge)
    images = test_images(pathlib.Path(tempfile.mkdtemp()) / "verify")
    reference = None
    for precision in ["f32"] + sorted(p for p in encoders if p != "f32"):
        emb, err = tract_embed(binary, out, precision, images)
        problem = f"tract cannot run the {precision} image encoder: {err}" if err else None
        if problem and precision == COMPUTE_FORM:
            problem += " (a dynamic-int8 file has no int8-compute form: pass --no-int8-compute)"
        if emb is not None and reference is None:
            reference = emb
        elif emb is not None:
            c = compare(emb, reference)["cosine_mean"]
            if c < QUANT_MIN_COSINE:
                problem = (f"the {precision} image encoder is not the same model as f32 "
                           f"(mean cosine {c:.4f} < {QUANT_MIN_COSINE})")
            else:
                log(f"{precision}: tract vs f32 mean cosine {c:.5f}")
        if problem:
            shutil.rmtree(out)
            raise ExportError(problem)
    add_nnef(binary, out)
    log(f"wrote {out}; tract runs every image encoder and each agrees with f32")


def requantise(args) -> None:
    """Replace a bundle's int8 image encoder by one made from its f32 encoder
    in --int8-mode; the manifest's sha256 is updated, the fingerprint (the f32
    file) is not. The new file must load in tract and stay within
    QUANT_MIN_COSINE of f32, or nothing is changed."""
    bundle = pathlib.Path(args.bundle)
    manifest = bundle / "bundle.toml"
    text = manifest.read_text()
    f32 = bundle / "image_encoder_f32.onnx"
    if not f32.is_file():
        raise ExportError(f"{f32}: the f32 image encoder is missing")
    block = re.compile(r'(\[\[image\.encoder\]\]\nprecision = "int8"\nfile = "([^"]+)"\nsha256 = ")([0-9a-f]{64})(")')
    m = block.search(text)
    if not m:
        raise ExportError(f"{manifest}: no [[image.encoder]] block for int8 in the form export_bundle.py writes")
    target = bundle / m.group(2)
    binary = clip_edge_binary(args.clip_edge)
    with tempfile.TemporaryDirectory(dir=bundle.parent) as tmp_s:
        stage = pathlib.Path(tmp_s) / bundle.name
        shutil.copytree(bundle, stage)
        make_int8(f32, stage / m.group(2), args.int8_mode)
        new_sha = sha256(stage / m.group(2))
        new_text = block.sub(lambda mm: mm.group(1) + new_sha + mm.group(4), text)
        # The int8-compute form runs the same file: weight-only int8 only.
        compute = re.compile(r'\n*\[\[image\.encoder\]\]\nprecision = "int8-compute"\nfile = "[^"]+"\nsha256 = "[0-9a-f]{64}"\n')
        new_text = compute.sub("\n", new_text)
        if args.int8_mode == "weights":
            entry = (f'\n[[image.encoder]]\nprecision = "{COMPUTE_FORM}"\nfile = "{m.group(2)}"\n'
                     f'sha256 = "{new_sha}"\n')
            end = block.search(new_text).end()
            new_text = new_text[:end] + "\n" + entry + new_text[end + 1:]
        (stage / "bundle.toml").write_text(new_text)
        images = test_images(pathlib.Path(tmp_s) / "verify")
        ref, err = tract_embed(binary, stage, "f32", images)
        q, err_q = tract_embed(binary, stage, "int8", images)
        if err or err_q:
            raise ExportError(f"tract cannot run the new int8 encoder: {err or err_q}")
        c = compare(q, ref)
        if c["cosine_mean"] < QUANT_MIN_COSINE:
            raise ExportError(f"the new int8 encoder is too far from f32 (mean cosine {c['cosine_mean']:.4f})")
        if args.int8_mode == "weights":
            qc, err_c = tract_embed(binary, stage, COMPUTE_FORM, images)
            if err_c:
                raise ExportError(f"tract cannot run the new encoder's {COMPUTE_FORM} form: {err_c}")
            cc = compare(qc, ref)
            if cc["cosine_mean"] < QUANT_MIN_COSINE:
                raise ExportError(f"the {COMPUTE_FORM} form is too far from f32 (mean cosine {cc['cosine_mean']:.4f})")
            log(f"{COMPUTE_FORM}: tract vs f32 mean cosine {cc['cosine_mean']:.5f}, min {cc['cosine_min']:.5f}")
        os.replace(stage / m.group(2), target)
        os.replace(stage / "bundle.toml", manifest)
    log(f"{target}: {args.int8_mode} int8, {target.stat().st_size} bytes "
        f"({f32.stat().st_size / target.stat().st_size:.2f}x smaller than f32), tract vs f32 mean cosine "
        f"{c['cosine_mean']:.5f}, min {c['cosine_min']:.5f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)

    oc = sub.add_parser("open-clip", help="export an open_clip model")
    oc.add_argument("--model", required=True, help="open_clip model name, e.g. ViT-B-32, MobileCLIP2-S0")
    oc.add_argument("--pretrained", help="pretrained tag (e.g. openai) or checkpoint path")
    oc.add_argument("--random-init", action="store_true", help="random weights (architecture tests)")
    oc.add_argument("--reduce", action="store_true", help="fewer, thinner layers of the same architecture (fixtures)")
    oc.add_argument("--precisions", default="int8,f16", type=lambda s: [p for p in s.split(",") if p],
                    help="extra image-encoder forms to try beside f32 (default: int8,f16)")
    oc.add_argument("--int8-mode", default="weights", choices=("weights", "dynamic"),
                    help="int8 form: weight-only, folded to f32 at load (default; fast in tract) or "
                         "ONNX Runtime dynamic quantisation")
    oc.add_argument("--name", help="bundle name (default: derived from the model)")
    oc.add_argument("--out", type=pathlib.Path, required=True)
    oc.add_argument("--force", action="store_true", help="replace --out if it exists")
    oc.add_argument("--clip-edge", help="path of the clip-edge binary used for the tract check")

    hf = sub.add_parser("hf", help="export a Hugging Face CLIP folder")
    hf.add_argument("--folder", required=True)
    hf.add_argument("--out", type=pathlib.Path, required=True)
    hf.add_argument("--name", help="bundle name (default: the folder name)")
    hf.add_argument("--precisions", default="int8,f16", type=lambda s: [p for p in s.split(",") if p])
    hf.add_argument("--int8-mode", default="weights", choices=("weights", "dynamic"))
    hf.add_argument("--force", action="store_true")
    hf.add_argument("--clip-edge")

    pk = sub.add_parser("package", help="write a bundle around ONNX towers exported elsewhere")
    pk.add_argument("--image-onnx", required=True, help="f32 image encoder")
    pk.add_argument("--extra", action="append", help="PRECISION=FILE, e.g. int8=enc_int8.onnx (repeatable)")
    pk.add_argument("--no-int8-compute", action="store_true",
                    help="do not list the int8 file's int8-compute form (added by default when --extra int8=... "
                         "is given; it needs weight-only int8)")
    pk.add_argument("--text-onnx")
    pk.add_argument("--tokenizer")
    pk.add_argument("--context-length", type=int, default=77)
    pk.add_argument("--pad-id", type=int, default=0)
    pk.add_argument("--attention-mask", action="store_true")
    pk.add_argument("--size", type=int, required=True)
    pk.add_argument("--resize", default="shortest-center-crop")
    pk.add_argument("--interpolation", default="bicubic")
    pk.add_argument("--mean", type=float, nargs=3, required=True)
    pk.add_argument("--std", type=float, nargs=3, required=True)
    pk.add_argument("--embed-dim", type=int, required=True)
    pk.add_argument("--logit-scale", type=float, required=True)
    pk.add_argument("--name", required=True)
    pk.add_argument("--description", default="")
    pk.add_argument("--out", required=True)
    pk.add_argument("--force", action="store_true")
    pk.add_argument("--clip-edge")

    rq = sub.add_parser("requantise", help="remake a bundle's int8 image encoder from its f32 one")
    rq.add_argument("--bundle", required=True)
    rq.add_argument("--int8-mode", default="weights", choices=("weights", "dynamic"))
    rq.add_argument("--clip-edge")

    args = parser.parse_args()
    try:
        {"open-clip": export_open_clip, "hf": export_hf, "package": package,
         "requantise": requantise}[args.source](args)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

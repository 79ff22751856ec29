"""Verification of an export: synthetic probe images and prompts through
PyTorch, ONNX Runtime and tract (`clip-edge embed`), compared on unit vectors.
f32 must agree within F32_MIN_COSINE / F32_MAX_ABS or the export fails; a
quantised form is kept only if tract runs it and it stays within
QUANT_MIN_COSINE of f32."""

from __future__ import annotations

import pathlib

import numpy as np

from ..binary import ClipEdge
from ..errors import ExportError
from ..log import logger
from ..manifest import COMPUTE_FORM

log = logger("export")

F32_MIN_COSINE = 0.9999     # tract / ONNX Runtime / PyTorch agreement for f32
F32_MAX_ABS = 1e-3          # on unit-normalised embeddings
QUANT_MIN_COSINE = 0.98     # a quantised form must stay this close to f32 (mean over test images)


def probe_images(folder: pathlib.Path, n: int = 6, seed: int = 11) -> list[pathlib.Path]:
    """`n` seeded synthetic images (coloured discs on a flat background, 160-640 px) written into `folder`."""
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



def ort_run(path: pathlib.Path, feeds: dict) -> np.ndarray:
    """The first output of an ONNX file in ONNX Runtime (CPU)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


VERIFY_LABELS = ["cat", "dog", "car", "person", "bicycle", "bird", "package", "tree", "house", "boat"]


def verify_and_select(stage: pathlib.Path, candidates: dict[str, pathlib.Path], torch_image, torch_tensors,
                      text_ref: dict | None, binary: ClipEdge, images: list[pathlib.Path],
                      input_name: str) -> tuple[dict[str, pathlib.Path], dict]:
    """Verify f32 (fatal on failure) and each quantised form (dropped on failure)."""
    report: dict = {"images": len(images), "tolerances": {"f32_min_cosine": F32_MIN_COSINE, "f32_max_abs": F32_MAX_ABS,
                                                          "quantised_min_mean_cosine": QUANT_MIN_COSINE},
                    "forms": {}}
    batch = np.concatenate(torch_tensors)
    ort_f32 = np.concatenate([ort_run(candidates["f32"], {input_name: t}) for t in torch_tensors])
    tract_f32, err = binary.embed_images(stage, "f32", images)
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
        tract_text, err = binary.embed_texts(stage, [f"a photo of a {c}." for c in VERIFY_LABELS])
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
        except Exception as e:
            entry["onnxruntime_error"] = " ".join(str(e).split())[:400]
        tract_q, err = binary.embed_images(stage, precision, images)
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


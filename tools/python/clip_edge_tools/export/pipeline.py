"""One export from a loaded `Source`: ONNX towers, quantised forms, verification
in a staging folder, then the bundle with only the forms that passed."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile
import time

import numpy as np

from ..binary import ClipEdge
from ..errors import ExportError
from ..log import logger
from ..manifest import COMPUTE_FORM
from .bundle import TextSpec, add_nnef, write_bundle
from .onnx_export import export_onnx, wrap
from .quantise import convert_f16_weights, make_int8
from .sources import Source
from .verify import VERIFY_LABELS, ort_run, probe_images, verify_and_select

log = logger("export")


def run_export(src: Source, args) -> None:
    """Exports, verifies and writes `args.out` (args: precisions, int8_mode, name, out, force, clip_edge)."""
    import torch
    from PIL import Image

    started = time.time()
    binary = ClipEdge.locate(args.clip_edge)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = pathlib.Path(tmp_s)
        image_f32 = tmp / "image_encoder_f32.onnx"
        text_onnx = tmp / "text_encoder.onnx"
        ctx = src.context_length
        log(f"exporting image tower ({src.preprocess.size} px) and text tower ({ctx} tokens)")
        size = src.preprocess.size
        export_onnx(wrap(src.image_fn, src.model), torch.zeros(1, 3, size, size), image_f32, "image")
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
        images = probe_images(tmp / "verify")
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
                                         binary, images, "image")
        report.update(source=src.meta, preprocess=dataclasses.asdict(src.preprocess),
                      export_seconds=round(time.time() - started, 1))
        out = write_bundle(args.out, encoders=keep, report=report, force=args.force, **common)
    add_nnef(binary, out)
    log(f"wrote {out} ({', '.join(sorted(keep))})")
    print(json.dumps(report, indent=1))


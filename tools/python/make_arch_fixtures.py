#!/usr/bin/env python3
"""Reduced-size image encoders of the architectures clip-edge verifies, with
ONNX Runtime references, for tests/tests/architectures.rs.

For each architecture, open_clip builds the model with random weights and
fewer, thinner layers (export_bundle.py --reduce), the image tower is
exported exactly as export_bundle.py does, and ONNX Runtime and PyTorch embed
the RGB test images of tests/data/images after open_clip's own preprocessing.
The ViT-B-32 fixture also carries its dynamic int8 form.

Writes tests/data/arch/<slug>/{bundle.toml, image_encoder_*.onnx, reference.json}.
Run: .venv/bin/python tools/python/make_arch_fixtures.py
"""

import json
import pathlib
import tempfile

import numpy as np
import torch
from PIL import Image

import export_bundle as eb

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARCHS = [("vit-b-32", "ViT-B-32", ["int8"]), ("mobileclip2-s0", "MobileCLIP2-S0", []), ("vit-s-16", "ViT-S-16", [])]


def main() -> None:
    images = sorted(p for p in (ROOT / "tests/data/images").glob("*.png") if Image.open(p).mode == "RGB")
    for slug, name, extra in ARCHS:
        model, transform, _ = eb.build_open_clip(name, None, reduce=True)
        pre = eb.preprocess_from_transform(transform)
        out = ROOT / "tests/data/arch" / slug
        with tempfile.TemporaryDirectory() as tmp_s:
            tmp = pathlib.Path(tmp_s)
            f32 = tmp / "image_encoder_f32.onnx"
            eb.export_onnx(eb.ImageTower(model).module, torch.zeros(1, 3, pre.size, pre.size), f32, "image")
            encoders = {"f32": f32}
            if "int8" in extra:
                encoders["int8"] = tmp / "image_encoder_int8.onnx"
                eb.quantise_int8_dynamic(f32, encoders["int8"])
            tensors = [transform(Image.open(p)).unsqueeze(0) for p in images]
            with torch.no_grad():
                torch_out = [model.encode_image(t)[0].numpy() for t in tensors]
            refs = []
            for p, t, tout in zip(images, tensors, torch_out):
                entry = {"file": f"images/{p.name}", "torch": [float(v) for v in tout]}
                for precision, path in encoders.items():
                    entry[f"onnxruntime_{precision}"] = [float(v) for v in eb.ort_run(path, {"image": t.numpy()})[0]]
                refs.append(entry)
            embed_dim = len(torch_out[0])
            report = {"generator": "tools/python/make_arch_fixtures.py", "open_clip_model": name, "reduced": True,
                      "precisions": sorted(encoders), "images": refs}
            eb.write_bundle(out, name=f"{name}-reduced-random", description=f"Test fixture: open_clip {name} "
                            "architecture, reduced depth/width, random weights.", encoders=encoders, preprocess=pre,
                            embed_dim=embed_dim, logit_scale=float(model.logit_scale.exp().detach()), text=None,
                            force=True)
            (out / "reference.json").write_text(json.dumps(report, indent=1) + "\n")
        sizes = {p.name: p.stat().st_size for p in out.glob("*.onnx")}
        print(f"{slug}: {pre.size} px, embed {embed_dim}, {sizes}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reduced-size image encoders of the architectures clip-edge verifies, with
ONNX Runtime references, for tests/tests/architectures.rs.

For each architecture, open_clip builds the model with random weights and
fewer, thinner layers (export_bundle.py --reduce), the image tower is
exported exactly as export_bundle.py does, and ONNX Runtime and PyTorch embed
the RGB test images of tests/data/images after open_clip's own preprocessing.
The ViT-B-32 fixture also carries its dynamic int8 form. Every fixture lists
the int8-compute form of its f32 file (runtime/src/int8/), whose reference is
ONNX Runtime running the same quantised arithmetic (int8_reference.py) on the
layers the runtime reports it computes in int8.

Writes tests/data/arch/<slug>/{bundle.toml, image_encoder_*.onnx, reference.json}.
Run: .venv/bin/python tools/python/make_arch_fixtures.py [--int8-compute-only]
(--int8-compute-only keeps the committed random-weight files and only
(re)computes the int8-compute entry and references).
"""

import argparse
import json
import pathlib
import re
import tempfile

import numpy as np
import torch
from PIL import Image

import export_bundle as eb
import int8_reference

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARCHS = [("vit-b-32", "ViT-B-32", ["int8"]), ("mobileclip2-s0", "MobileCLIP2-S0", []), ("vit-s-16", "ViT-S-16", [])]


def add_int8_compute(out: pathlib.Path, transform, images: list[pathlib.Path], binary: pathlib.Path) -> None:
    """Lists the f32 file's int8-compute form in out/bundle.toml and adds its
    ONNX Runtime reference (the same arithmetic) to out/reference.json."""
    manifest = out / "bundle.toml"
    text = manifest.read_text()
    text = re.sub(r'\n\[\[image\.encoder\]\]\nprecision = "int8-compute"\nfile = "[^"]+"\nsha256 = "[0-9a-f]+"\n', "\n", text)
    f32 = re.search(r'\[\[image\.encoder\]\]\nprecision = "f32"\nfile = "([^"]+)"\nsha256 = "([0-9a-f]+)"\n', text)
    entry = f'[[image.encoder]]\nprecision = "{eb.COMPUTE_FORM}"\nfile = "{f32.group(1)}"\nsha256 = "{f32.group(2)}"\n'
    manifest.write_text(text.rstrip("\n") + "\n\n" + entry)
    layers = int8_reference.layer_report(binary, out, images[0])
    reference = json.loads((out / "reference.json").read_text())
    with tempfile.TemporaryDirectory() as tmp_s:
        emulated = pathlib.Path(tmp_s) / "int8_compute_reference.onnx"
        n = int8_reference.emulate(out / f32.group(1), layers, emulated)
        by_file = {f"images/{p.name}": p for p in images}
        for entry in reference["images"]:
            t = transform(Image.open(by_file[entry["file"]])).unsqueeze(0).numpy()
            entry[f"onnxruntime_{eb.COMPUTE_FORM}"] = [float(v) for v in eb.ort_run(emulated, {"image": t})[0]]
    reference["precisions"] = sorted(set(reference["precisions"]) | {eb.COMPUTE_FORM})
    reference["int8_compute_layers"] = [l["name"] for l in layers if str(l["compute"]).startswith("int8")]
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"{out.name}: int8-compute reference over {n} int8 layers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--int8-compute-only", action="store_true",
                        help="keep the committed fixtures; only (re)compute their int8-compute references")
    parser.add_argument("--clip-edge", help="path of the clip-edge binary (default: build it)")
    args = parser.parse_args()
    binary = eb.clip_edge_binary(args.clip_edge)
    images = sorted(p for p in (ROOT / "tests/data/images").glob("*.png") if Image.open(p).mode == "RGB")
    for slug, name, extra in ARCHS:
        if args.int8_compute_only:
            _, transform, _ = eb.build_open_clip(name, None, reduce=True)
            add_int8_compute(ROOT / "tests/data/arch" / slug, transform, images, binary)
            continue
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
        add_int8_compute(out, transform, images, binary)
        sizes = {p.name: p.stat().st_size for p in out.glob("*.onnx")}
        print(f"{slug}: {pre.size} px, embed {embed_dim}, {sizes}")


if __name__ == "__main__":
    main()

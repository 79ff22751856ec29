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
match (cosine >= 0.9999, max abs <= 1e-3 on unit vectors) or the export fails. Each quantised form is
kept only if tract loads it and its embeddings stay close to f32; otherwise it
is dropped and the exact reason recorded.

Examples:
  tools/python/export_bundle.py open-clip --model ViT-B-32 --random-init --out /tmp/vitb32
  tools/python/export_bundle.py open-clip --model ViT-B-32 --pretrained openai --out models/vit-b-32
  tools/python/export_bundle.py hf --folder ./clip-vit-base-patch32 --out models/hf-clip
  tools/python/export_bundle.py requantise --bundle models/emoji
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

from .. import manifest
from ..binary import ClipEdge
from ..errors import ExportError, exit_code
from ..log import logger
from ..manifest import COMPUTE_FORM, Preprocess
from .bundle import TextSpec, add_nnef, write_bundle
from .pipeline import run_export
from .quantise import make_int8
from .sources import hf_source, open_clip_source
from .verify import QUANT_MIN_COSINE, compare, probe_images

log = logger("export")


def export_open_clip(args) -> None:
    import torch

    src = open_clip_source(args)
    torch.manual_seed(0)
    run_export(src, args)


def export_hf(args) -> None:
    run_export(hf_source(args), args)


def package(args) -> None:
    """Write a bundle around ONNX towers exported elsewhere, then check that tract runs every form."""
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
    binary = ClipEdge.locate(args.clip_edge)
    images = probe_images(pathlib.Path(tempfile.mkdtemp()) / "verify")
    reference = None
    for precision in ["f32"] + sorted(p for p in encoders if p != "f32"):
        emb, err = binary.embed_images(out, precision, images)
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
    in --int8-mode; the manifest's sha256 is updated (and, for weight-only
    int8, its int8-compute entry), the fingerprint (the f32 file) is not. The
    new file must load in tract and stay within QUANT_MIN_COSINE of f32, or
    nothing is changed."""
    bundle = pathlib.Path(args.bundle)
    doc = manifest.load(bundle)
    f32_entry, int8_entry = manifest.encoder(doc, "f32"), manifest.encoder(doc, "int8")
    f32 = bundle / (f32_entry.file if f32_entry else "image_encoder_f32.onnx")
    if f32_entry is None or not f32.is_file():
        raise ExportError(f"{f32}: the f32 image encoder is missing")
    if int8_entry is None:
        raise ExportError(f"{bundle / manifest.MANIFEST_FILE}: no [[image.encoder]] entry for int8")
    target = bundle / int8_entry.file
    binary = ClipEdge.locate(args.clip_edge)
    with tempfile.TemporaryDirectory(dir=bundle.parent) as tmp_s:
        stage = pathlib.Path(tmp_s) / bundle.name
        shutil.copytree(bundle, stage)
        make_int8(f32, stage / int8_entry.file, args.int8_mode)
        manifest.set_encoder(doc, "int8", int8_entry.file, manifest.sha256(stage / int8_entry.file))
        # The int8-compute form runs the same file: weight-only int8 only.
        if args.int8_mode == "weights":
            manifest.set_compute_form(doc, "int8")
        else:
            manifest.remove_encoder(doc, COMPUTE_FORM)
        manifest.save(stage, doc)
        images = probe_images(pathlib.Path(tmp_s) / "verify")
        ref, err = binary.embed_images(stage, "f32", images)
        q, err_q = binary.embed_images(stage, "int8", images)
        if err or err_q:
            raise ExportError(f"tract cannot run the new int8 encoder: {err or err_q}")
        c = compare(q, ref)
        if c["cosine_mean"] < QUANT_MIN_COSINE:
            raise ExportError(f"the new int8 encoder is too far from f32 (mean cosine {c['cosine_mean']:.4f})")
        if args.int8_mode == "weights":
            qc, err_c = binary.embed_images(stage, COMPUTE_FORM, images)
            if err_c:
                raise ExportError(f"tract cannot run the new encoder's {COMPUTE_FORM} form: {err_c}")
            cc = compare(qc, ref)
            if cc["cosine_mean"] < QUANT_MIN_COSINE:
                raise ExportError(f"the {COMPUTE_FORM} form is too far from f32 (mean cosine {cc['cosine_mean']:.4f})")
            log(f"{COMPUTE_FORM}: tract vs f32 mean cosine {cc['cosine_mean']:.5f}, min {cc['cosine_min']:.5f}")
        os.replace(stage / int8_entry.file, target)
        os.replace(stage / manifest.MANIFEST_FILE, bundle / manifest.MANIFEST_FILE)
    log(f"{target}: {args.int8_mode} int8, {target.stat().st_size} bytes "
        f"({f32.stat().st_size / target.stat().st_size:.2f}x smaller than f32), tract vs f32 mean cosine "
        f"{c['cosine_mean']:.5f}, min {c['cosine_min']:.5f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export_bundle.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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

    args = parser.parse_args(argv)
    run = {"open-clip": export_open_clip, "hf": export_hf, "package": package, "requantise": requantise}[args.source]
    return exit_code(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

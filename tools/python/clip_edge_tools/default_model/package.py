"""Packaging of a trained default-model run (`train_default.py --package RUN`):
the towers exported to ONNX (image f32 plus an int8 and an f16-storage form;
the MiniLM text tower as int8), checked in ONNX Runtime and tract, written as
a bundle by export.bundle.write_bundle, with demo sample frames and the demo
prompt store."""

from __future__ import annotations

import pathlib
import shutil
import tempfile

import numpy as np

from ..binary import ClipEdge
from ..data import emoji as emoji_data
from ..errors import DataMissing
from ..log import logger
from ..manifest import COMPUTE_FORM, Preprocess

log = logger("train")


DEMO_CONCEPTS = {"person": "adult", "dog": "dog", "cat": "cat", "car": "automobile", "bicycle": "bicycle",
                 "bird": "bird", "package": "package", "delivery truck": "delivery truck"}
SAMPLE_SEED = 7


def make_samples(folder: pathlib.Path) -> list[pathlib.Path]:
    """Demo frames: each demo label in both open styles and two empty scenes,
    camera-like augmentation with a fixed seed; named LABEL-STYLE.png."""
    import torch

    concepts = {c["name"]: c for c in emoji_data.load_concepts()}
    chosen = [concepts[n] for n in DEMO_CONCEPTS.values()]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, style in enumerate(emoji_data.STYLES):
        icons, have = emoji_data.load_icons(chosen, style)
        aug = emoji_data.Augmenter(seed=SAMPLE_SEED + k, jpeg_fraction=0.0)
        frames = aug(emoji_data.to_tensor(icons))
        for label, f, ok in zip(DEMO_CONCEPTS, frames, have):
            if ok:
                name = f"{label.replace(' ', '_')}-{style}"
                emoji_data.save_frames(f[None], folder, [name])
                written.append(folder / f"{name}.png")
        empty = aug(torch.zeros(1, 4, emoji_data.SIZE, emoji_data.SIZE))
        emoji_data.save_frames(empty, folder, [f"empty_scene-{k + 1}"])
        written.append(folder / f"empty_scene-{k + 1}.png")
    return written


def package(args) -> None:
    """Export the trained run to ONNX and write the bundle (args: package, bundle,
    precisions, text_precision, force, clip_edge)."""
    import torch

    from ..export.bundle import TextSpec, write_bundle
    from ..export.onnx_export import export_onnx
    from ..export.quantise import convert_f16_weights, make_int8, quantise_int8_dynamic
    from ..export.verify import QUANT_MIN_COSINE, ort_run, unit
    from . import towers as dm

    run = pathlib.Path(args.package)
    ckpt_path = run / "image_tower.pt"
    if not ckpt_path.is_file():
        raise DataMissing(f"{ckpt_path}: no trained model; run train_default.py --out {run} first")
    ckpt = torch.load(ckpt_path, weights_only=False)
    net = dm.ImageTower()
    net.load_state_dict(ckpt["model"])
    net.eval()
    text, tok, mini = dm.load_text_tower()
    bundle = pathlib.Path(args.bundle)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = pathlib.Path(tmp_s)
        img_f32 = tmp / "image_f32.onnx"
        export_onnx(net, torch.zeros(1, 3, dm.IMAGE_SIZE, dm.IMAGE_SIZE), img_f32, "image")
        text_f32 = tmp / "text_f32.onnx"
        export_onnx(text, torch.ones(1, dm.CONTEXT_LENGTH, dtype=torch.long), text_f32, "tokens")
        extra = {}
        for precision in args.precisions:
            dst = tmp / f"image_{precision}.onnx"
            if precision == "int8":
                make_int8(img_f32, dst, "weights")
            elif precision == "f16":
                convert_f16_weights(img_f32, dst)
            extra[precision] = dst
            if precision == "int8":
                extra[COMPUTE_FORM] = dst  # the same file, run on tract's int8 kernels
        text_file = text_f32
        if args.text_precision == "int8":
            text_file = tmp / "text_int8.onnx"
            quantise_int8_dynamic(text_f32, text_file, per_channel=True)
        elif args.text_precision == "f16":
            text_file = tmp / "text_f16.onnx"
            convert_f16_weights(text_f32, text_file)
        probe = ["a dog", "a photo of a cat.", "grinning face with big eyes", "an empty room", "package"]
        enc = tok(probe, padding="max_length", truncation=True, max_length=dm.CONTEXT_LENGTH, return_tensors="np")
        ref = np.concatenate([ort_run(text_f32, {"tokens": enc["input_ids"][i:i + 1].astype(np.int64)})
                              for i in range(len(probe))])
        got = np.concatenate([ort_run(text_file, {"tokens": enc["input_ids"][i:i + 1].astype(np.int64)})
                              for i in range(len(probe))])
        cos = float((unit(ref) * unit(got)).sum(-1).min())
        log(f"text encoder {args.text_precision} vs f32 (ONNX Runtime): min cosine {cos:.5f}")
        tokenizer = tmp / "tokenizer.json"
        shutil.copyfile(mini / "tokenizer.json", tokenizer)
        pre = Preprocess(size=dm.IMAGE_SIZE, resize="shortest-center-crop", interpolation="bicubic",
                         mean=dm.MEAN, std=dm.STD)
        description = (f"clip-edge default: {ckpt['params'] / 1e6:.2f} M-parameter CNN image tower "
                       f"({2 * ckpt['macs'] / 1e9:.2f} GFLOPs at {dm.IMAGE_SIZE} px) trained from scratch on "
                       "emoji (Noto, Twemoji) against frozen MiniLM-L6 text embeddings; see MODEL_CARD.md")
        text_spec = TextSpec(onnx=text_file, tokenizer=tokenizer, context_length=dm.CONTEXT_LENGTH, pad_id=0,
                             attention_mask=False)
        common = dict(name="clip-edge-default-emoji-cnn", description=description, preprocess=pre,
                      embed_dim=dm.EMBED_DIM, logit_scale=ckpt["logit_scale"], text=text_spec, force=True,
                      keep=("labels.toml", "MODEL_CARD.md", "README.md", "fewshot_report.json"),
                      prompts="prompts.store")
        if bundle.exists() and not args.force:
            raise DataMissing(f"{bundle}: already exists (use --force to replace it)")
        encoders = {"f32": img_f32, **extra}
        write_bundle(bundle, encoders=encoders, **common)
        samples_tmp = tmp / "samples"
        samples = make_samples(samples_tmp)
        binary = ClipEdge.locate(args.clip_edge)
        reference, _ = binary.embed_images(bundle, "f32", samples)
        if reference is None:
            raise DataMissing(f"tract cannot run the f32 image encoder of {bundle}")
        for precision in list(extra):
            emb, err = binary.embed_images(bundle, precision, samples)
            cos = None if emb is None else float((unit(emb) * unit(reference)).sum(-1).mean())
            if err or cos < QUANT_MIN_COSINE:
                log(f"dropping the {precision} image encoder: {err or f'mean cosine to f32 {cos:.4f}'}")
                encoders.pop(precision, None)
                if precision == "int8":
                    encoders.pop(COMPUTE_FORM, None)
            else:
                log(f"{precision} image encoder: tract runs it, mean cosine to f32 {cos:.5f}")
        if len(encoders) != 1 + len(extra):
            write_bundle(bundle, encoders=encoders, **common)
        # No NNEF copy (`clip-edge bundle nnef`): for this small CNN it starts no
        # faster than the ONNX file (docs/performance.md) and would add 13.7 MB.
        shutil.copyfile(run / "heldout_concepts.txt", bundle / "heldout_concepts.txt")
        shutil.copytree(samples_tmp, bundle / "samples")
        samples = sorted((bundle / "samples").glob("*.png"))
    labels = bundle / "labels.toml"
    if labels.is_file():
        binary.prompts_build(bundle, labels, bundle / "prompts.store", quiet=False)
    else:
        log(f"{labels}: missing, so no prompt store was built")
    log(f"wrote {bundle} ({', '.join(sorted(encoders))}) and {len(samples)} sample frames")
    log("next: tools/python/calibrate_default.py --write (seen/unseen calibration), then eval_default.py")

